"""Loading signing keys, and refusing anvil's public dev keys anywhere but a devnet.

Keys come from an encrypted keystore file (eth-account's format) or from an environment
variable holding a 0x-hex key. A key is never printed, logged or put into an error message:
errors name the *source* of the key (the variable or the file), never its value.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

DEVNET_CHAIN_ID = 31337
# anvil's and hardhat's well-known mnemonic: its keys are public, so they may sign only on 31337.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")


class KeyLoadError(ValueError):
    """A key could not be loaded or may not be used; the message never contains the key."""


@lru_cache(maxsize=1)
def dev_accounts(count: int = 20) -> tuple[LocalAccount, ...]:
    """The first `count` accounts of the dev mnemonic (anvil's funded accounts)."""
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count)
    )


def is_dev_key(account: LocalAccount) -> bool:
    return account.address in {a.address for a in dev_accounts()}


def account_from_hex(value: str, source: str) -> LocalAccount:
    """Parse a 0x-hex private key; `source` names where it came from, for errors."""
    value = value.strip()
    if not _HEX_KEY.match(value):
        raise KeyLoadError(f"{source} is not a private key: expected 64 hex digits (optionally 0x-prefixed)")
    try:
        return Account.from_key(value if value.startswith("0x") else "0x" + value)
    except Exception as exc:  # noqa: BLE001 - eth-account raises several types; none may echo the key
        raise KeyLoadError(f"{source} is not a valid secp256k1 private key ({type(exc).__name__})") from None


def account_from_env(variable: str) -> LocalAccount:
    value = os.environ.get(variable)
    if not value:
        raise KeyLoadError(f"environment variable {variable} is not set")
    return account_from_hex(value, f"environment variable {variable}")


def account_from_keystore(path: Path, password: str) -> LocalAccount:
    try:
        encrypted = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise KeyLoadError(f"keystore {path} cannot be read: {type(exc).__name__}") from None
    try:
        return Account.from_key(Account.decrypt(encrypted, password))
    except ValueError:
        raise KeyLoadError(f"keystore {path}: wrong password or corrupt file") from None


def check_key_allowed(account: LocalAccount, chain_id: int) -> None:
    """Dev keys are public: refuse them on any chain but the local devnet."""
    if chain_id != DEVNET_CHAIN_ID and is_dev_key(account):
        raise KeyLoadError(
            f"refusing a public dev key ({account.address}) on chain id {chain_id}: "
            f"dev keys are allowed only on chain id {DEVNET_CHAIN_ID}"
        )

"""What every `provenant` command group shares: the chain and key options, a session (chain client,
deployment, content store) and loading a signer.

Keys come from an environment variable (--key-env), an encrypted keystore (--keystore, password
in $PROVENANT_KEYSTORE_PASSWORD), or on chain id 31337 only an anvil dev account (--dev-account);
they are never printed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from eth_account.signers.local import LocalAccount

RpcOpt = Annotated[str, typer.Option("--rpc-url", envvar="PROVENANT_RPC_URL", help="JSON-RPC endpoint")]
HomeOpt = Annotated[Path, typer.Option("--home", envvar="PROVENANT_HOME", help="manifests, content store, call log")]
KeyEnvOpt = Annotated[str, typer.Option("--key-env", help="environment variable holding the signing key")]
KeystoreOpt = Annotated[Optional[Path], typer.Option("--keystore", help="encrypted keystore file")]
DevOpt = Annotated[Optional[int], typer.Option("--dev-account", help="anvil dev account index (chain 31337 only)")]
DEFAULT_RPC = "http://127.0.0.1:8545"
DEFAULT_HOME = Path(".provenant")


def store_path(home: Path) -> str:
    """The content store: $PROVENANT_STORE (a folder or a kubo URL), else <home>/store."""
    return os.environ.get("PROVENANT_STORE", str(home / "store"))


def load_signer(client: Any, key_env: str, keystore: Path | None, dev_account: int | None) -> LocalAccount:
    """The signing account from the options, checked against the chain (dev keys only on 31337)."""
    from provenant.chain import keys

    if dev_account is not None:
        if client.chain_id != keys.DEVNET_CHAIN_ID:
            raise keys.KeyLoadError(f"--dev-account is allowed only on chain id {keys.DEVNET_CHAIN_ID}")
        account = keys.dev_accounts(max(10, dev_account + 1))[dev_account]
    elif keystore is not None:
        account = keys.account_from_keystore(keystore, os.environ.get("PROVENANT_KEYSTORE_PASSWORD", ""))
    else:
        account = keys.account_from_env(key_env)
    client.check_signer(account)
    return account


@dataclass
class Session:
    client: object
    home: Path

    @property
    def store(self):  # type: ignore[no-untyped-def]
        from provenant.store import open_store

        return open_store(store_path(self.home))

    @property
    def contracts(self):  # type: ignore[no-untyped-def]
        from provenant.chain.deploy import Contracts

        return Contracts.load(self.client, self.home)  # type: ignore[arg-type]


def open_session(rpc_url: str, home: Path) -> Session:
    from provenant.chain.client import ChainClient

    return Session(client=ChainClient(rpc_url), home=home)


def signer_for(session: Session, key_env: str, keystore: Path | None, dev_account: int | None) -> LocalAccount:
    return load_signer(session.client, key_env, keystore, dev_account)

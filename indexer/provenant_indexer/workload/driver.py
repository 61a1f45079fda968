"""The bench-only BenchDriver contract (compiled with the project's solc-js front) and a fast
voucher signer: what lets bulk.py put 200,000 real project events on a chain in about a minute.

BenchDriver.sol calls the real contracts many times per transaction; the events still come from
the project's contracts. Vouchers are signed here straight from their EIP-712 digest with
coincurve (~0.1 ms) instead of eth_account's typed-data path (~2 ms); `check_voucher_signer`
proves on first use that both give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coincurve
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from provenant.chain.compile import CompileError, compiler_settings
from provenant.paths import build_dir, repo_root
from provenant.payments.vouchers import Voucher, sign_voucher

SOURCE = Path(__file__).resolve().parent / "BenchDriver.sol"
VOUCHER_TYPEHASH = keccak(text="Voucher(address consumer,uint256 modelId,uint256 cumulativeAmount,uint256 deadline)")


@dataclass(frozen=True)
class DriverArtifact:
    abi: list[dict[str, Any]]
    bytecode: str


def compile_driver() -> DriverArtifact:
    """Compile BenchDriver.sol with the settings every project contract uses (cached by hash)."""
    settings = compiler_settings()
    standard = {"language": "Solidity", "sources": {"BenchDriver.sol": {"content": SOURCE.read_text()}},
                "settings": settings}
    key = hashlib.sha256(json.dumps(standard, sort_keys=True).encode()).hexdigest()[:16]
    cache = build_dir() / "artifacts" / f"bench-driver-{key}.json"
    if not cache.exists():
        proc = subprocess.run(["node", str(repo_root() / "scripts" / "solc"), "--standard-json"],
                              input=json.dumps(standard), capture_output=True, text=True, cwd=repo_root(), check=False)
        if proc.returncode != 0:
            raise CompileError(f"solc front failed on BenchDriver.sol: {proc.stderr.strip()[:500]}")
        out = json.loads(proc.stdout)
        errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
        if errors:
            raise CompileError("BenchDriver.sol: " + "; ".join(e.get("formattedMessage", "") for e in errors[:3]))
        data = out["contracts"]["BenchDriver.sol"]["BenchDriver"]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"abi": data["abi"], "bytecode": "0x" + data["evm"]["bytecode"]["object"]}))
    raw = json.loads(cache.read_text())
    return DriverArtifact(raw["abi"], raw["bytecode"])


class VoucherSigner:
    """EIP-712 voucher signatures from the digest: the bytes `sign_voucher` gives (RFC 6979)."""

    def __init__(self, domain_separator: bytes) -> None:
        self.domain_separator = domain_separator
        self._keys: dict[str, coincurve.PrivateKey] = {}

    def sign(self, consumer: LocalAccount, voucher: Voucher) -> bytes:
        key = self._keys.get(consumer.address)
        if key is None:
            key = self._keys[consumer.address] = coincurve.PrivateKey(bytes(consumer.key))
        fields = encode(["bytes32", "address", "uint256", "uint256", "uint256"],
                        [VOUCHER_TYPEHASH, voucher.consumer, voucher.model_id, voucher.cumulative_amount,
                         voucher.deadline])
        digest = keccak(b"\x19\x01" + self.domain_separator + keccak(fields))
        signature = key.sign_recoverable(digest, hasher=None)
        return signature[:64] + bytes([signature[64] + 27])

    def check(self, consumer: LocalAccount, chain_id: int, escrow: str, voucher: Voucher) -> None:
        """Fail loudly if the fast path ever disagrees with the project's signer."""
        mine, theirs = self.sign(consumer, voucher), sign_voucher(consumer, chain_id, escrow, voucher)
        if mine != theirs:
            raise AssertionError(f"fast voucher signature {mine.hex()} != project signer's {theirs.hex()}")

"""Signed provenance receipts: every answer says which model, which lineage, which data.

The receipt is EIP-712 typed data signed by the model's registered serving key, so it
verifies offline against the chain's record of that key. Prompt and output appear only as
salted hashes (the salt travels with the receipt to the consumer, who can prove what was
asked; nobody else learns it); the attribution appears in full and as a hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from provenant.chain.typed_data import receipt_domain, recover_typed, sign_typed
from provenant.datanets.service import canonical_json


def salted_hash(salt: bytes, text: str) -> str:
    return "0x" + keccak(salt + text.encode("utf-8")).hex()


def attribution_hash(top: dict[str, Any]) -> str:
    return "0x" + hashlib.sha256(canonical_json(top)).hexdigest()


@dataclass(frozen=True)
class Receipt:
    call_id: str  # 0x-hex 32 bytes
    model_id: int
    model_name: str
    base_model: str
    adapter_hash: str
    lineage_root: str
    consumer: str
    fee: int
    prompt_hash: str
    output_hash: str
    salt: str
    attribution: dict[str, Any]  # top contributions, contributors, Datanets with shares
    attribution_hash: str
    timestamp: int
    chain_id: int
    verifying_contract: str  # the ModelRegistry
    signer: str = ""
    signature: str = ""

    def message(self) -> dict[str, Any]:
        return {
            "callId": bytes.fromhex(self.call_id[2:]),
            "modelId": self.model_id,
            "adapterHash": bytes.fromhex(self.adapter_hash[2:]),
            "lineageRoot": bytes.fromhex(self.lineage_root[2:]),
            "consumer": self.consumer,
            "fee": self.fee,
            "promptHash": bytes.fromhex(self.prompt_hash[2:]),
            "outputHash": bytes.fromhex(self.output_hash[2:]),
            "attributionHash": bytes.fromhex(self.attribution_hash[2:]),
            "timestamp": self.timestamp,
        }

    def signed_by(self, server: LocalAccount) -> "Receipt":
        domain = receipt_domain(self.chain_id, self.verifying_contract)
        signature = sign_typed(server, domain, "Receipt", self.message())
        return Receipt(**{**asdict(self), "signer": server.address, "signature": "0x" + signature.hex()})

    def recover_signer(self) -> str:
        domain = receipt_domain(self.chain_id, self.verifying_contract)
        return recover_typed(domain, "Receipt", self.message(), bytes.fromhex(self.signature[2:]))

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["fee"] = str(self.fee)
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Receipt":
        return cls(**{**raw, "fee": int(raw["fee"])})


def check_receipt(receipt: Receipt, expected_server: str, lineage_root: str, adapter_hash: str) -> list[str]:
    """Reasons the receipt is not valid against a model's on-chain record (empty: valid)."""
    problems = []
    if attribution_hash(receipt.attribution) != receipt.attribution_hash:
        problems.append("attribution does not match its hash")
    try:
        signer = receipt.recover_signer()
    except Exception:  # noqa: BLE001
        signer = ""
    if signer.lower() != expected_server.lower():
        problems.append(f"signed by {signer or 'nobody'}, not the model's registered server {expected_server}")
    if receipt.lineage_root != lineage_root:
        problems.append("lineage root differs from the registered one")
    if receipt.adapter_hash != adapter_hash:
        problems.append("adapter hash differs from the registered one")
    return problems

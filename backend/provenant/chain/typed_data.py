"""EIP-712 typed data used across the project: vouchers, attestations, receipts.

Each message type is written once here, with the field order the contracts hash, so the
Python signers, the contracts' digest functions and any wallet agree byte for byte (the forge
tests and tests/test_typed_data.py check the digests against the contracts').
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

VOUCHER_TYPES = [
    {"name": "consumer", "type": "address"},
    {"name": "modelId", "type": "uint256"},
    {"name": "cumulativeAmount", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]

ATTESTATION_TYPES = [
    {"name": "modelId", "type": "uint256"},
    {"name": "epoch", "type": "uint64"},
    {"name": "uptoSeq", "type": "uint64"},
    {"name": "feeTotal", "type": "uint256"},
    {"name": "protocolAmount", "type": "uint256"},
    {"name": "ownerAmount", "type": "uint256"},
    {"name": "curatorsTotal", "type": "uint256"},
    {"name": "contributorsTotal", "type": "uint256"},
    {"name": "payoutRoot", "type": "bytes32"},
    {"name": "resultsCid", "type": "string"},
    {"name": "deadline", "type": "uint256"},
]

# A serving receipt: everything a consumer or auditor needs to tie an answer to a model's
# lineage and to the attribution of this one answer. Prompt and output appear only as
# salted hashes; the attribution as the hash of its canonical JSON.
RECEIPT_TYPES = [
    {"name": "callId", "type": "bytes32"},
    {"name": "modelId", "type": "uint256"},
    {"name": "adapterHash", "type": "bytes32"},
    {"name": "lineageRoot", "type": "bytes32"},
    {"name": "consumer", "type": "address"},
    {"name": "fee", "type": "uint256"},
    {"name": "promptHash", "type": "bytes32"},
    {"name": "outputHash", "type": "bytes32"},
    {"name": "attributionHash", "type": "bytes32"},
    {"name": "timestamp", "type": "uint64"},
]


# EIP-2612 permit of the token (OpenZeppelin ERC20Permit).
PERMIT_TYPES = [
    {"name": "owner", "type": "address"},
    {"name": "spender", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint256"},
]


@dataclass(frozen=True)
class Domain:
    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def token_domain(chain_id: int, token: str) -> Domain:
    return Domain("Provenant", "1", chain_id, token)


def escrow_domain(chain_id: int, escrow: str) -> Domain:
    return Domain("Provenant UsageEscrow", "1", chain_id, escrow)


def settlement_domain(chain_id: int, settlement: str) -> Domain:
    return Domain("Provenant AttributionSettlement", "1", chain_id, settlement)


def receipt_domain(chain_id: int, model_registry: str) -> Domain:
    return Domain("Provenant Receipt", "1", chain_id, model_registry)


_TYPES = {
    "Voucher": VOUCHER_TYPES,
    "Attestation": ATTESTATION_TYPES,
    "Receipt": RECEIPT_TYPES,
    "Permit": PERMIT_TYPES,
}


def _full_message(domain: Domain, primary_type: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary_type: _TYPES[primary_type],
        },
        "primaryType": primary_type,
        "domain": domain.as_dict(),
        "message": message,
    }


def typed_digest(domain: Domain, primary_type: str, message: dict[str, Any]) -> bytes:
    """The 32-byte EIP-712 digest, as the contracts' *Digest() view functions return it."""
    signable = encode_typed_data(full_message=_full_message(domain, primary_type, message))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def sign_typed(account: LocalAccount, domain: Domain, primary_type: str, message: dict[str, Any]) -> bytes:
    signable = encode_typed_data(full_message=_full_message(domain, primary_type, message))
    return bytes(account.sign_message(signable).signature)


def recover_typed(domain: Domain, primary_type: str, message: dict[str, Any], signature: bytes) -> str:
    signable = encode_typed_data(full_message=_full_message(domain, primary_type, message))
    return Account.recover_message(signable, signature=signature)

"""The EIP-712 attestation a quorum signs, and the proposal that travels between attributors.

A proposal on the wire is the attestation (every field the contract checks, big integers as
decimal strings) plus the proposer's own signature; the results it commits to travel by CID
through the content store, which checks the bytes against the CID on every read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from eth_account.signers.local import LocalAccount

from provenant.chain.typed_data import Domain, recover_typed, sign_typed

UINTS = ("model_id", "epoch", "upto_seq", "fee_total", "protocol_amount", "owner_amount", "curators_total",
         "contributors_total", "deadline")


@dataclass(frozen=True)
class Attestation:
    model_id: int
    epoch: int
    upto_seq: int
    fee_total: int
    protocol_amount: int
    owner_amount: int
    curators_total: int
    contributors_total: int
    payout_root: str  # 0x-hex 32 bytes
    results_cid: str
    deadline: int

    @classmethod
    def from_document(cls, document: Mapping[str, Any], results_cid: str, deadline: int) -> "Attestation":
        """The attestation that a results document implies (nothing in it is chosen freely but the deadline)."""
        return cls(model_id=int(document["model_id"]), epoch=int(document["epoch"]),
                   upto_seq=int(document["upto_seq"]), fee_total=int(document["fee_total"]),
                   protocol_amount=int(document["protocol_amount"]), owner_amount=int(document["owner_amount"]),
                   curators_total=int(document["curators_total"]),
                   contributors_total=int(document["contributors_total"]),
                   payout_root=str(document["payout_root"]), results_cid=results_cid, deadline=int(deadline))

    def message(self) -> dict[str, Any]:
        """The EIP-712 message, in the contract's field order."""
        return {
            "modelId": self.model_id, "epoch": self.epoch, "uptoSeq": self.upto_seq, "feeTotal": self.fee_total,
            "protocolAmount": self.protocol_amount, "ownerAmount": self.owner_amount,
            "curatorsTotal": self.curators_total, "contributorsTotal": self.contributors_total,
            "payoutRoot": bytes.fromhex(self.payout_root[2:]), "resultsCid": self.results_cid,
            "deadline": self.deadline,
        }

    def as_tuple(self) -> tuple:
        return tuple(self.message().values())

    def sign(self, key: LocalAccount, domain: Domain) -> bytes:
        return sign_typed(key, domain, "Attestation", self.message())

    def recover(self, domain: Domain, signature: bytes) -> str:
        return recover_typed(domain, "Attestation", self.message(), signature)

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        return {k: str(v) if k in UINTS else v for k, v in raw.items()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Attestation":
        return cls(**{k: int(raw[k]) if k in UINTS else str(raw[k]) for k in cls.__dataclass_fields__})

    def first_mismatch(self, other: "Attestation") -> str | None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) != getattr(other, name):
                return f"{name}: proposed {getattr(self, name)!r}, mine {getattr(other, name)!r}"
        return None


@dataclass(frozen=True)
class SignedProposal:
    """What a proposer hands to co-signers: the attestation and its own signature over it."""

    attestation: Attestation
    signer: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"attestation": self.attestation.to_json(), "signer": self.signer,
                "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "SignedProposal":
        return cls(Attestation.from_json(raw["attestation"]), str(raw["signer"]),
                   bytes.fromhex(str(raw["signature"]).removeprefix("0x")))


@dataclass(frozen=True)
class Cosignature:
    signer: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"signed": True, "signer": self.signer, "signature": "0x" + self.signature.hex()}


@dataclass(frozen=True)
class Refusal:
    """A co-signer's no, with where its recomputation first differed."""

    signer: str
    reason: str
    call_id: str | None = None
    account: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"signed": False, "signer": self.signer, "reason": self.reason, "call_id": self.call_id,
                "account": self.account}


def answer_from_json(raw: Mapping[str, Any]) -> Cosignature | Refusal:
    if raw.get("signed"):
        return Cosignature(str(raw["signer"]), bytes.fromhex(str(raw["signature"]).removeprefix("0x")))
    return Refusal(str(raw["signer"]), str(raw["reason"]), raw.get("call_id"), raw.get("account"))

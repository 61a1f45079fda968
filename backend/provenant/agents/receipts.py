"""Signed action receipts: one EIP-712 message per agent action, chained into a DAG.

An action receipt commits to the agent id, a per-agent sequence number, the action kind, hashes
of its input and output, the model-call receipts it used (call ids and their EIP-712 digests),
its parents' receipt hashes, optional signed weights for its model calls, time, the value moved
and earned, and the royalty share of earnings the agent declares for the data beneath it. Its
hash is its EIP-712 digest (domain "Provenant Action", chain id, the AgentRegistry), so a parent
link commits to everything the parent signed: altering any receipt breaks every link above it.

The digest is computed field by field here (arrays hashed as EIP-712 prescribes) because a DAG
of thousands of actions is verified in one go; tests/test_agents_receipts.py checks it against
eth-account's generic `encode_typed_data` byte for byte.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

from Crypto.Hash import keccak as _keccak_mod
from eth_account.signers.local import LocalAccount

from provenant.chain.typed_data import RECEIPT_TYPES, Domain, receipt_domain
from provenant.serving.receipts import Receipt

KINDS = ("tool_call", "model_call", "payment", "result")
PPM = 1_000_000
UINT64_MAX = 2**64 - 1

ACTION_TYPES = [
    {"name": "agentId", "type": "uint256"},
    {"name": "seq", "type": "uint64"},
    {"name": "kind", "type": "string"},
    {"name": "inputHash", "type": "bytes32"},
    {"name": "outputHash", "type": "bytes32"},
    {"name": "modelCallIds", "type": "bytes32[]"},
    {"name": "modelReceiptHashes", "type": "bytes32[]"},
    {"name": "parents", "type": "bytes32[]"},
    {"name": "weightsPpm", "type": "uint32[]"},
    {"name": "timestamp", "type": "uint64"},
    {"name": "valueMoved", "type": "uint256"},
    {"name": "valueEarned", "type": "uint256"},
    {"name": "royaltyPpm", "type": "uint32"},
]


def keccak(data: bytes) -> bytes:
    """keccak-256 straight from pycryptodome (eth-hash's backend here), without eth-utils' wrappers:
    verifying a large DAG hashes tens of thousands of times."""
    return _keccak_mod.new(digest_bits=256, data=data).digest()


def _type_string(name: str, fields: list[dict[str, str]]) -> str:
    return name + "(" + ",".join(f"{f['type']} {f['name']}" for f in fields) + ")"


_ACTION_TYPEHASH = keccak(_type_string("Action", ACTION_TYPES).encode())
_RECEIPT_TYPEHASH = keccak(_type_string("Receipt", RECEIPT_TYPES).encode())
_DOMAIN_TYPEHASH = keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")


class BadActionReceipt(ValueError):
    """An action receipt is malformed (a field out of range, a bad hash, an unknown kind)."""


def action_domain(chain_id: int, agent_registry: str) -> Domain:
    return Domain("Provenant Action", "1", chain_id, agent_registry)


def content_hash(data: bytes | str) -> str:
    """The input/output hash of an action: keccak-256 of its bytes (UTF-8 for text)."""
    return "0x" + keccak(data.encode("utf-8") if isinstance(data, str) else data).hex()


def _b32(value: str, what: str) -> bytes:
    if not (isinstance(value, str) and value.startswith("0x") and len(value) == 66):
        raise BadActionReceipt(f"{what} must be a 0x-prefixed 32-byte hex string, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadActionReceipt(f"{what} is not hex: {value!r}") from None


def _u(value: int, bits: int, what: str) -> bytes:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**bits:
        raise BadActionReceipt(f"{what} must be an integer in [0, 2^{bits}), got {value!r}")
    return value.to_bytes(32, "big")


@lru_cache(maxsize=64)
def _domain_separator(domain: Domain) -> bytes:
    return keccak(_DOMAIN_TYPEHASH + keccak(domain.name.encode()) + keccak(domain.version.encode())
                  + domain.chain_id.to_bytes(32, "big") + bytes(12) + bytes.fromhex(domain.verifying_contract[2:]))


@dataclass(frozen=True)
class ActionReceipt:
    agent_id: int
    seq: int
    kind: str
    input_hash: str
    output_hash: str
    model_call_ids: tuple[str, ...]
    model_receipt_hashes: tuple[str, ...]
    parents: tuple[str, ...]
    weights_ppm: tuple[int, ...]  # empty: the model calls weigh by their fees
    timestamp: int
    value_moved: int  # token wei this action paid out
    value_earned: int  # token wei this action earned
    royalty_ppm: int  # share of value_earned the agent routes back to the data beneath it
    chain_id: int
    verifying_contract: str  # the AgentRegistry
    signer: str = ""
    signature: str = ""
    detail: dict[str, Any] = field(default_factory=dict)  # unsigned notes for people (tool name, model)

    def __post_init__(self) -> None:
        self.check_shape()

    def check_shape(self) -> None:
        """Refuse a receipt no verifier could interpret, before anyone signs or trusts it."""
        if self.kind not in KINDS:
            raise BadActionReceipt(f"action kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if len(self.model_call_ids) != len(self.model_receipt_hashes):
            raise BadActionReceipt("model_call_ids and model_receipt_hashes differ in length")
        if self.weights_ppm and (len(self.weights_ppm) != len(self.model_call_ids) or sum(self.weights_ppm) != PPM):
            raise BadActionReceipt("weights_ppm must give one weight per model call, summing to 1,000,000")
        if self.royalty_ppm > PPM:
            raise BadActionReceipt(f"royalty_ppm {self.royalty_ppm} exceeds 1,000,000")
        if len(set(self.parents)) != len(self.parents):
            raise BadActionReceipt("a parent is listed twice")

    # -- EIP-712 --------------------------------------------------------------------------
    def domain(self) -> Domain:
        return action_domain(self.chain_id, self.verifying_contract)

    def struct_hash(self) -> bytes:
        def arr(items: tuple[str, ...], what: str) -> bytes:
            return keccak(b"".join(_b32(x, what) for x in items))

        return keccak(
            _ACTION_TYPEHASH
            + _u(self.agent_id, 256, "agent_id") + _u(self.seq, 64, "seq") + keccak(self.kind.encode())
            + _b32(self.input_hash, "input_hash") + _b32(self.output_hash, "output_hash")
            + arr(self.model_call_ids, "model call id") + arr(self.model_receipt_hashes, "model receipt hash")
            + arr(self.parents, "parent hash")
            + keccak(b"".join(_u(w, 32, "weight") for w in self.weights_ppm))
            + _u(self.timestamp, 64, "timestamp") + _u(self.value_moved, 256, "value_moved")
            + _u(self.value_earned, 256, "value_earned") + _u(self.royalty_ppm, 32, "royalty_ppm"))

    def digest(self) -> bytes:
        return self._digest

    @cached_property
    def _digest(self) -> bytes:  # fields are frozen, so the digest is computed once
        return keccak(b"\x19\x01" + _domain_separator(self.domain()) + self.struct_hash())

    @property
    def hash(self) -> str:
        """The receipt's identity: its EIP-712 digest (what children list as a parent)."""
        return "0x" + self.digest().hex()

    def message(self) -> dict[str, Any]:
        """The typed-data message, for wallets and for the generic encoder (tests)."""
        return {
            "agentId": self.agent_id, "seq": self.seq, "kind": self.kind,
            "inputHash": bytes.fromhex(self.input_hash[2:]), "outputHash": bytes.fromhex(self.output_hash[2:]),
            "modelCallIds": [bytes.fromhex(x[2:]) for x in self.model_call_ids],
            "modelReceiptHashes": [bytes.fromhex(x[2:]) for x in self.model_receipt_hashes],
            "parents": [bytes.fromhex(x[2:]) for x in self.parents], "weightsPpm": list(self.weights_ppm),
            "timestamp": self.timestamp, "valueMoved": self.value_moved, "valueEarned": self.value_earned,
            "royaltyPpm": self.royalty_ppm,
        }

    def signed_by(self, operator: LocalAccount) -> "ActionReceipt":
        signed = operator.unsafe_sign_hash(self.digest())  # the EIP-712 digest, computed above
        return replace(self, signer=operator.address, signature="0x" + bytes(signed.signature).hex())

    def recover_signer(self) -> str:
        """The address whose key signed this receipt's digest ('' when the signature is unusable)."""
        return recover_digest(self.digest(), self.signature)

    # -- JSON -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        for key in ("model_call_ids", "model_receipt_hashes", "parents", "weights_ppm"):
            raw[key] = list(raw[key])
        raw["value_moved"], raw["value_earned"] = str(self.value_moved), str(self.value_earned)
        raw["hash"] = self.hash  # declared, so an altered copy is named by the hash it claims
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ActionReceipt":
        try:
            data = {k: v for k, v in raw.items() if k != "hash"}
            for key in ("model_call_ids", "model_receipt_hashes", "parents", "weights_ppm"):
                data[key] = tuple(data[key])
            data["value_moved"], data["value_earned"] = int(data["value_moved"]), int(data["value_earned"])
            return cls(**data)
        except (TypeError, KeyError, ValueError) as exc:
            raise BadActionReceipt(f"not an action receipt: {exc}") from None


def model_receipt_digest(receipt: Receipt) -> bytes:
    """A serving receipt's EIP-712 digest (the one its server signed), computed field by field;
    tests/test_agents_receipts.py checks it equals provenant.chain.typed_data.typed_digest."""
    try:
        struct = keccak(
            _RECEIPT_TYPEHASH + _b32(receipt.call_id, "call_id") + _u(receipt.model_id, 256, "model_id")
            + _b32(receipt.adapter_hash, "adapter_hash") + _b32(receipt.lineage_root, "lineage_root")
            + bytes(12) + bytes.fromhex(receipt.consumer[2:]) + _u(receipt.fee, 256, "fee")
            + _b32(receipt.prompt_hash, "prompt_hash") + _b32(receipt.output_hash, "output_hash")
            + _b32(receipt.attribution_hash, "attribution_hash") + _u(receipt.timestamp, 64, "timestamp"))
        domain = receipt_domain(receipt.chain_id, receipt.verifying_contract)
        return keccak(b"\x19\x01" + _domain_separator(domain) + struct)
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadActionReceipt(f"model-call receipt {getattr(receipt, 'call_id', '?')} is malformed: {exc}") from None


def model_receipt_hash(receipt: Receipt) -> str:
    """A serving receipt's identity: its EIP-712 digest under the ModelRegistry's receipt domain."""
    return "0x" + model_receipt_digest(receipt).hex()


_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def recover_digest(digest: bytes, signature: str) -> str:
    """The signer (checksummed) of a 32-byte digest; '' when the signature is unusable.

    libsecp256k1 through coincurve directly: eth-account's generic path spends ~3x longer in
    conversions. Like eth-keys, r and s must lie in [1, n) and v be 27/28 (or 0/1)."""
    from coincurve import PublicKey

    try:
        raw = bytes.fromhex(signature[2:])
        if len(raw) != 65:
            return ""
        r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
        recid = v - 27 if v >= 27 else v
        if not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N and recid in (0, 1)):
            return ""
        point = PublicKey.from_signature_and_message(raw[:64] + bytes([recid]), digest, hasher=None)
        address = keccak(point.format(compressed=False)[1:])[12:]
        return _checksum(address.hex())
    except Exception:  # noqa: BLE001 - any malformed signature means "signed by nobody"
        return ""


@lru_cache(maxsize=4096)
def _checksum(hex_address: str) -> str:
    """EIP-55, cached: a DAG is signed by a handful of keys."""
    digest = keccak(hex_address.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_address))





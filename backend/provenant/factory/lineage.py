"""A model's lineage: the exact contributions (and rows) it was trained on, as a Merkle root.

Leaves are (contribution id, content hash, rows hash) in OpenZeppelin StandardMerkleTree
format, so the root can be checked by `@openzeppelin/merkle-tree` in a browser, by
`MerkleProof` on chain and here. The rows hash covers exactly the rows used (all of them
when unfiltered), so row caps, sampling and held-out splits stay verifiable.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from provenant.datanets.service import canonical_json
from provenant.merkle import StandardMerkleTree

LEAF_TYPES = ["uint256", "bytes32", "bytes32"]
MANIFEST_FORMAT = "provenant.manifest/1"
# Left out of the bytes while empty (or 0), so that a manifest made before the field existed
# re-serialises to its own bytes (and CID).
_OPTIONAL_EMPTY = ("span_index_cid", "span_index_sha256", "parent_id", "trained_by")
TRAINED_HERE = ""  # `trained_by` of a model the Model Factory trained (every manifest before external imports)
TRAINED_EXTERNALLY = "external"  # an adapter trained elsewhere and registered with its declared lineage


@dataclass(frozen=True)
class LineageEntry:
    contribution_id: int
    datanet_id: int
    contributor: str
    cid: str
    content_hash: str  # 0x-hex
    rows_hash: str  # 0x-hex
    row_indices: tuple[int, ...] | None  # None: every row of the file was used

    def leaf(self) -> list[Any]:
        return [self.contribution_id, bytes.fromhex(self.content_hash[2:]), bytes.fromhex(self.rows_hash[2:])]


def lineage_root(entries: Sequence[LineageEntry]) -> str:
    """The 0x-hex Merkle root over the entries' leaves."""
    if not entries:
        raise ValueError("a lineage needs at least one contribution")
    return StandardMerkleTree.of([e.leaf() for e in entries], LEAF_TYPES).root


def sha256_0x(data: bytes) -> str:
    """0x-prefixed sha2-256, the form registered on chain (store.cid.sha256_hex is the bare hex)."""
    return "0x" + hashlib.sha256(data).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """Hash of the training configuration (canonical JSON), registered on chain."""
    return sha256_0x(canonical_json(config))


@dataclass(frozen=True)
class Manifest:
    """What was trained, from what, how, and what came out; stored by CID, linked on chain."""

    model_name: str
    base_model: str
    task: str
    labels: tuple[str, ...]
    datanet_ids: tuple[int, ...]
    training_config: dict[str, Any]
    config_hash: str
    contributions: tuple[LineageEntry, ...]
    lineage_root: str
    adapter_cid: str
    adapter_hash: str
    adapter_config: dict[str, Any]
    index_cid: str
    metrics: dict[str, Any]  # training metrics; "per_datanet": Datanet id -> held-out metrics and row counts
    # The frozen selection: its CID ("cid", stored before training), each contribution's held-out
    # row indices ("held_out") and per-Datanet row counts ("per_datanet"). Empty in older manifests.
    selection: dict[str, Any] = field(default_factory=dict)
    format: str = MANIFEST_FORMAT
    # Causal LMs: the span index over the tokenised training rows (`attribution.lm`), by CID, and the
    # sha256 of its bytes. Empty in classifier manifests and in LM manifests made before span attribution.
    span_index_cid: str = ""
    span_index_sha256: str = ""
    # The model this one is a new version of (its on-chain id; 0: none). Registered on chain too,
    # and `verify model` checks that the two agree and that the parent exists.
    parent_id: int = 0
    # Who trained the adapter: TRAINED_HERE (the Model Factory, from the frozen selection) or
    # TRAINED_EXTERNALLY (elsewhere; the builder declares the contributions it trained on, and
    # nothing here reproduces or vouches for the training itself).
    trained_by: str = TRAINED_HERE

    @property
    def external(self) -> bool:
        return self.trained_by == TRAINED_EXTERNALLY

    def to_bytes(self) -> bytes:
        data = asdict(self)
        for key in _OPTIONAL_EMPTY:
            if not data[key]:
                del data[key]
        return canonical_json(data)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        import json

        raw = json.loads(data)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a Provenant manifest (format {raw.get('format')!r})")
        raw["labels"] = tuple(raw["labels"])
        raw["datanet_ids"] = tuple(raw["datanet_ids"])
        raw["contributions"] = tuple(
            LineageEntry(**{**c, "row_indices": None if c["row_indices"] is None else tuple(c["row_indices"])})
            for c in raw["contributions"]
        )
        return cls(**raw)

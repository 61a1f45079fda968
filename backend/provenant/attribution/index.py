"""Attribution index: projected per-example training gradients at the final adapter, and scoring.

score(query, example) = precondition(P g_query) . (P g_example), where g is the gradient of the loss
at a label w.r.t. the trainable tensors and P the seeded projection (`gradients.Projector`). This is
TracIn / grad-dot at the final checkpoint: positive means a gradient step on that training row
lowers the query's loss at `label`, i.e. the row pushed the model toward that answer.

Determinism: on one machine (same torch build and thread count), the same classifier, examples and
settings give identical index bytes, and the same query gives identical scores. Batched queries
(`attribute_many`) agree with single ones up to float rounding, not bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from provenant.attribution.gradients import Projector, per_example_gradients, precondition
from provenant.factory.train import Example
from provenant.serving.engine import Classifier

INDEX_FORMAT = "provenant-attribution-index/1"
PROJECT_BLOCK = 256  # examples whose gradients are held at once (256 x P float32, ~77 MB for MiniLM r=8)
SCORE_BLOCK = 65536  # index rows cast to float64 at once when scoring


@dataclass(frozen=True)
class IndexSettings:
    projection_dim: int = 1024  # float32 per example: 4 bytes each, <= 16 KB per example
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.projection_dim <= 4096:
            raise ValueError("projection_dim must be in [1, 4096] (at most 16 KB per example)")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")

    def to_dict(self) -> dict:
        return {"projection_dim": self.projection_dim, "seed": self.seed}


class AttributionIndex:
    def __init__(self, gradients: np.ndarray, contribution_ids: np.ndarray, row_indices: np.ndarray,
                 label_ids: np.ndarray, settings: IndexSettings, adapter_sha256: str, layout_sha256: str):
        n = len(contribution_ids)
        if gradients.shape != (n, settings.projection_dim) or len(row_indices) != n or len(label_ids) != n:
            raise ValueError("index arrays disagree in shape")
        self.gradients = np.ascontiguousarray(gradients, dtype=np.float32)  # (N, projection_dim)
        self.contribution_ids = np.ascontiguousarray(contribution_ids, dtype=np.int64)
        self.row_indices = np.ascontiguousarray(row_indices, dtype=np.int64)
        self.label_ids = np.ascontiguousarray(label_ids, dtype=np.int64)  # into the classifier's labels
        self.settings = settings
        self.adapter_sha256 = adapter_sha256  # the adapter these gradients were taken at
        self.layout_sha256 = layout_sha256  # the trainable-tensor layout the projection was drawn for

    def __len__(self) -> int:
        return len(self.contribution_ids)

    @property
    def bytes_per_example(self) -> int:
        return self.settings.projection_dim * 4 + 3 * 8

    def to_bytes(self) -> bytes:
        """Safetensors; deterministic for equal contents. The metadata is ONE key holding sorted JSON:
        safetensors keeps `__metadata__` in a Rust HashMap, so several keys come out in a per-process
        random order."""
        header = {"format": INDEX_FORMAT, "settings": self.settings.to_dict(),
                  "adapter_sha256": self.adapter_sha256, "layout_sha256": self.layout_sha256}
        return safetensors_save({"gradients": self.gradients, "contribution_ids": self.contribution_ids,
                                 "row_indices": self.row_indices, "label_ids": self.label_ids},
                                metadata={"provenant": json.dumps(header, sort_keys=True, separators=(",", ":"))})

    @classmethod
    def from_bytes(cls, data: bytes) -> "AttributionIndex":
        try:
            arrays = safetensors_load(bytes(data))
            metadata = json.loads(_read_metadata(data).get("provenant", "{}"))
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"not an attribution index: {exc}") from exc
        if metadata.get("format") != INDEX_FORMAT:
            raise ValueError(f"unsupported index format {metadata.get('format')!r}")
        try:
            settings = IndexSettings(**metadata["settings"])
            return cls(arrays["gradients"], arrays["contribution_ids"], arrays["row_indices"], arrays["label_ids"],
                       settings, metadata["adapter_sha256"], metadata["layout_sha256"])
        except KeyError as exc:
            raise ValueError(f"attribution index lacks {exc}") from exc


def _read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (8-byte little-endian header length, then JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + header_len]).get("__metadata__", {})


def build_index(classifier: Classifier, examples: Sequence[Example], settings: IndexSettings) -> AttributionIndex:
    """Project the per-example training gradients of `examples` at `classifier`'s adapter."""
    if len(examples) == 0:
        raise ValueError("cannot index zero examples")
    unknown = sorted({ex.label for ex in examples} - set(classifier.labels))
    if unknown:
        raise ValueError(f"examples use labels the classifier does not have: {unknown[:5]}")
    projector = Projector.for_classifier(classifier, settings.projection_dim, settings.seed)
    label_ids = [classifier.label_to_id[ex.label] for ex in examples]
    blocks = []
    for start in range(0, len(examples), PROJECT_BLOCK):
        chunk = examples[start:start + PROJECT_BLOCK]
        grads = per_example_gradients(classifier, [ex.text for ex in chunk], label_ids[start:start + PROJECT_BLOCK])
        blocks.append(projector.project(grads))
    return AttributionIndex(
        gradients=torch.cat(blocks).numpy(),
        contribution_ids=np.array([ex.contribution_id for ex in examples], dtype=np.int64),
        row_indices=np.array([ex.row_index for ex in examples], dtype=np.int64),
        label_ids=np.array(label_ids, dtype=np.int64),
        settings=settings, adapter_sha256=classifier.adapter_sha256, layout_sha256=projector.layout_sha256)


def attribute(classifier: Classifier, index: AttributionIndex, text: str, label: str | None = None) -> np.ndarray:
    """One float64 score per indexed training example for the answer `label` (default: the prediction)."""
    return attribute_many(classifier, index, [text], None if label is None else [label])[0]


def attribute_many(classifier: Classifier, index: AttributionIndex, texts: Sequence[str],
                   labels: Sequence[str] | None = None) -> np.ndarray:
    """(len(texts), len(index)) float64 scores; one projection pass for the whole batch of queries."""
    projector = Projector.for_classifier(classifier, index.settings.projection_dim, index.settings.seed)
    if index.adapter_sha256 != classifier.adapter_sha256 or index.layout_sha256 != projector.layout_sha256:
        raise ValueError("this attribution index was built for a different adapter")
    if labels is None:
        labels = [p.label for p in classifier.predict(texts)]
    if len(labels) != len(texts):
        raise ValueError("texts and labels differ in length")
    unknown = sorted(set(labels) - set(classifier.labels))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown[:5]}; the classifier has {classifier.labels}")
    grads = per_example_gradients(classifier, list(texts), [classifier.label_to_id[lab] for lab in labels])
    queries = precondition(projector.project(grads)).numpy().astype(np.float64)  # (Q, D)
    scores = np.empty((len(texts), len(index)), dtype=np.float64)
    for start in range(0, len(index), SCORE_BLOCK):
        block = index.gradients[start:start + SCORE_BLOCK].astype(np.float64)
        scores[:, start:start + SCORE_BLOCK] = queries @ block.T
    return scores

"""Attribution index: preconditioned projected training gradients at the final adapter (and at earlier
epoch-end snapshots of the run, `snapshots.py`), and scoring.

score(query, row) = sum over snapshots s of (P g_query,s) . v_row,s,
v_row,s = (F_s + lambda I)^-1 P g_row,s * min(1, tau_s / |P g_row,s|)

g is the gradient of the loss at a label w.r.t. the trainable tensors (LoRA + head), P the seeded
projection (`projection.Projector`: a sparse sign map since format /4, Gaussian before), F the
projected Gauss-Newton matrix of the training rows (`curvature`; optionally block-diagonal per
module, P then projecting each LoRA module and the head into its own block of coordinates), tau the
median training-gradient norm (outliers clipped). Positive means up-weighting the row lowers the
query's loss at that label, i.e. the row pushed the model toward that answer. The curvature is folded into v at build time, so a query
costs one gradient pass (an answer's S adapters side by side, `query_gradients.query_gradients_at`),
one projection and one (N x S D) product. Scores then pass
through `duplicates.share_credit`: exact and near-duplicate rows share one row's credit.

Stored per row: v at each of S snapshots (S x D float32; up to 4 by default, the final adapter's
first), self-influence g^T (F + lambda I)^-1 g (float32), the mislabel score
(`curvature.mislabel_suspicion`: neighbour disagreement and self-influence, ranked, float32), contribution id, row index, label id and
duplicate-group head (int64): 4 S D + 40 bytes, 12,232 for a 3-epoch run and 16,296 for a longer one at
the default D = 1,016 (the budget is 16 KB). The earlier snapshots' adapters are stored once per index.

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
from threadpoolctl import ThreadpoolController

from provenant.attribution.curvature import (DEFAULT_CLIP_QUANTILE, DEFAULT_DAMPING_RATIO, fit_preconditioner,
                                             mislabel_suspicion, neighbour_disagreement, training_vectors)
from provenant.attribution.duplicates import (DEFAULT_NEAR_THRESHOLD, POLICIES, duplicate_groups,
                                              share_credit)
from provenant.attribution.gradients import per_example_gradients
from provenant.attribution.projection import SKETCHES, Projector
from provenant.attribution.query_gradients import query_gradients_at
from provenant.attribution.snapshots import MAX_SNAPSHOTS, adapter_digests, earlier_adapters
from provenant.factory.train import Example
from provenant.serving.engine import Classifier

INDEX_FORMAT = "provenant-attribution-index/4"  # /4: the projection sketch is named (sparse by default)
# /3: snapshots (earlier epoch adapters) and their vectors; /2: the final adapter only; both Gaussian
READABLE_FORMATS = (INDEX_FORMAT, "provenant-attribution-index/3", "provenant-attribution-index/2")
LEGACY_FORMAT = "provenant-attribution-index/1"  # plain grad-dot, no groups: still readable
PROJECT_BLOCK = 256  # examples whose gradients are held at once, per snapshot (256 x P float32, ~77 MB for MiniLM r=8)
SCORE_BLOCK = 65536  # index rows scored per matrix product
# "global": one JL projection of the whole gradient, one curvature block (format-2 indexes);
# "module": each LoRA module / the head projected into its own block, block-diagonal curvature;
# "module-projection": the per-module projection (cheap queries), one global curvature block.
CURVATURES = ("global", "module", "module-projection")
# the epoch-end adapters indexed (snapshots.py): every epoch of the Factory's default 3; 4 of a longer run
DEFAULT_SNAPSHOTS = 4
MAX_BYTES_PER_EXAMPLE = 16 * 1024
ROW_METADATA_BYTES = 2 * 4 + 4 * 8  # self-influence and mislabel (float32); ids, row, label, group head (int64)
# The default stays "global": on the benchmark's classification task (bench/attribution/sweep_eval.py,
# 16 half-subset retrains) the per-module variants scored LDS 0.52-0.56 against 0.59 and top-1
# 0.67-0.73 against 0.76-0.80; their gain is speed (the query's projection reads 1/13 of the matrix).
# Scores use one BLAS thread: OpenBLAS's multi-row product gives other bits on 1 and 2 threads (a
# second attributor must recompute them exactly), and its workers spin after a parallel call,
# taking a core from the next query's gradient. Scanning the loaded libraries happens once.
_BLAS = ThreadpoolController()
PER_EXAMPLE_FIELDS = ("gradients", "contribution_ids", "row_indices", "label_ids", "self_influence", "canonical",
                      "mislabel")


class AttributionIndexError(ValueError):
    """An index that is malformed, or used with the wrong model."""


@dataclass(frozen=True)
class IndexSettings:
    # float32 per row and snapshot: 4 snapshots x 1,016 x 4 bytes + 40 = 16,296 bytes <= 16 KB per example
    projection_dim: int = 1016
    seed: int = 0
    # lambda / mean eigenvalue of the projected Gauss-Newton (of each module's block, for "module")
    damping_ratio: float = DEFAULT_DAMPING_RATIO
    clip_quantile: float = DEFAULT_CLIP_QUANTILE  # training-gradient norms clipped at this quantile
    duplicate_threshold: float | None = DEFAULT_NEAR_THRESHOLD  # None: exact duplicates only
    duplicate_words_added: bool = True  # a copy with words added is a near duplicate (see duplicates.py)
    credit_policy: str = "first"  # who in a duplicate group gets its credit (see duplicates.py)
    curvature: str = "global"  # see CURVATURES
    # epoch-end adapters the rows are indexed at, the final one included (`snapshots.py`); each adds
    # projection_dim floats per row
    snapshots: int = DEFAULT_SNAPSHOTS
    projection: str = "sparse"  # the random projection's sketch (projection.SKETCHES)

    def __post_init__(self) -> None:
        problems = [msg for ok, msg in [
            (self.projection_dim >= 1, "projection_dim must be >= 1"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.damping_ratio > 0 and np.isfinite(self.damping_ratio), "damping_ratio must be > 0"),
            (0 < self.clip_quantile <= 1, "clip_quantile must be in (0, 1]"),
            (self.duplicate_threshold is None or 0 < self.duplicate_threshold <= 1,
             "duplicate_threshold must be in (0, 1] or None"),
            (self.credit_policy in POLICIES, f"credit_policy must be one of {POLICIES}"),
            (self.curvature in CURVATURES, f"curvature must be one of {CURVATURES}"),
            (self.projection in SKETCHES, f"projection must be one of {SKETCHES}"),
            (1 <= self.snapshots <= MAX_SNAPSHOTS, f"snapshots must be in [1, {MAX_SNAPSHOTS}]"),
            (4 * self.snapshots * self.projection_dim + ROW_METADATA_BYTES <= MAX_BYTES_PER_EXAMPLE,
             f"4 x snapshots x projection_dim + {ROW_METADATA_BYTES} bytes must be <= {MAX_BYTES_PER_EXAMPLE} "
             "(at most 16 KB per example)"),
        ] if not ok]
        if problems:
            raise ValueError("invalid index settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return {"projection_dim": self.projection_dim, "seed": self.seed, "damping_ratio": self.damping_ratio,
                "clip_quantile": self.clip_quantile,
                "duplicate_threshold": self.duplicate_threshold,
                "duplicate_words_added": self.duplicate_words_added, "credit_policy": self.credit_policy,
                "curvature": self.curvature, "snapshots": self.snapshots, "projection": self.projection}

    @property
    def per_module(self) -> bool:
        """The projection is per module (block-diagonal or not)."""
        return self.curvature in ("module", "module-projection")

    def curvature_blocks(self, projector: Projector) -> tuple[tuple[int, int], ...] | None:
        return projector.block_slices if self.curvature == "module" else None


class AttributionIndex:
    def __init__(self, gradients: np.ndarray, contribution_ids: np.ndarray, row_indices: np.ndarray,
                 label_ids: np.ndarray, settings: IndexSettings, adapter_sha256: str, layout_sha256: str,
                 self_influence: np.ndarray | None = None, canonical: np.ndarray | None = None,
                 mislabel: np.ndarray | None = None, snapshot_adapters: Sequence[bytes] = (),
                 snapshot_epochs: Sequence[int] = ()):
        n = len(contribution_ids)
        # (N, S x D): the preconditioned unit directions at the final adapter, then at each earlier snapshot
        self.gradients = np.ascontiguousarray(gradients, dtype=np.float32)
        self.contribution_ids = np.ascontiguousarray(contribution_ids, dtype=np.int64)
        self.row_indices = np.ascontiguousarray(row_indices, dtype=np.int64)
        self.label_ids = np.ascontiguousarray(label_ids, dtype=np.int64)  # into the classifier's labels (LM: 0)
        self.self_influence = np.ascontiguousarray(
            np.zeros(n) if self_influence is None else self_influence, dtype=np.float32)
        self.canonical = np.ascontiguousarray(np.arange(n) if canonical is None else canonical, dtype=np.int64)
        # mislabel suspicion (curvature.mislabel_suspicion); an index written without it falls back to
        # self-influence
        self.mislabel = np.ascontiguousarray(self.self_influence if mislabel is None else mislabel, dtype=np.float32)
        self.settings = settings
        self.adapter_sha256 = adapter_sha256  # the adapter these gradients were taken at
        self.layout_sha256 = layout_sha256  # the trainable-tensor layout the projection was drawn for
        # the adapters of the earlier snapshots (bytes), and the epochs of all of them, the final's last;
        # both empty for an index at the final adapter only
        self.snapshot_adapters = tuple(bytes(a) for a in snapshot_adapters)
        self.snapshot_epochs = tuple(int(e) for e in snapshot_epochs)
        self._snapshot_classifiers: dict[str, list[Classifier]] = {}  # loaded on first use, per final adapter
        self.check()

    def check(self) -> None:
        """Every per-example array has one entry per row, and the groups point inside the index."""
        n = len(self.contribution_ids)
        if self.gradients.shape != (n, self.dim):
            raise AttributionIndexError(f"index vectors are {self.gradients.shape}, expected ({n}, {self.dim})")
        if self.snapshot_epochs and len(self.snapshot_epochs) != 1 + len(self.snapshot_adapters):
            raise AttributionIndexError(f"index names {len(self.snapshot_epochs)} snapshot epochs for "
                                        f"{1 + len(self.snapshot_adapters)} adapters")
        for name in PER_EXAMPLE_FIELDS[2:]:
            if len(getattr(self, name)) != n:
                raise AttributionIndexError(f"index array {name} has {len(getattr(self, name))} entries for {n} rows")
        if n and (self.canonical.min() < 0 or self.canonical.max() >= n):
            raise AttributionIndexError("index duplicate groups point outside the index")
        if n and not np.array_equal(self.canonical[self.canonical], self.canonical):
            raise AttributionIndexError("index duplicate groups are malformed: a group's head is not its own head")

    def __len__(self) -> int:
        return len(self.contribution_ids)

    @property
    def dim(self) -> int:
        """Floats per row: projection_dim for the final adapter and for each earlier snapshot."""
        return self.settings.projection_dim * (1 + len(self.snapshot_adapters))

    @property
    def bytes_per_example(self) -> int:
        return self.dim * 4 + ROW_METADATA_BYTES

    def snapshot_classifiers(self, classifier: Classifier) -> list[Classifier]:
        """`classifier` (the final adapter) and one classifier per earlier snapshot, loaded once per index."""
        key = classifier.adapter_sha256
        if key not in self._snapshot_classifiers:
            if self.snapshot_adapters and not classifier.config:
                raise AttributionIndexError("this index has snapshots: the classifier must carry its adapter config")
            self._snapshot_classifiers = {key: [classifier] + [Classifier.load(a, classifier.config)
                                                               for a in self.snapshot_adapters]}
        return self._snapshot_classifiers[key]

    def to_bytes(self) -> bytes:
        """Safetensors; deterministic for equal contents. The metadata is ONE key holding sorted JSON:
        safetensors keeps `__metadata__` in a Rust HashMap, so several keys come out in a per-process
        random order."""
        header = {"format": INDEX_FORMAT, "settings": self.settings.to_dict(),
                  "adapter_sha256": self.adapter_sha256, "layout_sha256": self.layout_sha256,
                  "snapshot_epochs": list(self.snapshot_epochs),
                  "snapshot_adapter_sha256": adapter_digests(self.snapshot_adapters)}
        arrays = {name: getattr(self, name) for name in PER_EXAMPLE_FIELDS}
        arrays.update({f"snapshot_adapter_{j}": np.frombuffer(a, dtype=np.uint8)
                       for j, a in enumerate(self.snapshot_adapters)})
        return safetensors_save(arrays,
                                metadata={"provenant": json.dumps(header, sort_keys=True, separators=(",", ":"))})

    @classmethod
    def from_bytes(cls, data: bytes) -> "AttributionIndex":
        try:
            arrays = safetensors_load(bytes(data))
            metadata = json.loads(_read_metadata(data).get("provenant", "{}"))
        except Exception as exc:  # safetensors raises its own error types
            raise AttributionIndexError(f"not an attribution index: {exc}") from exc
        fmt = metadata.get("format")
        if fmt not in (*READABLE_FORMATS, LEGACY_FORMAT):
            raise AttributionIndexError(f"unsupported index format {fmt!r}")
        try:
            if fmt == INDEX_FORMAT and "projection" not in metadata["settings"]:
                raise AttributionIndexError("index settings do not name their projection")
            # indexes written before module blocks existed were one global block; those written
            # before the words-added test grouped without it; those before format /4 are Gaussian
            settings = IndexSettings(**{"curvature": "global", "duplicate_words_added": False, "snapshots": 1,
                                        "projection": "gaussian", **metadata["settings"]})
            if fmt == LEGACY_FORMAT:  # grad-dot vectors; self-influence is |g|^2; no groups
                grads = arrays["gradients"].astype(np.float64)
                return cls(arrays["gradients"], arrays["contribution_ids"], arrays["row_indices"],
                           arrays["label_ids"], settings, metadata["adapter_sha256"], metadata["layout_sha256"],
                           np.einsum("ij,ij->i", grads, grads), None)
            digests = list(metadata.get("snapshot_adapter_sha256", []))
            adapters = [arrays[f"snapshot_adapter_{j}"].tobytes() for j in range(len(digests))]
            if adapter_digests(adapters) != digests:
                raise AttributionIndexError("an index snapshot adapter does not match its sha256")
            return cls(arrays["gradients"], arrays["contribution_ids"], arrays["row_indices"], arrays["label_ids"],
                       settings, metadata["adapter_sha256"], metadata["layout_sha256"], arrays["self_influence"],
                       arrays["canonical"], arrays.get("mislabel"), adapters, metadata.get("snapshot_epochs", []))
        except KeyError as exc:
            raise AttributionIndexError(f"attribution index lacks {exc}") from exc


def _read_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (8-byte little-endian header length, then JSON)."""
    header_len = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + header_len]).get("__metadata__", {})


def _as_float64(projected: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(projected.numpy() if isinstance(projected, torch.Tensor) else projected, dtype=np.float64)


def index_from_projected(projected: torch.Tensor | np.ndarray, *, contribution_ids: Sequence[int],
                         row_indices: Sequence[int], label_ids: Sequence[int], texts: Sequence[str],
                         settings: IndexSettings, adapter_sha256: str, layout_sha256: str,
                         blocks: Sequence[tuple[int, int]] | None = None,
                         snapshot_projected: Sequence[torch.Tensor | np.ndarray] = (),
                         snapshot_adapters: Sequence[bytes] = (), snapshot_epochs: Sequence[int] = ()) -> AttributionIndex:
    """The model-independent half of index building: curvature, training vectors, duplicate groups.
    projected: the rows' projected gradients at the final adapter; snapshot_projected: at each earlier
    snapshot (`snapshot_adapters`, epochs `snapshot_epochs`, the final's last), each preconditioned by
    its own curvature. Self-influence and mislabel scores are the final adapter's.
    blocks: the projector's per-module coordinate ranges (block-diagonal curvature); None: one block."""
    if len(snapshot_projected) != len(snapshot_adapters):
        raise ValueError("one projected gradient matrix per snapshot adapter is required")
    final = _as_float64(projected)
    preconditioner = fit_preconditioner(final, settings.damping_ratio, blocks)
    vectors, self_influence = training_vectors(final, preconditioner, settings.clip_quantile)
    suspicion = mislabel_suspicion(neighbour_disagreement(final, vectors), self_influence)
    parts = [vectors]
    for earlier in map(_as_float64, snapshot_projected):
        parts.append(training_vectors(earlier, fit_preconditioner(earlier, settings.damping_ratio, blocks),
                                      settings.clip_quantile)[0])
    order = list(zip((int(c) for c in contribution_ids), (int(r) for r in row_indices)))
    canonical = duplicate_groups(texts, list(label_ids), order, settings.duplicate_threshold,
                                 settings.duplicate_words_added)
    return AttributionIndex(np.concatenate(parts, axis=1).astype(np.float32), np.asarray(contribution_ids),
                            np.asarray(row_indices), np.asarray(label_ids), settings, adapter_sha256, layout_sha256,
                            self_influence, canonical, suspicion, snapshot_adapters, snapshot_epochs)


def build_index(classifier: Classifier, examples: Sequence[Example], settings: IndexSettings,
                epoch_adapters: Sequence[bytes] = ()) -> AttributionIndex:
    """Project the per-example training gradients of `examples` at `classifier`'s adapter, precondition them.
    epoch_adapters: the adapter after each epoch of the training run (the last is `classifier`'s), from
    which `settings.snapshots` are indexed too (snapshots.py); empty: the final adapter only."""
    if len(examples) == 0:
        raise ValueError("cannot index zero examples")
    unknown = sorted({ex.label for ex in examples} - set(classifier.labels))
    if unknown:
        raise ValueError(f"examples use labels the classifier does not have: {unknown[:5]}")
    projector = Projector.for_classifier(classifier, settings.projection_dim, settings.seed, settings.per_module,
                                         settings.projection)
    label_ids = [classifier.label_to_id[ex.label] for ex in examples]
    epochs, earlier = earlier_adapters(epoch_adapters, classifier.adapter_sha256, settings.snapshots)
    models = [classifier] + [Classifier.load(adapter, classifier.config) for adapter in earlier]
    # One projection pass per block of rows for every snapshot's gradients at once: generating a
    # Gaussian projection (P x D) cost about a third of a block's gradients, so it is not repeated
    # per snapshot (measured on the benchmark's 280 rows: 6.3 s -> see bench/RESULTS.md, session 9).
    per_model: list[list[torch.Tensor]] = [[] for _ in models]
    for start in range(0, len(examples), PROJECT_BLOCK):
        texts = [ex.text for ex in examples[start:start + PROJECT_BLOCK]]
        grads = [per_example_gradients(m, texts, label_ids[start:start + PROJECT_BLOCK]) for m in models]
        for k, projected in enumerate(projector.project(torch.cat(grads)).split(len(texts))):
            per_model[k].append(projected)
    final, *at_snapshots = (torch.cat(parts) for parts in per_model)
    return index_from_projected(
        final, contribution_ids=[ex.contribution_id for ex in examples],
        row_indices=[ex.row_index for ex in examples], label_ids=label_ids, texts=[ex.text for ex in examples],
        settings=settings, adapter_sha256=classifier.adapter_sha256, layout_sha256=projector.layout_sha256,
        blocks=settings.curvature_blocks(projector), snapshot_projected=at_snapshots,
        snapshot_adapters=earlier, snapshot_epochs=epochs)


def score_projected(index: AttributionIndex, queries: np.ndarray, share_duplicates: bool = True) -> np.ndarray:
    """(Q, S x D) projected query gradients (at the final adapter, then at each earlier snapshot, as
    `query_at_snapshots` makes them) -> (Q, N) float64 scores, duplicate credit shared."""
    index.check()
    queries = np.asarray(queries, dtype=np.float64)
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise AttributionIndexError(f"expected (Q, {index.dim}) query gradients, got {queries.shape}")
    # float32 products (the stored precision; ~20x faster than casting the index to float64 at
    # 10,000 rows), widened to float64 for the aggregation that follows.
    scores = np.empty((len(queries), len(index)), dtype=np.float64)
    queries32 = np.ascontiguousarray(queries, dtype=np.float32)
    with _BLAS.limit(limits=1, user_api="blas"):
        for start in range(0, len(index), SCORE_BLOCK):
            scores[:, start:start + SCORE_BLOCK] = queries32 @ index.gradients[start:start + SCORE_BLOCK].T
    return share_credit(scores, index.canonical, index.settings.credit_policy) if share_duplicates else scores


def attribute(classifier: Classifier, index: AttributionIndex, text: str, label: str | None = None,
              share_duplicates: bool = True) -> np.ndarray:
    """One float64 score per indexed training example for the answer `label` (default: the prediction)."""
    return attribute_many(classifier, index, [text], None if label is None else [label], share_duplicates)[0]


def attribute_many(classifier: Classifier, index: AttributionIndex, texts: Sequence[str],
                   labels: Sequence[str] | None = None, share_duplicates: bool = True) -> np.ndarray:
    """(len(texts), len(index)) float64 scores; one projection pass for the whole batch of queries."""
    projector = Projector.for_classifier(classifier, index.settings.projection_dim, index.settings.seed,
                                         index.settings.per_module, index.settings.projection)
    if index.adapter_sha256 != classifier.adapter_sha256 or index.layout_sha256 != projector.layout_sha256:
        raise AttributionIndexError("this attribution index was built for a different adapter")
    if labels is None:
        labels = [p.label for p in classifier.predict(texts)]
    if len(labels) != len(texts):
        raise ValueError("texts and labels differ in length")
    unknown = sorted(set(labels) - set(classifier.labels))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown[:5]}; the classifier has {classifier.labels}")
    label_ids = [classifier.label_to_id[lab] for lab in labels]
    models = index.snapshot_classifiers(classifier)
    if len(texts) == 1:  # one answer: its gradient at every snapshot in one side-by-side pass
        grads = query_gradients_at(models, texts[0], label_ids[0])
    else:
        grads = torch.cat([per_example_gradients(model, list(texts), label_ids) for model in models])
    queries = projector.project(grads).split(len(texts))  # one projection pass for every snapshot
    return score_projected(index, torch.cat(queries, dim=1).numpy(), share_duplicates)


def mislabel_scores(index: AttributionIndex) -> np.ndarray:
    """Per-row suspicion that the row is mislabelled (higher: more suspect), as stored at build time:
    indexes built now store `curvature.mislabel_suspicion` (how strongly the row's nearest training rows
    oppose its label, and its self-influence, by rank), earlier ones the neighbour score alone, and
    the earliest none (they fall back to self-influence). Only the order within one index means anything."""
    return index.mislabel.astype(np.float64)

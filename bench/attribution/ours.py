"""'Ours': engineer A's public engine, called exactly as the product calls it.

Classification: `provenant.attribution.index.build_index` + `attribute_many` (whatever curvature
and options A ships in them). Causal LM: the factory has no LM index yet, so the same recipe is
applied to this benchmark's LoRA gradients: `gradients.Projector` (seeded JL, 1024 dims), then A's
model-independent half `index.index_from_projected` (curvature, duplicate groups, self-influence)
and `index.score_projected` (duplicate credit sharing). Contributor values are sums of these scores.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from bench.attribution.methods import MethodOutput
from bench.attribution.tasks import Row
from provenant.attribution import index as attribution_index
from provenant.attribution.projection import Projector
from provenant.factory.train import Example
from provenant.serving.engine import Classifier

PROJECTION_DIM = attribution_index.IndexSettings().projection_dim  # the product's default
FINAL_ONLY_ARM = "ours, final adapter only"  # the design arm of sessions 1-8: IndexSettings(snapshots=1)


def _curvature():  # type: ignore[no-untyped-def]
    try:
        from provenant.attribution import curvature
    except ImportError:
        return None
    return curvature if hasattr(curvature, "fit_preconditioner") else None


def engine_description(settings: attribution_index.IndexSettings | None = None) -> str:
    parts = ["build_index/attribute_many"]
    if _curvature():
        settings = settings or attribution_index.IndexSettings()
        parts.append(f"curvature preconditioner ({getattr(settings, 'curvature', 'global')}, "
                     f"damping {settings.damping_ratio:g}, {getattr(settings, 'projection', 'gaussian')} projection)")
    if hasattr(attribution_index, "share_credit") or hasattr(attribution_index, "mislabel_scores"):
        parts.append("duplicate credit sharing + stored self-influence")
    return " + ".join(parts)


def design_arm_name(overrides: dict[str, object]) -> str:
    """'ours damping_ratio=3 projection=gaussian': a design arm, named by the settings it changes."""
    return "ours " + " ".join(f"{key}={value}" for key, value in overrides.items())


def ours_classification(classifier: Classifier, train_rows: Sequence[Row], test_rows: Sequence[Row],
                        need_self: bool, epoch_adapters: Sequence[bytes] = (), name: str = "ours",
                        **overrides: object) -> tuple[MethodOutput, attribution_index.AttributionIndex]:
    """The Factory's index: `build_index` at the final adapter and the run's `epoch_adapters` with the
    default `IndexSettings` but for `overrides` (e.g. snapshots=1, damping_ratio=3), then `attribute_many`."""
    examples = [Example(r.text, r.label, 1 + i, 0) for i, r in enumerate(train_rows)]
    settings = replace(attribution_index.IndexSettings(projection_dim=PROJECTION_DIM, seed=0), **overrides)
    started = time.perf_counter()
    index = attribution_index.build_index(classifier, examples, settings, epoch_adapters)
    build = time.perf_counter() - started
    started = time.perf_counter()
    scores = attribution_index.attribute_many(classifier, index, [r.text for r in test_rows],
                                              [r.label for r in test_rows])
    query = (time.perf_counter() - started) / len(test_rows)
    self_scores = None
    if need_self and hasattr(attribution_index, "mislabel_scores"):  # A's engine: stored self-influence
        self_scores = attribution_index.mislabel_scores(index)
    elif need_self:  # older engine: its own score of each training row for its own label
        diag = []
        for start in range(0, len(train_rows), 128):
            chunk = train_rows[start:start + 128]
            block = attribution_index.attribute_many(classifier, index, [r.text for r in chunk], [r.label for r in chunk])
            diag.append(block[np.arange(len(chunk)), start + np.arange(len(chunk))])
        self_scores = np.concatenate(diag)
    stored = float(getattr(index, "bytes_per_example", PROJECTION_DIM * 4))
    kind = ("mislabel_scores of the index (neighbour disagreement and self-influence, by rank)" if hasattr(attribution_index, "mislabel_scores")
            else "self-influence (engine score of a row for its own label)")
    out = MethodOutput(name, scores, self_scores, kind, build, query, stored,
                       [engine_description(settings), f"indexed at epochs {list(index.snapshot_epochs) or 'final only'}"])
    return out, index


def tile_index(index: attribution_index.AttributionIndex, n_rows: int) -> attribution_index.AttributionIndex:
    """A copy of `index` whose per-row arrays are tiled to `n_rows` rows (the cost of a query depends
    on N and the dimension, not on which rows they are)."""
    big = copy.copy(index)
    n = len(index)
    reps = -(-n_rows // n)
    fields = getattr(attribution_index, "PER_EXAMPLE_FIELDS", ("gradients", "contribution_ids", "row_indices", "label_ids"))
    for name in fields:
        value = getattr(index, name)
        if name == "canonical":  # duplicate-group heads are row numbers: each tile points into itself
            tiles = [value + k * n for k in range(reps)]
        else:
            tiles = [value] * reps
        setattr(big, name, np.ascontiguousarray(np.concatenate(tiles)[:n_rows]))
    return big


def latency_at(classifier: Classifier, index: attribution_index.AttributionIndex, queries: Sequence[Row],
               n_rows: int, cache_bytes: int) -> float:
    """Median seconds of one `attribute` call against an index tiled to `n_rows` rows (`tile_index`).
    bench/bench_attribution_latency.py measures the same call with more queries, p90 and a breakdown."""
    from provenant.attribution.projection import set_projection_cache

    big = tile_index(index, n_rows)
    set_projection_cache(cache_bytes)
    try:
        attribution_index.attribute(classifier, big, queries[0].text, queries[0].label)  # warm-up
        times = []
        for row in queries[:7]:
            started = time.perf_counter()
            attribution_index.attribute(classifier, big, row.text, row.label)
            times.append(time.perf_counter() - started)
    finally:
        set_projection_cache(0)
    return float(np.median(times))


def ours_projected(name: str, layout: tuple[tuple[str, int], ...], train_grads: torch.Tensor,
                   test_grads: torch.Tensor, grad_seconds: tuple[float, float], need_self: bool,
                   train_texts: Sequence[str], settings: attribution_index.IndexSettings | None = None,
                   label_ids: Sequence[int] | None = None,
                   snapshot_grads: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
                   snapshot_epochs: Sequence[int] = (),
                   answer_gradients: Callable[[int], torch.Tensor] | None = None) -> MethodOutput:
    """The index recipe on precomputed full gradients: the engine's `Projector` (per-module blocks when
    the settings say so), `index_from_projected` (curvature, duplicate groups, mislabel scores) and
    `score_projected` (duplicate credit sharing). Used for the causal LM and for the classification
    task's design arms (other curvature settings on the same gradients as 'ours').
    snapshot_grads: (train, test) gradients at each earlier snapshot of the run (epochs `snapshot_epochs`,
    the final's last): the query is scored at every snapshot, as the product's queries are.
    answer_gradients(q): test row q's (S, P) gradients at the final adapter and each earlier snapshot,
    taken afresh; when given, the per-answer latency at 10,000 rows is measured (`latency_projected`)."""
    settings = settings or attribution_index.IndexSettings(projection_dim=PROJECTION_DIM, seed=0)
    projector = Projector(layout=layout, dim=settings.projection_dim, seed=settings.seed,
                          per_module=settings.per_module, sketch=settings.projection)
    started = time.perf_counter()
    train = projector.project(train_grads)
    index = attribution_index.index_from_projected(
        train, contribution_ids=list(range(1, len(train) + 1)), row_indices=[0] * len(train),
        label_ids=list(label_ids) if label_ids is not None else [0] * len(train), texts=list(train_texts),
        settings=settings, adapter_sha256="bench", layout_sha256=projector.layout_sha256,
        blocks=settings.curvature_blocks(projector),
        snapshot_projected=[projector.project(g) for g, _ in snapshot_grads],
        snapshot_adapters=[b"bench epoch %d" % e for e in snapshot_epochs[:-1]], snapshot_epochs=snapshot_epochs)
    build = time.perf_counter() - started + grad_seconds[0]
    started = time.perf_counter()
    queries = [projector.project(test_grads)] + [projector.project(g) for _, g in snapshot_grads]
    scores = attribution_index.score_projected(index, torch.cat(queries, dim=1).numpy())
    query = (time.perf_counter() - started + grad_seconds[1]) / len(test_grads)
    self_scores = attribution_index.mislabel_scores(index) if need_self else None
    notes = [f"Projector + index_from_projected/score_projected, curvature {settings.curvature}, "
             f"damping {settings.damping_ratio:g}, {settings.projection} projection, "
             f"indexed at epochs {list(snapshot_epochs) or 'final only'}"]
    if answer_gradients is not None:
        ms = 1000 * latency_projected(index, projector, answer_gradients, 10_000, len(test_grads))
        notes.append(f"per-answer latency at 10,000 training rows: {ms:.1f} ms (median of 7; the answer's "
                     f"gradients at {1 + len(snapshot_grads)} adapter(s), projection cached, scoring)")
    return MethodOutput(name, scores, self_scores, "mislabel_scores of the index", build, query,
                        float(index.bytes_per_example), notes)


def latency_projected(index: attribution_index.AttributionIndex, projector: Projector,
                      answer_gradients: Callable[[int], torch.Tensor], n_rows: int, n_queries: int) -> float:
    """Median seconds for one answer against `index` tiled to `n_rows` (`tile_index`): its gradients at
    every snapshot (`answer_gradients`), one projection (blocks cached, as a server keeps them), scoring."""
    from provenant.attribution.projection import set_projection_cache

    big = tile_index(index, n_rows)
    set_projection_cache(400 << 20)
    try:
        def answer(q: int) -> None:
            attribution_index.score_projected(big, projector.project(answer_gradients(q)).reshape(1, -1).numpy())

        answer(0)  # warm-up
        times = []
        for q in range(min(7, n_queries)):
            started = time.perf_counter()
            answer(q)
            times.append(time.perf_counter() - started)
    finally:
        set_projection_cache(0)
    return float(np.median(times))

"""Per-answer attribution latency at N training rows, new query path against the old one, in one run.

    nice -n 10 env OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_attribution_latency.py

Builds a MiniLM + LoRA (r=8, query/value, max_len 32) classifier with the Factory trainer on
synthetic rows, indexes them with the product's `build_index` and tiles the index to `--rows` rows
(`ours.tile_index`, as the attribution benchmark's `latency_at` does). Then, per query, interleaved
so both arms see the same machine load:
  old: the previous product path: vmapped per-example gradient (`per_example_gradients_vmap`, what
       `attribute` ran before the single-query path) -> `Projector.project` -> `score_projected`;
  new: `index.attribute` exactly as the product calls it;
  breakdown of the new path: query gradient / projection / scoring, timed separately; and, for
  comparison, the gradient alone by the old vmap path and by plain autograd through the model's
  own forward (`query_gradient_plain`: no oneDNN packing).
Wall-clock median, p90 and min over `--queries` queries after warm-up, plus process CPU time
(less sensitive to a shared machine). Also checks the new scores against the old (float tolerance) and
against themselves (bit-identical). Prints a table and a JSON line; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.attribution.ours import tile_index  # noqa: E402
from provenant.attribution import index as attribution_index  # noqa: E402
from provenant.attribution.gradients import per_example_gradients_vmap  # noqa: E402
from provenant.attribution.projection import SKETCHES, Projector, set_projection_cache  # noqa: E402
from provenant.attribution.query_gradients import query_gradient, query_gradient_plain  # noqa: E402
from provenant.factory.synthetic import synthetic_examples  # noqa: E402
from provenant.factory.train import LoraSettings, train_classifier  # noqa: E402
from provenant.serving.engine import Classifier  # noqa: E402


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 2), "p90": round(float(np.percentile(values, 90)), 2),
            "min": round(float(np.min(values)), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="index rows (tiled)")
    parser.add_argument("--queries", type=int, default=30, help="timed queries per arm (after warm-up)")
    parser.add_argument("--train", type=int, default=96, help="distinct training rows (trained on, then tiled)")
    parser.add_argument("--curvature", default="global", choices=attribution_index.CURVATURES)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--projection", default="sparse", choices=SKETCHES, help="the index's projection sketch")
    parser.add_argument("--cache-mb", type=int, default=400,
                        help="Gaussian projection block cache (0: off; the default sparse map needs none)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--blas-threads", type=int, default=0,
                        help="numpy's BLAS threads for the whole run (0: leave as is). After a parallel call "
                             "OpenBLAS's workers spin for a while, taking a core from the next torch op.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads, user_api="blas")

    rows = synthetic_examples(args.train, seed=21)
    adapter = train_classifier(rows, LoraSettings(epochs=1, max_length=32, seed=3))
    classifier = Classifier.load(adapter.adapter_bytes, adapter.config)
    # one adapter (the trainer runs 1 epoch here): the final-adapter query path, old against new
    settings = attribution_index.IndexSettings(projection_dim=args.dim, seed=0, curvature=args.curvature, snapshots=1,
                                               projection=args.projection)
    big = tile_index(attribution_index.build_index(classifier, rows, settings), args.rows)
    projector = Projector.for_classifier(classifier, settings.projection_dim, settings.seed, settings.per_module,
                                         settings.projection)
    queries = synthetic_examples(args.queries + 2, seed=99)

    def old(text: str, label: str) -> np.ndarray:
        grads = per_example_gradients_vmap(classifier, [text], [classifier.label_to_id[label]])
        return attribution_index.score_projected(big, projector.project(grads).numpy())

    def new(text: str, label: str) -> np.ndarray:
        return attribution_index.attribute(classifier, big, text, label)

    wall: dict[str, list[float]] = {k: [] for k in ("old", "new", "gradient", "projection", "scoring",
                                                    "grad_vmap", "grad_plain")}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    worst_rel = 0.0
    set_projection_cache(args.cache_mb << 20)
    try:
        for q, row in enumerate(queries):
            label_id = classifier.label_to_id[row.label]
            out: dict[str, object] = {}
            times: dict[str, tuple[float, float]] = {}

            def breakdown() -> None:  # the new path's three stages, timed one by one
                grad, *times["gradient"] = _timed(lambda: query_gradient(classifier, row.text, label_id))
                projected, *times["projection"] = _timed(lambda: projector.project(grad[None]).numpy())
                out["again"], *times["scoring"] = _timed(lambda: attribution_index.score_projected(big, projected))

            arms: list[tuple[str, Callable[[], object]]] = [
                ("old", lambda: old(row.text, row.label)), ("new", lambda: new(row.text, row.label)),
                ("breakdown", breakdown),
                ("grad_vmap", lambda: per_example_gradients_vmap(classifier, [row.text], [label_id])),
                ("grad_plain", lambda: query_gradient_plain(classifier, row.text, label_id))]
            # Rotate the order per query: an arm that follows a projection (307 MB streamed at dim
            # 1024, global) finds the encoder weights out of cache; every arm gets each position.
            shift = q % len(arms)
            for name, fn in arms[shift:] + arms[:shift]:
                result_value, wall_ms, cpu_ms = _timed(fn)
                out[name] = result_value
                if name != "breakdown":
                    times[name] = (wall_ms, cpu_ms)
            scores_old, scores_new = out["old"], out["new"]
            if not np.array_equal(out["again"][0], scores_new):
                raise SystemExit(f"query {q}: the new path is not bit-identical run to run")
            scale = float(np.abs(scores_old).max()) or 1.0
            worst_rel = max(worst_rel, float(np.abs(scores_new - scores_old[0]).max()) / scale)
            if q < 2:  # warm-up: the first queries fill the projection cache and pack the weights
                continue
            for key, (wall_ms, cpu_ms) in times.items():
                wall[key].append(wall_ms)
                cpu[key].append(cpu_ms)
    finally:
        set_projection_cache(0)

    result = {
        "rows": args.rows, "queries": args.queries, "curvature": args.curvature, "dim": args.dim,
        "cache_mb": args.cache_mb, "torch_threads": torch.get_num_threads(),
        "blas_threads": args.blas_threads or "as is",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "load_average": os.getloadavg(),
        "wall_ms": {k: _stats(v) for k, v in wall.items()}, "cpu_ms": {k: _stats(v) for k, v in cpu.items()},
        "new_over_old_median": round(float(np.median(wall["new"]) / np.median(wall["old"])), 3),
        "new_over_old_cpu_median": round(float(np.median(cpu["new"]) / np.median(cpu["old"])), 3),
        "max_rel_score_diff_new_vs_old": worst_rel,
    }
    print(f"per-answer attribution at {args.rows:,} rows, curvature {args.curvature}, dim {args.dim}, "
          f"cache {args.cache_mb} MB, {result['torch_threads']} torch threads, BLAS threads {result['blas_threads']}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'arm':<12}{'wall median':>12}{'wall p90':>10}{'wall min':>10}{'cpu median':>12}{'cpu p90':>10}"
          f"{'cpu min':>10}  (ms)")
    for key in wall:
        w, c = result["wall_ms"][key], result["cpu_ms"][key]
        print(f"{key:<12}{w['median']:>12.1f}{w['p90']:>10.1f}{w['min']:>10.1f}{c['median']:>12.1f}{c['p90']:>10.1f}"
              f"{c['min']:>10.1f}")
    print(f"new/old median: wall {result['new_over_old_median']:.3f}, cpu {result['new_over_old_cpu_median']:.3f}; "
          f"max |new-old| / max|old| {worst_rel:.2e}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

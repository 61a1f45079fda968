"""Design sweep for the attribution engine (engineer A): which damping and gradient clipping to ship.

One run: train a MiniLM LoRA classifier on synthetic topic rows with a share of flipped labels,
take per-example gradients once, then score held-out queries with every engine variant through
the engine's own code path (`index.index_from_projected` + `index.score_projected`), and measure
the linear datamodeling score (LDS) against real retrains on random half subsets, plus the
mislabel ROC-AUC of the stored self-influence. Nothing is tuned on B's benchmark tasks.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/bench_attribution_design.py --rows 240 --retrains 40 --flip 0.1

Prints a Markdown table; paste it into bench/RESULTS.md with the date, machine and load.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from provenant.attribution.gradients import per_example_gradients  # noqa: E402
from provenant.attribution.index import IndexSettings, index_from_projected, score_projected  # noqa: E402
from provenant.attribution.projection import Projector  # noqa: E402
from provenant.factory.model import encode  # noqa: E402
from provenant.factory.synthetic import synthetic_examples  # noqa: E402
from provenant.factory.train import LoraSettings, fit_classifier  # noqa: E402
from provenant.serving.engine import Classifier  # noqa: E402

LABELS = ("sports", "weather", "finance", "cooking")
VARIANTS = [(d, c) for d in (0.1, 1.0, 3.0, 10.0, 30.0, 100.0) for c in (1.0, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--retrains", type=int, default=40)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = synthetic_examples(args.rows + args.queries, seed=7, labels=LABELS, contributions=8)
    train, test = rows[:args.rows], rows[args.rows:]
    rng = random.Random(3)
    flipped = sorted(rng.sample(range(args.rows), int(args.rows * args.flip)))
    for i in flipped:
        train[i] = replace(train[i], label=rng.choice([lab for lab in LABELS if lab != train[i].label]))
    settings = LoraSettings(epochs=2, max_length=32, seed=1)

    started = time.perf_counter()
    adapter, _ = fit_classifier(train, settings)
    train_seconds = time.perf_counter() - started
    classifier = Classifier.load(adapter.adapter_bytes, adapter.config)
    ids = classifier.label_to_id
    started = time.perf_counter()
    grads = per_example_gradients(classifier, [e.text for e in train], [ids[e.label] for e in train])
    projector = Projector.for_classifier(classifier, args.dim, 0)
    projected = projector.project(grads).numpy()
    grad_seconds = time.perf_counter() - started
    queries = projector.project(per_example_gradients(classifier, [e.text for e in test], [ids[e.label] for e in test])).numpy()

    masks, losses = [], []
    tokens, mask = encode(classifier.base.tokenizer, [e.text for e in test], 32)
    targets = torch.tensor([ids[e.label] for e in test])
    for r in range(args.retrains):
        keep = np.random.RandomState(100 + r).rand(args.rows) < 0.5
        _, model = fit_classifier([train[i] for i in np.flatnonzero(keep)], settings)
        with torch.no_grad():
            losses.append(F.cross_entropy(model(tokens, mask), targets, reduction="none").numpy())
        masks.append(keep)
    masks_f, losses_a = np.array(masks, dtype=np.float64), np.array(losses)

    def lds(scores: np.ndarray) -> float:
        predicted = masks_f @ scores.T  # (retrains, queries): sum of the kept rows' scores
        return float(np.nanmean([spearmanr(predicted[:, q], -losses_a[:, q])[0] for q in range(len(test))]))

    truth = np.zeros(args.rows)
    truth[flipped] = 1
    print(f"rows {args.rows}, flipped {len(flipped)}, queries {len(test)}, retrains {args.retrains}, D {args.dim}, "
          f"threads {args.threads}; training {train_seconds:.1f} s, train gradients + projection {grad_seconds:.1f} s\n")
    print("| variant | LDS | mislabel AUC (self-influence) |\n| --- | --- | --- |")
    print(f"| grad-dot (projected, no curvature, no clipping) | {lds(queries.astype(np.float64) @ projected.T.astype(np.float64)):.3f} "
          f"| {roc_auc_score(truth, (projected.astype(np.float64) ** 2).sum(1)) if flipped else float('nan'):.3f} |")
    texts = [f"row {i}" for i in range(args.rows)]  # distinct: duplicate sharing plays no part here
    for damping, clip in VARIANTS:
        index = index_from_projected(projected, contribution_ids=[1] * args.rows, row_indices=list(range(args.rows)),
                                     label_ids=[0] * args.rows, texts=texts,
                                     settings=IndexSettings(args.dim, 0, snapshots=1, damping_ratio=damping,
                                                           clip_quantile=clip,
                                                           curvature="global"),  # this sweep: one block
                                     adapter_sha256="-", layout_sha256="-")
        auc = roc_auc_score(truth, index.self_influence) if flipped else float("nan")
        print(f"| damping {damping:g} x mean eigenvalue, clip at quantile {clip:g} | "
              f"{lds(score_projected(index, queries)):.3f} | {auc:.3f} |")


if __name__ == "__main__":
    main()

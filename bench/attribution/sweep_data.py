"""Collect a tuning set for attribution design sweeps (not part of the benchmark's scoring).

    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python -m bench.attribution.sweep_data --seed 1 --out /tmp/attr_sweep

On a task instance drawn with a different seed from the benchmark's (seed 0), so nothing is tuned on
the benchmark's own rows: trains the full model, stores full (unprojected) per-example gradients of
the training and test rows, per-row training losses, then leave-one-contributor-out and random-half
retrain test losses, saved incrementally (a rerun resumes). Every retrain takes the full model's
optimizer steps per epoch, as the benchmark's do (`harness.matched_batch_size`); a directory
collected before session 14 holds retrains at the settings' batch size instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.attribution import cls_model  # noqa: E402
from bench.attribution.cls_backend import ClsBackend, ClsConfig  # noqa: E402
from bench.attribution.tasks import CONTRIBUTORS, classification_task  # noqa: E402
from provenant.attribution.gradients import per_example_gradients  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rows-per-skill", type=int, default=40)
    parser.add_argument("--retrains", type=int, default=30)
    parser.add_argument("--out", default="/tmp/attr_sweep")
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = classification_task(rows_per_skill=args.rows_per_skill, bulk_rows=3 * args.rows_per_skill,
                               test_per_skill=20, seed=args.seed)
    backend = ClsBackend(task, ClsConfig())
    base = out / f"cls_seed{args.seed}"
    if not Path(f"{base}_grads.npz").exists():
        full = backend.train(np.arange(len(task.train)))
        clf = full.model.classifier
        started = time.perf_counter()
        train = per_example_gradients(clf, [r.text for r in task.train], [clf.label_to_id[r.label] for r in task.train])
        grad_s = time.perf_counter() - started
        test = per_example_gradients(clf, [r.text for r in task.test], [clf.label_to_id[r.label] for r in task.test])
        train_losses = cls_model.per_example_losses(clf, task.train)
        np.savez(f"{base}_grads.npz", train=train.numpy(), test=test.numpy(), train_losses=train_losses,
                 test_losses=full.test_losses, test_correct=full.test_correct, train_seconds=full.seconds,
                 grad_seconds=grad_s, groups=np.array([[s, e] for _, s, e in cls_model.layer_groups(clf)]),
                 group_names=np.array([n for n, _, _ in cls_model.layer_groups(clf)]),
                 contributors=np.array([r.contributor for r in task.train]),
                 flipped=np.array([r.flipped for r in task.train]),
                 test_owners=np.array([r.contributor for r in task.test]),
                 texts=np.array([r.text for r in task.train]), labels=np.array([r.label for r in task.train]))
        print(f"full model {full.seconds:.1f}s, grads {grad_s:.1f}s", flush=True)
    rng = np.random.default_rng(args.seed + 7)
    jobs = [(f"loo_{c}", np.array([r.contributor != c for r in task.train])) for c in CONTRIBUTORS]
    jobs += [(f"half_{s}", rng.random(len(task.train)) < 0.5) for s in range(args.retrains)]
    for name, mask in jobs:
        path = Path(f"{base}_{name}.npz")
        if path.exists():
            continue
        trained = backend.train(np.flatnonzero(mask), 0, len(task.train))
        np.savez(path, mask=mask, test_losses=trained.test_losses)
        print(f"{name}: {trained.seconds:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

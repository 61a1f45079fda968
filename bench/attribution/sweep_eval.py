"""Evaluate curvature / self-influence variants on a tuning set collected by `sweep_data` (numpy only).

    .venv/bin/python -m bench.attribution.sweep_eval /tmp/attr_sweep/cls_seed1

Per arm: LDS, LOO Spearman, top-1 contributor accuracy under both per-answer credit rules
(`aggregate.RULES`: "signed" sums a contributor's row scores, "supporting" their positive parts) and
the mislabel AUC of the arm's stored score; then row-normalisation variants and mislabel-score
combinations. Choose on a tuning seed (1, 2), confirm once on the benchmark's (0).
"""

from __future__ import annotations

import glob
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from bench.attribution import metrics  # noqa: E402
from bench.attribution.tasks import CONTRIBUTORS, SKILL_OWNER  # noqa: E402
from provenant.attribution.curvature import (fit_preconditioner, neighbour_disagreement,  # noqa: E402
                                             training_vectors)
from provenant.attribution.duplicates import duplicate_groups, share_credit  # noqa: E402


def gaussian(rows: int, dim: int, seed: int) -> np.ndarray:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)).numpy().astype(np.float64)


def precond(train: np.ndarray, ratio: float) -> np.ndarray:
    f = train.T @ train / len(train)
    lam = ratio * np.trace(f) / f.shape[0]
    return np.linalg.inv(f + lam * np.eye(f.shape[0]))


def main(base: str) -> None:
    d = np.load(f"{base}_grads.npz")
    train, test = d["train"].astype(np.float64), d["test"].astype(np.float64)
    groups = [tuple(g) for g in d["groups"]]
    contributors, flipped = list(d["contributors"]), d["flipped"]
    # collected before the flipped labels moved to negation: carol owned event order (SKILL_OWNER)
    owners = list(d["test_owners"]) if "test_owners" in d else [SKILL_OWNER[s] for s in d["test_skills"]]
    texts = list(d["texts"])
    halves = sorted(glob.glob(f"{base}_half_*.npz"))
    subsets = [np.load(h)["mask"] for h in halves]
    losses = np.stack([np.load(h)["test_losses"] for h in halves]) if halves else None
    loo = {c: float(np.load(f"{base}_loo_{c}.npz")["test_losses"].mean() - d["test_losses"].mean())
           for c in CONTRIBUTORS if Path(f"{base}_loo_{c}.npz").exists()}
    answered = d["test_correct"]
    if "labels" in d:
        labels = list(d["labels"])
    else:  # collected before labels were saved: regenerate the task (deterministic in its seed)
        from bench.attribution.tasks import classification_task
        seed = int(base.rsplit("seed", 1)[1])
        task = classification_task(rows_per_skill=len(train) // 8, bulk_rows=3 * (len(train) // 8), test_per_skill=20,
                                   seed=seed, flipped_skill="order")
        assert [r.text for r in task.train] == texts, "regenerated task differs from the collected one"
        labels = [r.label for r in task.train]
    canonical = duplicate_groups(texts, labels, [(1 + i, 0) for i in range(len(texts))], 0.8)
    print(f"N={len(train)} P={train.shape[1]} Q={len(test)} halves={len(halves)} loo={len(loo)} groups={len(groups)}")

    def report(name: str, scores: np.ndarray, self_scores: np.ndarray) -> None:
        scores = share_credit(scores, canonical, "first")
        values = metrics.contributor_values(scores, contributors, CONTRIBUTORS)
        lds = metrics.lds(scores, subsets, losses) if halves else float("nan")
        sp = metrics.loo_spearman(values, loo) if len(loo) == 6 else float("nan")
        top1 = metrics.top1_accuracy(scores, contributors, owners, answered, "signed")
        top1_sup = metrics.top1_accuracy(scores, contributors, owners, answered, "supporting")
        auc = roc_auc_score(flipped, self_scores)
        print(f"{name:48s} LDS {lds:.3f}  LOO {sp:.3f}  top1 signed {top1:.3f} supporting {top1_sup:.3f}  "
              f"AUC {auc:.3f}", flush=True)

    def clip(g: np.ndarray, q: float = 0.5) -> np.ndarray:
        n = np.linalg.norm(g, axis=1)
        return np.minimum(1.0, np.quantile(n, q) / np.maximum(n, 1e-30))

    def arm(name: str, pt: np.ndarray, pq: np.ndarray, ratio: float, blocks=None) -> None:  # type: ignore[no-untyped-def]
        pre = fit_preconditioner(pt, ratio, blocks)
        vectors, _ = training_vectors(pt, pre)
        report(name, pq @ vectors.T, neighbour_disagreement(pt, vectors))

    D = 1024
    R = gaussian(train.shape[1], D, 1) / np.sqrt(D)
    pt, pq = train @ R, test @ R
    for ratio in (10, 30, 100):
        arm(f"global projection, global curvature {ratio}", pt, pq, ratio)
        # row normalisation variants (the curvature and the query unchanged)
        pre = fit_preconditioner(pt, ratio)
        solved = pre.apply(pt)
        self_influence = np.einsum("ij,ij->i", solved, pt)
        for q in (0.25, 0.05):
            report(f"  clip at the {q} quantile of norms", pq @ training_vectors(pt, pre, q)[0].T, self_influence)
        report("  RelatIF: / sqrt(self-influence)", pq @ (solved / np.sqrt(self_influence)[:, None]).T, self_influence)
        unit = pt / np.linalg.norm(pt, axis=1, keepdims=True)
        report("  unit-normalised rows, curvature of unit rows", pq @ fit_preconditioner(unit, ratio).apply(unit).T,
               self_influence)
    dims = [D // len(groups) + (1 if k < D % len(groups) else 0) for k in range(len(groups))]
    edges = np.concatenate([[0], np.cumsum(dims)])
    blocks = [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]
    bt = np.zeros((len(train), D))
    bq = np.zeros((len(test), D))
    for k, (s, e) in enumerate(groups):
        Rk = gaussian(e - s, dims[k], 100 + k) / np.sqrt(dims[k])
        bt[:, blocks[k][0]:blocks[k][1]] = train[:, s:e] @ Rk
        bq[:, blocks[k][0]:blocks[k][1]] = test[:, s:e] @ Rk
    for ratio in (10, 30, 100):
        arm(f"module projection, global curvature {ratio}", bt, bq, ratio)
    for ratio in (3, 10):
        arm(f"module projection, module curvature {ratio}", bt, bq, ratio, blocks)
    report("training loss (AUC only)", pq @ pt.T, d["train_losses"])
    mislabel_arms(train, flipped, d["train_losses"])


def mislabel_arms(train: np.ndarray, flipped: np.ndarray, losses: np.ndarray) -> None:
    """Mislabel ROC-AUC of neighbour-disagreement variants over three projections (6 flipped rows:
    one row moving ~3 places moves AUC by ~0.002, so differences under ~0.01 are noise)."""
    def rank(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x, kind="stable"), kind="stable") / len(x)

    rows: dict[str, list[float]] = {}
    for seed in (1, 2, 3):
        pt = train @ (gaussian(train.shape[1], 1024, seed) / np.sqrt(1024))
        vectors, self_influence = training_vectors(pt, fit_preconditioner(pt, 30.0))
        for k in (10, 20):
            nd = neighbour_disagreement(pt, vectors, k)
            # the other direction: the row's influence on the same neighbours (|cosine| neighbours)
            unit = pt / np.linalg.norm(pt, axis=1, keepdims=True)
            close = np.abs(unit @ unit.T)
            np.fill_diagonal(close, -1.0)
            nearest = np.argsort(-close, axis=1, kind="stable")[:, :k]
            own = np.abs(np.einsum("ij,ij->i", pt, vectors))
            hurt = -np.einsum("ikd,id->ik", pt[nearest], vectors).sum(axis=1) / own
            for name, x in (("neighbours' influence on the row", nd),
                            ("+ the row's on its neighbours (rank mean)", rank(nd) + rank(hurt)),
                            ("+ training loss (rank mean)", rank(nd) + rank(losses)),
                            ("+ self-influence (rank mean)", rank(nd) + rank(self_influence))):
                rows.setdefault(f"{name}, k={k}", []).append(float(roc_auc_score(flipped, x)))
        rows.setdefault("self-influence", []).append(float(roc_auc_score(flipped, self_influence)))
        rows.setdefault("training loss", []).append(float(roc_auc_score(flipped, losses)))
    for name, values in rows.items():
        print(f"mislabel AUC {name:44s} " + " ".join(f"{v:.3f}" for v in values) + f"  mean {np.mean(values):.3f}")

if __name__ == "__main__":
    main(sys.argv[1])

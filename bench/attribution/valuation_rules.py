"""Model-level valuation rules against the leave-one-out truth, offline, from `bench_attribution.py --dump`.

    .venv/bin/python -m bench.attribution.valuation_rules /tmp/bench/d1-classification.npz ...

Each dump holds every method's scores (test rows x trained rows), the trained rows' contributors, the
held-out gains' baseline (a uniform guess) and every leave-one-out retrain's per-test-row losses. For
each file and method this prints the LOO Spearman (wallets / data owners) of contributor values under
each rule below, then the mean over the files. Used in session 15 to choose the product's rule
(`valuation.gain_weighted`): decided on tuning draws 1-4, checked on draw 0 (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr

from bench.attribution.tasks import CONTRIBUTORS, SYBIL, SYBIL_VICTIM

OWNERS = [c for c in CONTRIBUTORS if c != SYBIL]


def _normalised(scores: np.ndarray) -> np.ndarray:
    total = np.abs(scores).sum(axis=1, keepdims=True)
    return scores / np.where(total > 0, total, 1.0)


# per held-out row q: scores s_q (N,), gain g_q over the baseline -> each trained row's value
RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "summed": lambda s, g: s.sum(axis=0),
    "|gain|": lambda s, g: (np.abs(g)[:, None] * _normalised(s)).sum(axis=0),
    "gain where positive": lambda s, g: (np.maximum(g, 0)[:, None] * _normalised(s)).sum(axis=0),
    "signed gain": lambda s, g: (g[:, None] * _normalised(s)).sum(axis=0),
    "unit per row": lambda s, g: _normalised(s).sum(axis=0),
    "supporting": lambda s, g: np.maximum(s, 0).sum(axis=0),
}


def _spearman(a: list[float], b: list[float]) -> float:
    rho = spearmanr(a, b).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def evaluate(path: str) -> tuple[dict[str, float], float, dict[tuple[str, str], tuple[float, float]]]:
    """(wallet truth, the truth's two-seed agreement, {(method, rule): (wallet rho, owner rho)})."""
    z = np.load(path)
    full = z["loss_full"]  # (seeds, Q)
    per_seed = {c: (z[f"loss_{c}"] - full).mean(axis=1) for c in CONTRIBUTORS}
    truth = {c: float(d.mean()) for c, d in per_seed.items()}
    owner_truth = {c: truth[c] for c in OWNERS}
    owner_truth[SYBIL_VICTIM] = float((z["loss_owner"] - full).mean())
    agreement = float(np.mean([_spearman([per_seed[c][a] for c in CONTRIBUTORS], [per_seed[c][b] for c in CONTRIBUTORS])
                               for a, b in itertools.combinations(range(full.shape[0]), 2)]))
    gains, owners = z["baseline"] - full[0], z["train_contributors"]
    out = {}
    for key in (k for k in z.files if k.startswith("scores_")):
        for rule, value in RULES.items():
            per_row = value(z[key], gains)
            wallets = {c: float(per_row[owners == c].sum()) for c in CONTRIBUTORS}
            by_owner = {c: wallets[c] for c in OWNERS}
            by_owner[SYBIL_VICTIM] += wallets[SYBIL]
            out[(key[len("scores_"):], rule)] = (
                _spearman([wallets[c] for c in CONTRIBUTORS], [truth[c] for c in CONTRIBUTORS]),
                _spearman([by_owner[c] for c in OWNERS], [owner_truth[c] for c in OWNERS]))
    return truth, agreement, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dumps", nargs="+", help="PREFIX-classification.npz files from bench_attribution.py --dump")
    args = parser.parse_args(argv)
    results = []
    for path in args.dumps:
        truth, agreement, out = evaluate(path)
        results.append(out)
        print(f"{path}: truth " + " ".join(f"{c} {v:+.3f}" for c, v in truth.items()) +
              f"; two seeds agree at {agreement:.2f}")
        for method in dict.fromkeys(m for m, _ in out):
            print(f"  {method:>15}: " + "  ".join(f"{r} {w:+.2f}/{o:+.2f}" for (m, r), (w, o) in out.items() if m == method))
    print(f"mean over {len(results)} file(s), wallets/owners:")
    for method in dict.fromkeys(m for m, _ in results[0]):
        print(f"  {method:>15}: " + "  ".join(
            f"{r} {np.mean([res[(method, r)][0] for res in results]):+.2f}/"
            f"{np.mean([res[(method, r)][1] for res in results]):+.2f}" for r in RULES))


if __name__ == "__main__":
    main()

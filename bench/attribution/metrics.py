"""Quality metrics against ground truth that is known by construction or measured by retraining.

Conventions: scores[q, i] > 0 means training row i helped test row q. A contributor's value is
the sum of its rows' scores over the test set (its attributed effect on test loss); its share is
its positive value over the sum of positive values (the product's payout rule).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from bench.attribution.tasks import SYBIL, SYBIL_VICTIM
from provenant.attribution.valuation import gain_weighted


def mislabel_auc(self_scores: np.ndarray | None, flipped: Sequence[bool]) -> float:
    if self_scores is None:
        return float("nan")
    return float(roc_auc_score(np.asarray(flipped, dtype=bool), np.asarray(self_scores, dtype=np.float64)))


def _per_contributor(per_row: np.ndarray, train_contributors: Sequence[str],
                     contributors: Sequence[str]) -> dict[str, float]:
    owner = np.asarray(train_contributors)
    return {c: float(per_row[owner == c].sum()) for c in contributors}


def contributor_values(scores: np.ndarray, train_contributors: Sequence[str],
                       contributors: Sequence[str]) -> dict[str, float]:
    return _per_contributor(scores.sum(axis=0), train_contributors, contributors)


def gain_weighted_values(scores: np.ndarray, gains: np.ndarray, train_contributors: Sequence[str],
                         contributors: Sequence[str]) -> dict[str, float]:
    """Contributor values by the product's model-level rule (`valuation.gain_weighted`): each test row's
    scores normalised to sum to one in absolute value and weighted by its gain where positive, the row's
    loss reduction over a model that learned nothing from the data. Sums of the rows' parts over the test set."""
    return _per_contributor(gain_weighted(scores, gains), train_contributors, contributors)


def shares(values: Mapping[str, float]) -> dict[str, float]:
    positive = {k: max(v, 0.0) for k, v in values.items()}
    total = sum(positive.values())
    return {k: (v / total if total > 0 else 0.0) for k, v in positive.items()}


def owner_values(values: Mapping[str, float]) -> dict[str, float]:
    """Contributor values with the Sybil's (verbatim copies) added to its victim's: per data owner."""
    out = {k: v for k, v in values.items() if k != SYBIL}
    out[SYBIL_VICTIM] = out.get(SYBIL_VICTIM, 0.0) + values.get(SYBIL, 0.0)
    return out


def loo_spearman(values: Mapping[str, float], loo_delta: Mapping[str, float]) -> float:
    """Spearman between attributed value and the true test-loss increase when the contributor is removed."""
    keys = sorted(loo_delta)
    rho = spearmanr([values[k] for k in keys], [loo_delta[k] for k in keys]).statistic
    return float(rho) if np.isfinite(rho) else 0.0


def top1_accuracy(scores: np.ndarray, train_contributors: Sequence[str], test_owners: Sequence[str],
                  answered: np.ndarray, rule: str = "signed") -> float:
    """Share of answered test rows whose highest-scoring contributor is the row's owner (the contributor
    who teaches its skill). The Sybil's
    rows are verbatim copies of bob's, so for bob's skill either wallet counts as right.
    rule: how rows' scores make a contributor's, as in `provenant.attribution.aggregate`: "signed"
    sums them, "supporting" sums their positive parts (the product's per-answer rule)."""
    if rule not in ("signed", "supporting"):
        raise ValueError(f"unknown rule {rule!r}")
    owners = np.asarray(train_contributors)
    names = sorted(set(train_contributors))
    rows = np.maximum(scores, 0.0) if rule == "supporting" else scores
    per_contributor = np.stack([rows[:, owners == c].sum(axis=1) for c in names], axis=1)
    best = [names[j] for j in per_contributor.argmax(axis=1)]
    right = []
    for q in np.flatnonzero(answered):
        allowed = {test_owners[q]}
        if SYBIL_VICTIM in allowed:
            allowed.add(SYBIL)
        right.append(best[q] in allowed)
    return float(np.mean(right)) if right else float("nan")


def lds(scores: np.ndarray, subsets: Sequence[np.ndarray], subset_losses: np.ndarray) -> float:
    """Linear datamodeling score: per test row, Spearman over subsets between the summed scores of
    the rows in the subset and the (negated) test loss of the model retrained on it; then the mean.
    subsets: boolean masks (S, N); subset_losses: (S, Q)."""
    masks = np.stack(subsets).astype(np.float64)  # (S, N)
    predicted = masks @ scores.T  # (S, Q): predicted loss reduction
    rhos = []
    for q in range(scores.shape[0]):
        rho = spearmanr(predicted[:, q], -subset_losses[:, q]).statistic
        rhos.append(rho if np.isfinite(rho) else 0.0)
    return float(np.mean(rhos))


def retrain_agreement(subset_losses: np.ndarray) -> tuple[float, float, float]:
    """How far the LDS's truth is from noise-free, from retrains of each subset with K >= 2 seeds.
    subset_losses: (S, K, Q). Returns, each a mean over test rows:
    - the Spearman over subsets between two seeds' test losses (mean over seed pairs; a row's
      negative agreement counts as 0): r;
    - the LDS an exact predictor of the expected loss would reach against one seed's losses, sqrt(r);
    - the same against the K seeds' mean, sqrt(K r / (1 + (K - 1) r)) (Spearman-Brown).
    Both ceilings treat the seed noise as independent of the subset; they are estimates, not bounds."""
    losses = np.asarray(subset_losses, dtype=np.float64)
    if losses.ndim != 3 or losses.shape[1] < 2:
        raise ValueError(f"need (subsets, seeds >= 2, test rows) losses, got shape {losses.shape}")
    k = losses.shape[1]
    agreement, one, mean = [], [], []
    for q in range(losses.shape[2]):
        pairs = [spearmanr(losses[:, a, q], losses[:, b, q]).statistic for a in range(k) for b in range(a + 1, k)]
        r = max(float(np.mean([p if np.isfinite(p) else 0.0 for p in pairs])), 0.0)
        agreement.append(r)
        one.append(np.sqrt(r))
        mean.append(_reachable(r, k))
    return float(np.mean(agreement)), float(np.mean(one)), float(np.mean(mean))


def loo_agreement(per_seed: Mapping[str, Sequence[float]]) -> tuple[float, float]:
    """How far leave-one-out's truth is from noise-free, from each training seed's test-loss changes.
    per_seed: contributor -> its change under each of K >= 2 seeds. Returns the mean Spearman between
    two seeds' rankings of the contributors (r), and the Spearman an exact predictor of the expected
    change would reach against the K seeds' mean, sqrt(K r / (1 + (K - 1) r)) (Spearman-Brown; 0 when
    r <= 0). An estimate over a handful of contributors, not a bound."""
    keys = sorted(per_seed)
    table = np.array([per_seed[k] for k in keys], dtype=np.float64)  # (contributors, K)
    k = table.shape[1]
    if k < 2:
        raise ValueError(f"need each contributor's change under >= 2 seeds, got {k}")
    pairs = [spearmanr(table[:, a], table[:, b]).statistic for a in range(k) for b in range(a + 1, k)]
    r = float(np.mean([p if np.isfinite(p) else 0.0 for p in pairs]))
    return r, _reachable(r, k)


def _reachable(r: float, k: int) -> float:
    """The Spearman an exact predictor would reach against the mean of k noisy truths that agree
    pairwise at r: sqrt of the Spearman-Brown reliability k r / (1 + (k - 1) r); 0 when r <= 0."""
    return float(np.sqrt(k * r / (1 + (k - 1) * r))) if r > 0 else 0.0


def payout_shares(scores: np.ndarray, train_contributors: Sequence[str], contributors: Sequence[str],
                  answered: np.ndarray, rule: str) -> dict[str, float]:
    """Each contributor's mean per-answer share over the answered test rows: how settlement pays a
    fee per call (each answer's shares of its credit's positive part, under `rule`)."""
    owners = np.asarray(train_contributors)
    rows = np.maximum(scores, 0.0) if rule == "supporting" else scores
    credit = np.maximum(np.stack([rows[:, owners == c].sum(axis=1) for c in contributors], axis=1), 0.0)[answered]
    totals = credit.sum(axis=1, keepdims=True)
    per_answer = np.divide(credit, totals, out=np.zeros_like(credit), where=totals > 0)
    mean = per_answer.mean(axis=0) if len(per_answer) else np.zeros(len(contributors))
    return {c: float(v) for c, v in zip(contributors, mean)}


def mean_shares(shares_per_run: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each contributor's mean share over several runs (training seeds): an expected payout."""
    names = sorted({k for s in shares_per_run for k in s})
    return {k: float(np.mean([s.get(k, 0.0) for s in shares_per_run])) for k in names}


def sybil_gain(shares_with: Mapping[str, float], shares_without: Mapping[str, float]) -> float:
    """(victim + Sybil share with the copy) / (victim share when the data is submitted once) - 1;
    nothing paid in either world is no gain, something paid only with the copy an infinite one."""
    once = shares_without.get(SYBIL_VICTIM, 0.0)
    twice = shares_with.get(SYBIL_VICTIM, 0.0) + shares_with.get(SYBIL, 0.0)
    if once <= 0:
        return 0.0 if twice <= 0 else float("inf")
    return float(twice / once - 1.0)

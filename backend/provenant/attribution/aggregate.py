"""From per-example influence scores to shares of contributions, contributors and Datanets.

Scores are signed (positive: the example pushed the model toward this answer). A
contribution's score is the sum of its examples' scores; shares are taken of the positive
part only and quantised to integer parts per million, rounding down, so every later
integer amount (fees, payouts) follows from them deterministically by a public rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

PPM = 1_000_000


@dataclass(frozen=True)
class Share:
    key: str  # contribution id, contributor address or Datanet id, as text
    score: float
    ppm: int  # share of the positive part, parts per million, rounded down


@dataclass(frozen=True)
class Attribution:
    contributions: tuple[Share, ...]  # every contribution, sorted by share then key
    contributors: tuple[Share, ...]
    datanets: tuple[Share, ...]

    def top(self, k: int = 5) -> dict[str, list[dict[str, object]]]:
        def rows(shares: tuple[Share, ...]) -> list[dict[str, object]]:
            return [{"id": s.key, "score": round(s.score, 9), "share_ppm": s.ppm} for s in shares[:k] if s.ppm > 0]

        return {"contributions": rows(self.contributions), "contributors": rows(self.contributors),
                "datanets": rows(self.datanets)}

    def contribution_ppm(self) -> dict[int, int]:
        return {int(s.key): s.ppm for s in self.contributions}


@dataclass(frozen=True)
class ContributionMeta:
    contributor: str
    datanet_id: int


def _shares(scores: Mapping[str, float]) -> tuple[Share, ...]:
    positive = {k: max(v, 0.0) for k, v in scores.items()}
    total = sum(positive.values())
    shares = [
        Share(key=k, score=float(scores[k]), ppm=int(positive[k] * PPM // total) if total > 0 else 0)
        for k in scores
    ]
    return tuple(sorted(shares, key=lambda s: (-s.ppm, -s.score, s.key)))


def aggregate(
    example_scores: np.ndarray,
    example_contributions: np.ndarray,
    meta: Mapping[int, ContributionMeta],
) -> Attribution:
    """Sum example scores per contribution, then per contributor and per Datanet."""
    if example_scores.shape != example_contributions.shape:
        raise ValueError("one score per training example is required")
    per_contribution: dict[int, float] = defaultdict(float)
    # Summation order is fixed (example order), so the result is bit-identical run to run.
    for score, contribution_id in zip(example_scores.tolist(), example_contributions.tolist()):
        per_contribution[int(contribution_id)] += float(score)
    per_contributor: dict[str, float] = defaultdict(float)
    per_datanet: dict[str, float] = defaultdict(float)
    for contribution_id in sorted(per_contribution):
        info = meta[contribution_id]
        per_contributor[info.contributor] += per_contribution[contribution_id]
        per_datanet[str(info.datanet_id)] += per_contribution[contribution_id]
    return Attribution(
        contributions=_shares({str(k): v for k, v in sorted(per_contribution.items())}),
        contributors=_shares(dict(sorted(per_contributor.items()))),
        datanets=_shares(dict(sorted(per_datanet.items()))),
    )


def mean_shares(attributions: Sequence[Attribution], weights: Sequence[int]) -> dict[str, dict[str, float]]:
    """Fee-weighted average share per contributor and per Datanet (for reports)."""
    totals: dict[str, dict[str, float]] = {"contributors": defaultdict(float), "datanets": defaultdict(float)}
    weight_sum = sum(weights) or 1
    for attribution, weight in zip(attributions, weights):
        for s in attribution.contributors:
            totals["contributors"][s.key] += s.ppm / PPM * weight / weight_sum
        for s in attribution.datanets:
            totals["datanets"][s.key] += s.ppm / PPM * weight / weight_sum
    return {k: dict(v) for k, v in totals.items()}

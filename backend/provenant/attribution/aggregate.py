"""From per-example influence scores to shares of contributions, contributors and Datanets.

Scores are signed (positive: the example pushed the model toward this answer). How a
contribution's score is formed from its examples' scores is the credit rule:

- "supporting" (per-answer attribution, the default): the sum of the POSITIVE parts of its
  examples' scores, i.e. of the rows that pushed the model toward this answer. Why: a skill is
  learnt from rows of both labels ("X before Y" -> true, "Y before X" -> false); in the
  first-order influence of a row on one answer, the skill's rows of the other label share the
  query's features with the opposite sign and score negative, so a signed sum cancels the very
  contributor who taught the skill, and noise from unrelated contributors wins. On the attribution
  benchmark's tuning task (seed 1, bench/attribution/sweep_eval.py) this rule took top-1
  contributor accuracy from 0.85 to 1.00 with no change to the per-row scores (0.80 -> 0.93 when
  confirmed once on the benchmark's own rows). Volume buys little more than under a signed sum:
  duplicate groups already share one row's credit (`duplicates.share_credit`), a redundant bulk's
  preconditioned scores are ~0 (mean positive part 0.001 against 0.12 for an off-skill row), and an
  off-skill row's mean signed score is already 0.6 of its mean positive part; a skill owner's
  supporting rows outweighed 84-170 off-skill rows' positive parts on every answer.
- "signed": the plain sum. Model-level valuation uses it (`valuation.py`): there a negative
  total is information (data that made held-out loss worse).

Shares are taken of the positive part only and quantised to integer parts per million, rounding
down, so every later integer amount (fees, payouts) follows from them deterministically by a
public rule.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

PPM = 1_000_000
RULES = ("supporting", "signed")
ANSWER_RULE = "supporting"  # per-answer credit rule (see the module docstring)


def row_credit(example_scores: np.ndarray, rule: str = ANSWER_RULE) -> np.ndarray:
    """Each example's credit under `rule` (RULES): its positive part ("supporting") or itself ("signed").
    Receipts (`aggregate`) and settlement's published call scores (`settlement.scores`) both call this,
    so an answer's receipt and the epoch that pays it credit the same rows."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scores = np.asarray(example_scores, dtype=np.float64)
    return scores if rule == "signed" else np.maximum(scores, 0.0)


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


def _shares(scores: Mapping[str, float], credit: Mapping[str, float]) -> tuple[Share, ...]:
    """Shares of the positive part of `credit`; each Share keeps its signed net `score`."""
    positive = {k: max(credit[k], 0.0) for k in scores}
    total = sum(positive.values())
    # a sole positive key gets exactly PPM: x * PPM // x can round to PPM - 1 in floats (0.15 + 0.3)
    shares = [
        Share(key=k, score=float(scores[k]),
              ppm=0 if total <= 0 else PPM if positive[k] == total else int(positive[k] * PPM // total))
        for k in scores
    ]
    return tuple(sorted(shares, key=lambda s: (-s.ppm, -s.score, s.key)))


def aggregate(
    example_scores: np.ndarray,
    example_contributions: np.ndarray,
    meta: Mapping[int, ContributionMeta],
    rule: str = ANSWER_RULE,
) -> Attribution:
    """Sum example scores per contribution under `rule` (RULES), then per contributor and per Datanet."""
    if example_scores.shape != example_contributions.shape:
        raise ValueError("one score per training example is required")
    credited = row_credit(example_scores, rule)  # checks the rule
    # Summation order is fixed (example order, then sorted keys), so the result is bit-identical
    # run to run. Each key's score is its signed sum; shares are taken of its credit under `rule`.
    signed = _sum_by(example_scores, example_contributions)
    credit = signed if rule == "signed" else _sum_by(credited, example_contributions)

    def roll_up(per_contribution: dict[int, float], key_of: Callable[[int], str]) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for contribution_id in sorted(per_contribution):
            totals[key_of(contribution_id)] += per_contribution[contribution_id]
        return dict(sorted(totals.items()))

    def shares(key_of: Callable[[int], str]) -> tuple[Share, ...]:
        return _shares(roll_up(signed, key_of), roll_up(credit, key_of))

    return Attribution(
        contributions=shares(str),
        contributors=shares(lambda c: meta[c].contributor),
        datanets=shares(lambda c: str(meta[c].datanet_id)),
    )


def _sum_by(example_scores: np.ndarray, example_contributions: np.ndarray) -> dict[int, float]:
    totals: dict[int, float] = defaultdict(float)
    for score, contribution_id in zip(np.asarray(example_scores, dtype=np.float64).tolist(),
                                      example_contributions.tolist()):
        totals[int(contribution_id)] += float(score)
    return dict(totals)


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

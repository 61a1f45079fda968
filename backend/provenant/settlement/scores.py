"""Per-call attribution scores: computing them, quantising them, and comparing two machines' scores.

Scores are floats and differ across machines in the last bits (BLAS kernels, thread counts, the
batch a query was scored in), so co-signers never demand bit-identical scores. The rules:

* **Published scores.** For each call the results carry every contribution's *positive* score:
  the sum of the positive parts of its training examples' scores, the per-answer rule receipts use
  (`attribution.aggregate.ANSWER_RULE`, "supporting"); contributions with none are left out,
  as IEEE doubles written with Python's shortest round-trip repr, so every reader gets the exact
  same doubles back.
* **Quantisation (public, exact).** ppm_k = floor(10^6 * s_k / sum_j s_j), evaluated in exact
  rational arithmetic on those doubles (every double is an integer over a power of two). No
  float rounding is involved, so any language with big integers gets the same ppm.
* **Tolerance (co-signing).** A co-signer recomputes the scores from the call log and accepts
  the proposer's when, for every contribution k of every call,
      |max(s_k, 0) - max(s'_k, 0)| <= RTOL * max(sum_j max(s_j, 0), sum_j max(s'_j, 0)) + ATOL,
  i.e. no contribution's positive score moves by more than RTOL of the call's positive mass.
  RTOL = 1e-4 bounds what a proposer can shift to about 100 ppm of a call's value per
  contribution; the differences measured here (batched vs single queries, 1 vs 2 threads) are
  below 1e-6, float32 kernel differences across CPUs are of the order 1e-6..1e-5. TF32 or
  half-precision scoring would exceed it: attributors score in float32 with TF32 off.

Causal-LM models are scored by the method their receipts use (`ServedModel.attribute_completions`):
gradient influence combined with span credit, or the lineage prior for LMs without an index. Their
per-contribution score is the combined share in ppm, as an exact integer-valued double, so the
quantisation above reproduces the receipt's shares (up to the floor of a renormalisation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from provenant.attribution.aggregate import ANSWER_RULE, row_credit

PPM = 1_000_000
RTOL = 1e-4
ATOL = 1e-12
SCORE_BATCH = 64  # queries scored per projection pass


def _exact(value: float) -> tuple[int, int]:
    """A finite double as numerator / power-of-two denominator, exactly."""
    if not math.isfinite(value):
        raise ValueError(f"score {value!r} is not finite")
    return value.as_integer_ratio()


def quantise(scores: Mapping[int, float]) -> dict[int, int]:
    """The public rule: parts per million of each positive score, floored exactly."""
    positive = {k: _exact(float(v)) for k, v in scores.items() if v > 0}
    if not positive:
        return {}
    denominator = max(d for _, d in positive.values())  # all powers of two: the largest is a common one
    numerators = {k: n * (denominator // d) for k, (n, d) in positive.items()}
    total = sum(numerators.values())
    return {k: PPM * numerators[k] // total for k in sorted(numerators)}


@dataclass(frozen=True)
class ScoreDifference:
    contribution_id: int
    theirs: float
    mine: float
    allowed: float

    def describe(self) -> str:
        return (f"contribution {self.contribution_id}: proposer's score {self.theirs!r}, recomputed "
                f"{self.mine!r}, allowed difference {self.allowed:.3g}")


def compare_scores(theirs: Mapping[int, float], mine: Mapping[int, float], rtol: float = RTOL,
                   atol: float = ATOL) -> ScoreDifference | None:
    """The first contribution whose positive score differs beyond the tolerance, or None."""
    pos_theirs = {k: max(float(v), 0.0) for k, v in theirs.items()}
    pos_mine = {k: max(float(v), 0.0) for k, v in mine.items()}
    if not all(math.isfinite(v) for v in [*pos_theirs.values(), *pos_mine.values()]):
        return ScoreDifference(-1, math.nan, math.nan, 0.0)
    allowed = rtol * max(sum(pos_theirs.values()), sum(pos_mine.values())) + atol
    for k in sorted(set(pos_theirs) | set(pos_mine)):
        a, b = pos_theirs.get(k, 0.0), pos_mine.get(k, 0.0)
        if abs(a - b) > allowed:
            return ScoreDifference(k, a, b, allowed)
    return None


def contribution_scores(example_scores: np.ndarray, positions: np.ndarray, contribution_ids: np.ndarray
                        ) -> dict[int, float]:
    """Per contribution, the sum of its examples' positive scores (the receipts' "supporting" rule;
    fixed order: bincount); contributions with a positive sum only."""
    sums = np.bincount(positions, weights=row_credit(example_scores, ANSWER_RULE), minlength=len(contribution_ids))
    return {int(contribution_ids[i]): float(sums[i]) for i in np.flatnonzero(sums > 0)}


def score_calls(model: object, prompts: Sequence[str], outputs: Sequence[str]) -> list[dict[int, float]]:
    """Positive per-contribution scores of each (prompt, output) under a served model, batched."""
    from provenant.serving.lora import CAUSAL_TASK  # torch: only where scoring runs

    if getattr(model, "task", None) == CAUSAL_TASK:
        return _score_lm_calls(model, prompts, outputs)
    from provenant.attribution.index import attribute_many

    index = model.index  # type: ignore[attr-defined]
    contribution_ids, positions = np.unique(index.contribution_ids, return_inverse=True)
    out: list[dict[int, float]] = []
    for start in range(0, len(prompts), SCORE_BATCH):
        block = attribute_many(model.classifier, index, list(prompts[start:start + SCORE_BATCH]),  # type: ignore[attr-defined]
                               list(outputs[start:start + SCORE_BATCH]))
        out.extend(contribution_scores(row, positions, contribution_ids) for row in block)
    return out


def _score_lm_calls(model: object, prompts: Sequence[str], outputs: Sequence[str]) -> list[dict[int, float]]:
    out: list[dict[int, float]] = []
    for start in range(0, len(prompts), SCORE_BATCH):
        block = model.attribute_completions(list(prompts[start:start + SCORE_BATCH]),  # type: ignore[attr-defined]
                                            list(outputs[start:start + SCORE_BATCH]))
        out.extend({int(s.key): float(s.ppm) for s in sorted(attribution.contributions, key=lambda s: int(s.key))
                    if s.ppm > 0} for attribution, _ in block)
    return out

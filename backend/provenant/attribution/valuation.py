"""Model-level valuation: each contribution's, contributor's and Datanet's share of a model's value.

Value is influence on held-out evaluation loss: for every held-out row, the engine's score of each
training row (positive: up-weighting the training row lowers that held-out row's loss), averaged
over the held-out rows, duplicate credit shared, then summed per contribution, contributor and
Datanet by `aggregate` under its "signed" rule (the plain sum; per-answer attribution sums only
the supporting rows, see aggregate.py). Negative totals mean data that made the held-out loss worse (mislabelled
or off-task rows). Shares are of the positive part, as for per-answer attribution, so a flashy
Datanet that added little shows a small share beside a narrow one that carried the weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from provenant.attribution.aggregate import Attribution, ContributionMeta, aggregate
from provenant.attribution.index import AttributionIndex, attribute_many
from provenant.factory.train import Example
from provenant.serving.engine import Classifier

EVAL_BATCH = 64  # held-out rows scored at once: bounds memory at EVAL_BATCH x N float64


class ValuationError(ValueError):
    """Valuation cannot be computed from what was given (no held-out rows, unknown labels...)."""


@dataclass(frozen=True)
class Valuation:
    model: str  # a name for titles: "model 7 (support-bot)"
    eval_rows: int
    per_example: np.ndarray  # (N,) mean influence of each indexed training row on held-out loss
    attribution: Attribution  # per contribution / contributor / Datanet: summed value and share (ppm)

    def to_json(self) -> dict[str, object]:
        def rows(shares):  # type: ignore[no-untyped-def]
            return [{"id": s.key, "value": s.score, "share_ppm": s.ppm} for s in shares]

        return {"model": self.model, "eval_rows": self.eval_rows,
                "contributions": rows(self.attribution.contributions),
                "contributors": rows(self.attribution.contributors), "datanets": rows(self.attribution.datanets)}


def value_from_scores(score_batches: Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]], eval_rows: int,
                      index: AttributionIndex, meta: Mapping[int, ContributionMeta], model: str) -> Valuation:
    """Average (rows, N) blocks of per-answer scores (already duplicate-shared) and aggregate them."""
    if eval_rows <= 0:
        raise ValuationError("valuation needs at least one held-out row")
    batches = score_batches() if callable(score_batches) else score_batches
    total = np.zeros(len(index), dtype=np.float64)
    for block in batches:  # fixed order and fixed blocks: the sum is bit-identical run to run
        if block.ndim != 2 or block.shape[1] != len(index):
            raise ValuationError(f"score block of shape {block.shape} does not match an index of {len(index)} rows")
        total += block.sum(axis=0)
    missing = sorted(set(index.contribution_ids.tolist()) - set(meta))
    if missing:
        raise ValuationError(f"no contributor/Datanet known for contributions {missing[:5]}")
    per_example = total / eval_rows
    return Valuation(model=model, eval_rows=eval_rows, per_example=per_example,
                     attribution=aggregate(per_example, index.contribution_ids, meta, rule="signed"))


def value_classifier(classifier: Classifier, index: AttributionIndex, eval_examples: Sequence[Example],
                     meta: Mapping[int, ContributionMeta], model: str = "model") -> Valuation:
    """Value of every training contribution of a classifier, measured on labelled held-out rows."""
    usable = [ex for ex in eval_examples if ex.label in classifier.label_to_id]
    if not usable:
        raise ValuationError("no held-out row has a label the model knows; nothing to value against")

    def batches() -> Iterator[np.ndarray]:
        for s in range(0, len(usable), EVAL_BATCH):
            chunk = usable[s:s + EVAL_BATCH]
            yield attribute_many(classifier, index, [ex.text for ex in chunk], [ex.label for ex in chunk])

    return value_from_scores(batches, len(usable), index, meta, model)

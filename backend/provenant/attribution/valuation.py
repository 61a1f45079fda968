"""Model-level valuation: each contribution's, contributor's and Datanet's share of a model's value.

Value is influence on held-out evaluation loss, weighted by what the model actually gained. For each
held-out row q, the engine's per-answer scores s_qi (positive: training row i lowered q's loss;
duplicate credit already shared) are normalised to sum to one in absolute value and weighted by the
row's gain, the loss of a uniform guess over the labels (log K) minus the model's loss, where positive:

    value_i = mean over q of  max(gain_q, 0) * s_qi / sum_j |s_qj|

so each held-out row the model improved hands out exactly its gain in magnitude: supporters get a
positive part, opposers (mislabelled or off-task rows) a negative one. A row the model did not improve
hands out nothing: there is no gain to divide, and its scores are those of an answer the model gets
wrong. Values are summed per contribution, contributor and Datanet (`aggregate`, "signed" rule); shares
are of the positive part, as for per-answer attribution.

Why weigh by the gain at all (sessions 1-11 took the plain mean of scores): summed over many held-out
rows, first-order influences are a small difference of large positive and negative parts whose scale
is the gradients', so a few high-loss rows decide it (session 12, five draws of the older task: 0.49
plain, 0.74 weighted by |gain|, against a truth later found noisy). Why the positive part only (sessions 12-14 took
|gain_q|, so a row the model got wrong handed out its loss over the guess too): on the benchmark's
graded classification task (bench/RESULTS.md, session 15: a classifier that learns every skill,
graded test shares, a leave-one-out truth whose seeds agree at 0.44-0.75), contributor values agreed
with leave-one-out retraining at Spearman 0.47 (owners 0.45) on tuning draws 1-4 with the positive
part, against -0.14 (owners 0.10) with |gain|, ahead on wallets on all four draws. On the older task at
3 epochs, whose truth is mostly seed noise (seeds agree at 0.14-0.23), the means were 0.31 / 0.45 and
0.11 / 0.15 (draws 1-2). Plain summed scores: -0.23 / 0.00 on the graded task. The benchmark's causal
LM is valued by summed scores (there the gain over the pretrained base partly measures how bad the
base was at a skill; the product values classifiers only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

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
    per_example: np.ndarray  # (N,) each indexed training row's gain-weighted influence, mean over held-out rows
    attribution: Attribution  # per contribution / contributor / Datanet: summed value and share (ppm)
    gain: float = 0.0  # mean held-out loss reduction against the baseline, nats per row (signed)
    baseline: str = ""  # what the gain is measured against, in words

    def to_json(self) -> dict[str, object]:
        def rows(shares):  # type: ignore[no-untyped-def]
            return [{"id": s.key, "value": s.score, "share_ppm": s.ppm} for s in shares]

        return {"model": self.model, "eval_rows": self.eval_rows, "gain": self.gain, "baseline": self.baseline,
                "contributions": rows(self.attribution.contributions),
                "contributors": rows(self.attribution.contributors), "datanets": rows(self.attribution.datanets)}


def gain_weighted(scores: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """(rows, N) per-answer scores and (rows,) held-out gains -> (N,) each training row's summed part:
    max(gain_q, 0) * s_qi / sum_j |s_qj| over the rows q. A row with no gain or no non-zero score
    gives nothing.
    float64, row by row in order: the same bits for the same inputs."""
    scores = np.asarray(scores, dtype=np.float64)
    gains = np.asarray(gains, dtype=np.float64)
    if scores.ndim != 2 or gains.shape != (scores.shape[0],):
        raise ValuationError(f"one gain per scored row is required: scores {scores.shape}, gains {gains.shape}")
    if not np.isfinite(gains).all():
        raise ValuationError("held-out gains must be finite")
    out = np.zeros(scores.shape[1])
    for row, gain in zip(scores, gains):
        total = np.abs(row).sum()
        if total > 0 and gain > 0:
            out += gain * (row / total)
    return out


def value_from_scores(batches: Iterable[tuple[np.ndarray, np.ndarray]]
                      | Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], eval_rows: int,
                      index: AttributionIndex, meta: Mapping[int, ContributionMeta], model: str,
                      baseline: str = "") -> Valuation:
    """Weigh blocks of (scores (rows, N), already duplicate-shared; gains (rows,)) and aggregate them."""
    if eval_rows <= 0:
        raise ValuationError("valuation needs at least one held-out row")
    blocks = batches() if callable(batches) else batches
    total, gain_sum = np.zeros(len(index), dtype=np.float64), 0.0
    for scores, gains in blocks:  # fixed order and fixed blocks: the sum is bit-identical run to run
        if scores.ndim != 2 or scores.shape[1] != len(index):
            raise ValuationError(f"score block of shape {scores.shape} does not match an index of {len(index)} rows")
        total += gain_weighted(scores, gains)
        gain_sum += float(np.sum(gains, dtype=np.float64))
    missing = sorted(set(index.contribution_ids.tolist()) - set(meta))
    if missing:
        raise ValuationError(f"no contributor/Datanet known for contributions {missing[:5]}")
    per_example = total / eval_rows
    return Valuation(model=model, eval_rows=eval_rows, per_example=per_example,
                     attribution=aggregate(per_example, index.contribution_ids, meta, rule="signed"),
                     gain=gain_sum / eval_rows, baseline=baseline)


def held_out_gains(classifier: Classifier, examples: Sequence[Example]) -> np.ndarray:
    """Each row's loss under a uniform guess over the classifier's K labels (log K) minus its
    cross-entropy under the classifier: what the training data taught the model about that row."""
    logits = classifier.logits([ex.text for ex in examples]).double()
    targets = torch.tensor([classifier.label_to_id[ex.label] for ex in examples], dtype=torch.int64)
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none").numpy()
    return np.log(len(classifier.labels)) - losses


def value_classifier(classifier: Classifier, index: AttributionIndex, eval_examples: Sequence[Example],
                     meta: Mapping[int, ContributionMeta], model: str = "model") -> Valuation:
    """Value of every training contribution of a classifier, measured on labelled held-out rows."""
    usable = [ex for ex in eval_examples if ex.label in classifier.label_to_id]
    if not usable:
        raise ValuationError("no held-out row has a label the model knows; nothing to value against")

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in range(0, len(usable), EVAL_BATCH):
            chunk = usable[s:s + EVAL_BATCH]
            scores = attribute_many(classifier, index, [ex.text for ex in chunk], [ex.label for ex in chunk])
            yield scores, held_out_gains(classifier, chunk)

    return value_from_scores(batches, len(usable), index, meta, model,
                             baseline=f"a uniform guess over the model's {len(classifier.labels)} labels")

"""Per-answer credit rule: supporting rows earn credit, a skill's opposite-label rows do not cancel it.

Real parts: the engine's curvature + index (`index_from_projected`, `score_projected`), `aggregate`,
`valuation.value_from_scores`, and the benchmark's top-1 metric.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attribution import metrics  # noqa: E402
from provenant.attribution.aggregate import ANSWER_RULE, ContributionMeta, aggregate, row_credit  # noqa: E402
from provenant.attribution.index import IndexSettings, index_from_projected, score_projected  # noqa: E402
from provenant.attribution.valuation import value_from_scores  # noqa: E402

D = 32
META = {1: ContributionMeta("0xteacher", 1), 2: ContributionMeta("0xbystander", 1)}


def _skill_world(seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients as a binary classifier makes them: g = s_y (1 - p) J u, the label's sign s_y times
    the input's feature direction. The teacher's 20 rows share one skill direction with both labels
    (12 'true', 8 'false'); the bystander's 20 rows are unrelated with a slight lean toward the
    query. Returns (projected training gradients, contribution ids, one query gradient at 'true')."""
    rng = np.random.default_rng(seed)
    skill = rng.normal(size=D)
    skill /= np.linalg.norm(skill)
    signs = np.array([1.0] * 12 + [-1.0] * 8)
    teacher = signs[:, None] * (skill + 0.3 * rng.normal(size=(20, D)) / np.sqrt(D))
    bystander = 0.25 * rng.normal(size=(20, D)) / np.sqrt(D) + 0.15 * skill
    grads = np.vstack([teacher, bystander])
    ids = np.array([1] * 20 + [2] * 20)
    return grads, ids, skill[None, :]


def _scores() -> tuple[np.ndarray, np.ndarray]:
    grads, ids, query = _skill_world()
    index = index_from_projected(grads, contribution_ids=ids, row_indices=list(range(40)), label_ids=[0] * 40,
                                 texts=[f"row {i} about a distinct thing {i * 7919}" for i in range(40)],
                                 settings=IndexSettings(projection_dim=D), adapter_sha256="aa", layout_sha256="bb")
    return score_projected(index, query)[0], index.contribution_ids


def test_the_teacher_of_a_skill_tops_the_answer_under_the_supporting_rule_but_not_a_signed_sum() -> None:
    scores, ids = _scores()
    assert (scores[:12] > 0).all() and (scores[12:20] < 0).all()  # the skill's other label scores negative
    assert ANSWER_RULE == "supporting"
    supporting = aggregate(scores, ids, META)
    signed = aggregate(scores, ids, META, rule="signed")
    assert supporting.contributors[0].key == "0xteacher"
    assert supporting.contributors[0].ppm > 600_000
    # the signed sum cancels 12 supporting rows against 8 opposing ones and the bystander's lean wins
    assert signed.contributors[0].key == "0xbystander", [(s.key, s.score) for s in signed.contributors]
    # the share counts the supporting rows; the reported score stays the signed net influence
    np.testing.assert_allclose(supporting.contributors[0].score, scores[:20].sum(), rtol=1e-12)


def test_the_supporting_rule_is_bit_identical_run_to_run_and_rejects_unknown_rules() -> None:
    first, ids = _scores()
    again, _ = _scores()
    assert first.tobytes() == again.tobytes()
    a, b = aggregate(first, ids, META), aggregate(again, ids, META)
    assert [(s.key, s.score, s.ppm) for s in a.contributions] == [(s.key, s.score, s.ppm) for s in b.contributions]
    with pytest.raises(ValueError):
        aggregate(first, ids, META, rule="largest")


def test_valuation_keeps_the_sign_so_harmful_data_stays_negative() -> None:
    grads, ids, _ = _skill_world()
    index = index_from_projected(grads, contribution_ids=ids, row_indices=list(range(40)), label_ids=[0] * 40,
                                 texts=[f"t{i}" for i in range(40)], settings=IndexSettings(projection_dim=D),
                                 adapter_sha256="aa", layout_sha256="bb")
    block = np.where(ids == 2, -1.0, 0.5)[None, :]  # |scores| sum to 30; the held-out row gained 3 nats
    valuation = value_from_scores([(block, np.array([3.0]))], 1, index, META, "m")
    by_contributor = {s.key: s.score for s in valuation.attribution.contributors}
    assert by_contributor == pytest.approx({"0xteacher": 1.0, "0xbystander": -2.0})


def test_the_benchmark_top1_metric_follows_the_rule() -> None:
    scores, _ = _scores()
    owners = ["carol"] * 20 + ["alice"] * 20  # the held-out row is carol's skill
    answered = np.array([True])
    assert metrics.top1_accuracy(scores[None, :], owners, ["carol"], answered, "supporting") == 1.0
    assert metrics.top1_accuracy(scores[None, :], owners, ["carol"], answered, "signed") == 0.0


def test_the_mislabel_score_does_not_depend_on_how_rows_are_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    from provenant.attribution import curvature

    rng = np.random.default_rng(9)
    g = rng.normal(size=(70, D))
    vectors, _ = curvature.training_vectors(g, curvature.fit_preconditioner(g, 30.0))
    whole = curvature.neighbour_disagreement(g, vectors)
    monkeypatch.setattr(curvature, "NEIGHBOUR_BLOCK", 16)
    assert curvature.DEFAULT_MISLABEL_NEIGHBOURS == 20
    np.testing.assert_allclose(curvature.neighbour_disagreement(g, vectors), whole, rtol=1e-12, atol=1e-12)


def test_settlement_scores_a_classifier_call_by_the_receipts_rule() -> None:
    """A call's published per-contribution score sums its examples' positive parts, as the receipt's
    shares do, so a receipt and the epoch that pays it credit the same rows."""
    from provenant.settlement.scores import contribution_scores

    scores, ids = _scores()
    contribution_ids, positions = np.unique(ids, return_inverse=True)
    published = contribution_scores(scores, positions, contribution_ids)
    receipt = aggregate(scores, ids, META)
    for cid in contribution_ids:
        positive = float(np.maximum(scores[ids == cid], 0).sum())
        assert published.get(int(cid), 0.0) == pytest.approx(positive, rel=1e-12)
    paid = max(published, key=published.get)
    assert receipt.contributions[0].key == str(paid)
    with pytest.raises(ValueError, match="rule must be one of"):
        row_credit(scores, "largest")

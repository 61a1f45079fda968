"""The attribution benchmark harness (bench/attribution/) on a tiny configuration.

Real training (the factory trainer on the config-built tiny encoder), real retrains for
leave-one-out and LDS, and three methods (ours, grad-dot, TF-IDF); no peer library needed.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attribution import metrics, report  # noqa: E402
from bench.attribution.cls_backend import ClsBackend, ClsConfig  # noqa: E402
from bench.attribution.ours import FINAL_ONLY_ARM, PROJECTION_DIM  # noqa: E402
from bench.attribution.harness import matched_batch_size, run_task  # noqa: E402
from bench.attribution.tasks import (BULK_CONTRIBUTOR, CONTRIBUTORS, SKILL_OWNER, SYBIL,  # noqa: E402
                                     SYBIL_VICTIM, Row, Task, TaskError, causal_task, classification_task,
                                     skill_owners)
from provenant.factory.train import LoraSettings  # noqa: E402


def test_tasks_have_the_promised_ground_truth() -> None:
    task = classification_task(rows_per_skill=20, bulk_rows=24, test_per_skill=5)
    by = {c: [task.train[i] for i in task.contributor_rows(c)] for c in CONTRIBUTORS}
    assert [r.text for r in by[SYBIL]] == [r.text for r in by[SYBIL_VICTIM]]  # verbatim copies, second wallet
    assert sum(r.flipped for r in task.train) == 3
    assert {(r.contributor, r.skill) for r in task.train if r.flipped} == {("carol", "negation")}
    assert {(r.contributor, r.skill) for r in task.test} == {(o, s) for s, o in skill_owners("negation").items()}
    assert skill_owners("negation") == {"category": "alice", "size": "bob", "order": "dave", "negation": "carol"}
    assert skill_owners("order") == SKILL_OWNER  # the causal task's cast, and the classification's until session 12
    order = classification_task(rows_per_skill=20, bulk_rows=24, test_per_skill=5, flipped_skill="order")
    assert {(r.contributor, r.skill) for r in order.train if r.flipped} == {("carol", "order")}
    assert len({r.text.split(" #")[0].rstrip(".!") for r in by[BULK_CONTRIBUTOR]}) < len(by[BULK_CONTRIBUTOR])
    assert not {r.text for r in task.test} & {r.text for r in task.train}  # held-out rows are new
    full = classification_task()
    for skill in ("category", "size", "order", "negation"):  # no single word decides a label
        rows = [r for r in full.train if r.skill == skill]
        tokens = [(r.label, r.text.replace(",", " ").split()) for r in rows]
        words = {lab: {w for label, ws in tokens if label == lab for w in ws} for lab in ("true", "false")}
        decisive = [w for _, ws in tokens for w in ws if (w in words["true"]) != (w in words["false"])]
        assert len(decisive) < 0.02 * sum(len(ws) for _, ws in tokens), (skill, decisive[:5])
    lm = causal_task(rows_per_skill=6, bulk_rows=8, test_per_skill=2)
    assert any(r.flipped for r in lm.train) and {r.contributor for r in lm.train} == set(CONTRIBUTORS)
    with pytest.raises(TaskError):
        classification_task(flip_fraction=0.5)
    with pytest.raises(TaskError, match="unknown skill"):
        classification_task(flipped_skill="spelling")


def test_graded_test_weights_and_the_inert_bulk() -> None:
    weights = {"category": 4, "negation": 3, "order": 2, "size": 1}
    task = classification_task(rows_per_skill=20, bulk_rows=24, test_per_skill=5, test_weights=weights,
                               bulk_style="inert")
    assert {s: sum(r.skill == s for r in task.test) for s in weights} == {s: 5 * w for s, w in weights.items()}
    bulk = [r for r in task.train if r.contributor == BULK_CONTRIBUTOR]
    assert len(bulk) == 24 and all(("blue" in r.text) == (r.label == "true") for r in bulk)
    test_words = {w for r in task.test for w in r.text.split()}
    assert not test_words & {"blue", "green"}  # the bulk's cue is in no test row
    plain = classification_task(rows_per_skill=20, bulk_rows=24, test_per_skill=5)
    assert plain == classification_task(rows_per_skill=20, bulk_rows=24, test_per_skill=5,  # earlier draws stand
                                        test_weights=dict.fromkeys(weights, 1), bulk_style="contrast")
    with pytest.raises(TaskError, match="test_weights"):
        classification_task(test_weights={"category": 2})
    with pytest.raises(TaskError, match="bulk style"):
        classification_task(bulk_style="loud")


def test_metrics_on_known_answers() -> None:
    assert metrics.mislabel_auc(np.array([0.1, 0.9, 0.2]), [False, True, False]) == 1.0
    scores = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    values = metrics.contributor_values(scores, ["a", "b", "a"], ["a", "b"])
    assert values == {"a": 0.0, "b": 2.0}
    assert metrics.shares({"a": -1.0, "b": 3.0, "c": 1.0}) == {"a": 0.0, "b": 0.75, "c": 0.25}
    assert metrics.sybil_gain({"bob": 0.3, "mallory": 0.3}, {"bob": 0.5}) == pytest.approx(0.2)
    assert metrics.sybil_gain({"bob": 0.0}, {"bob": 0.0}) == 0.0  # paid nothing either way: no gain
    assert metrics.sybil_gain({"mallory": 0.1}, {"bob": 0.0}) == float("inf")
    assert metrics.mean_shares([{"bob": 0.2, "mallory": 0.1}, {"bob": 0.4}]) == pytest.approx({"bob": 0.3, "mallory": 0.05})
    # LDS is 1 when the summed scores order the subsets exactly as their losses do
    masks = [np.array([1, 0, 0], bool), np.array([1, 1, 0], bool), np.array([1, 1, 1], bool)]
    assert metrics.lds(np.array([[1.0, 1.0, 1.0]]), masks, np.array([[3.0], [2.0], [1.0]])) == pytest.approx(1.0)
    # gain-weighted values: row 0 (|s| sum 8) hands out its 0.6 nats, signed; row 1 lost to the
    # guess (no gain to hand out) and row 2 has no non-zero score: both hand out nothing
    scores = np.array([[2.0, 1.0, -5.0], [1.0, 4.0, -1.0], [0.0, 0.0, 0.0]])
    values = metrics.gain_weighted_values(scores, np.array([0.6, -0.3, 0.2]), ["a", "b", "c"], ["a", "b", "c"])
    assert values == pytest.approx({"a": 0.15, "b": 0.075, "c": -0.375})
    # Two seeds that agree exactly leave no noise: every ceiling is 1. Independent noise leaves ~0.
    same = np.repeat(np.arange(8.0)[:, None, None], 2, axis=1)  # (S=8, K=2, Q=1)
    assert metrics.retrain_agreement(same) == pytest.approx((1.0, 1.0, 1.0))
    noise = np.random.default_rng(0).normal(size=(200, 2, 5))
    agreement, one, mean = metrics.retrain_agreement(noise)
    assert agreement < 0.1 and one < 0.35 and mean >= one
    # half signal, half noise: the seeds agree at r ~ 0.5, and the two-seed mean is the cleaner truth
    signal = np.random.default_rng(1).normal(size=(400, 1, 3))
    agreement, one, mean = metrics.retrain_agreement(signal + np.random.default_rng(2).normal(size=(400, 2, 3)))
    assert 0.4 < agreement < 0.6 and mean == pytest.approx(np.sqrt(2 * agreement / (1 + agreement)), abs=0.02) and mean > one
    with pytest.raises(ValueError, match="seeds >= 2"):
        metrics.retrain_agreement(np.zeros((4, 1, 2)))
    # leave-one-out's truth: three seeds ranking four contributors alike agree at 1; two seeds that
    # rank them in opposite orders agree at -1, and no predictor can be expected to match their mean
    assert metrics.loo_agreement({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.3, 0.4], "c": [0.3, 0.5, 0.6],
                                  "d": [0.4, 0.6, 0.9]}) == pytest.approx((1.0, 1.0))
    assert metrics.loo_agreement({"a": [0.1, 0.4], "b": [0.2, 0.3], "c": [0.3, 0.2], "d": [0.4, 0.1]}) == (-1.0, 0.0)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        metrics.loo_agreement({"a": [0.1], "b": [0.2]})


KEYS = {"category": ("red", "blue"), "size": ("north", "south"), "order": ("happy", "angry"), "negation": ("cat", "dog")}
FILLERS = ("one", "two", "three", "four", "five", "six", "seven", "eight")


def lexical_task(rows_per_skill: int = 20, flipped: int = 3, seed: int = 0) -> Task:
    """The benchmark's cast of contributors on a keyword task the 1-layer tiny encoder can learn
    (the real tasks need MiniLM, too slow for a unit test): a skill's keyword decides its label."""
    rng = random.Random(seed)

    def rows(skill: str, n: int, owner: str, flip: int = 0) -> list[Row]:
        out = []
        for i in range(n):
            truth, wrong = i % 2 == 0, owner == "carol" and i < flip
            text = " ".join(rng.sample(FILLERS, 3)) + " " + KEYS[skill][0 if truth else 1]
            out.append(Row(text, "true" if truth != wrong else "false", owner, skill, wrong))
        return out

    train = [r for skill, owner in SKILL_OWNER.items() for r in rows(skill, rows_per_skill, owner, flipped)]
    train += [Row(f"status ok{'!' * (i // 2)}", "true" if i % 2 == 0 else "false", BULK_CONTRIBUTOR, "bulk")
              for i in range(24)]
    train += [Row(r.text, r.label, SYBIL, r.skill) for r in train if r.contributor == SYBIL_VICTIM]
    test = [r for skill, owner in SKILL_OWNER.items() for r in rows(skill, 4, owner)]
    return Task("lexical", "classification", tuple(train), tuple(test))


def test_harness_runs_end_to_end_on_a_tiny_config() -> None:
    task = lexical_task()
    config = ClsConfig(base_model="tiny-encoder",
                       settings=LoraSettings(epochs=10, learning_rate=3e-2, max_length=16, batch_size=8))
    backend = ClsBackend(task, config, final_only_arm=True)
    runners = backend.backend()
    runners.methods = {k: runners.methods[k] for k in ("ours", FINAL_ONLY_ARM, "grad-dot", "TF-IDF")}
    result = run_task(task, runners, lds_retrains=3, sybil_seeds=2, loo_seeds=2, lds_seeds=2)

    assert [m.name for m in result.methods] == ["ours", FINAL_ONLY_ARM, "grad-dot", "TF-IDF"]
    assert set(result.loo_delta) == set(CONTRIBUTORS) and result.lds_retrains == 3
    for m in result.methods:
        assert not m.error, m.error
        for value in (m.auc, m.loo_spearman, m.loo_spearman_owners, m.loo_spearman_gain, m.loo_spearman_summed, m.lds, m.top1, m.sybil_gain, m.bulk_share, m.query_ms):
            assert isinstance(value, float) and not math.isnan(value), (m.name, value)
        assert -1.0 <= m.loo_spearman <= 1.0 and -1.0 <= m.lds <= 1.0 and 0.0 <= m.top1 <= 1.0
        assert -1.0 <= m.lds_one_seed <= 1.0  # two LDS seeds: the first seed's LDS is reported beside the mean's
        assert m.bytes_per_example > 0 and m.build_seconds >= 0
    by_name = {m.name: m for m in result.methods}
    # ours is valued as the product values a model (gain-weighted), the anchors by their summed scores
    assert [m.loo_rule for m in result.methods] == ["gain-weighted", "gain-weighted", "summed", "summed"]
    assert by_name["ours"].loo_spearman == by_name["ours"].loo_spearman_gain
    assert by_name["grad-dot"].loo_spearman == by_name["grad-dot"].loo_spearman_summed
    # mislabelled rows have a larger training loss, hence a larger gradient: above chance for both
    assert by_name["grad-dot"].auc > 0.6 and by_name["ours"].auc > 0.6
    assert by_name["ours"].bytes_per_example <= 16 * 1024
    # the Sybil gain averages two training seeds of each world, and says what each pair gave
    per_seed = [n for n in by_name["ours"].notes if n.startswith("Sybil gain per training seed: ")]
    assert len(per_seed) == 1 and per_seed[0].count("%") == 2, by_name["ours"].notes
    # Every model trains each distinct row once, as the Factory does: the Sybil's verbatim copy trains
    # nothing, so both worlds are one model and no method pays the copy anything
    assert result.extra["training rows"].startswith("each distinct row once")
    assert result.loo_delta["mallory"] == 0.0  # removing the copy leaves the same distinct rows: the same models
    assert "leave-one-out with bob and mallory removed together" in result.extra
    assert result.extra["leave-one-out"] == "test-loss change averaged over 2 training seed(s)"
    assert result.extra["leave-one-out truth"].startswith("two seeds' rankings of the contributors agree at Spearman")
    assert result.extra["retrains"].startswith("the full model's optimizer steps per epoch")
    assert result.extra["LDS truth"].startswith("mean test loss of 2 training seeds per subset; two seeds'")
    assert all(abs(m.sybil_gain) < 1e-9 for m in result.methods), [(m.name, m.sybil_gain) for m in result.methods]
    assert "ours_10k_ms" in backend.latency and backend.latency["ours_10k_ms"] > 0
    text = report.section([result], "test", 1, "2026-11-26", [])
    assert "| ours |" in text and "| target |" in text and "LOO Spearman" in text
    # ours indexes 4 snapshots of the 10-epoch run (epochs 1, 4, 7, 10); the arm, the final adapter alone.
    # Mislabel scores are the final adapter's in both. The arm is ours' design arm: listed against the
    # anchors, never counted as one
    arm = by_name[FINAL_ONLY_ARM]
    assert "indexed at epochs [1, 4, 7, 10]" in by_name["ours"].notes and "indexed at epochs final only" in arm.notes
    assert by_name["ours"].bytes_per_example == 4 * 4 * PROJECTION_DIM + 40 and arm.bytes_per_example == 4 * PROJECTION_DIM + 40
    assert arm.auc == by_name["ours"].auc
    verdict = report.verdict(result)
    assert any(line.startswith(f"- design arm '{FINAL_ONLY_ARM}': ") for line in verdict), verdict
    assert not any(f"best anchor {FINAL_ONLY_ARM}" in line for line in verdict), verdict
    assert any(line.startswith("- lds against the first training seed's retrains alone") for line in verdict), verdict
    assert any(line.startswith("- LOO Spearman with every method's values gain-weighted") for line in verdict), verdict
    assert "Contributor values behind LOO Spearman and the bulk share: ours: gain-weighted (alice " in text


def test_matched_retrains_take_the_full_models_optimizer_steps() -> None:
    """A retrain on fewer rows takes a smaller batch, so that it takes the full model's steps per epoch
    (to within 2 of 18, where no integer batch splits the rows evenly); the full model keeps its batch."""
    full_rows, batch = 280, 16
    steps = math.ceil(full_rows / batch)
    assert matched_batch_size(full_rows, full_rows, batch) == batch
    assert matched_batch_size(140, None, batch) == batch  # "epochs": the settings' batch, half the steps
    for rows in range(full_rows // 3, full_rows):
        b = matched_batch_size(rows, full_rows, batch)
        assert 1 <= b <= batch and abs(math.ceil(rows / b) - steps) <= 2, (rows, b)


def test_datainf_closed_form_matches_the_explicit_inverse() -> None:
    """DataInf's Sherman-Morrison shortcut equals mean_j (g_j g_j^T + lam I)^-1 computed by inversion."""
    from bench.attribution.methods import GradientFeatures, datainf

    rng = np.random.default_rng(0)
    g, v = rng.normal(size=(30, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    out = datainf(GradientFeatures(g, v, [("layer", 0, 5)], 0.0, 0.0))
    g64 = g.astype(np.float64)
    lam = 0.1 * float(np.mean((g64 ** 2).sum(axis=1)))
    inverse = sum(np.linalg.inv(np.outer(row, row) + lam * np.eye(5)) for row in g64) / len(g64)
    np.testing.assert_allclose(out.scores, v.astype(np.float64) @ inverse @ g64.T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out.self_scores, np.einsum("ij,jk,ik->i", g64, inverse, g64), rtol=1e-9)


def test_valuation_rules_read_a_dump_and_score_each_rule(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bench.attribution import valuation_rules

    # one trained row per wallet but mallory's (deduped away); removing a wallet costs its rank in nats
    owners = np.array(["alice", "bob", "carol", "dave", "erin"])
    cost = {"alice": 0.5, "bob": 0.0, "carol": 0.3, "dave": 0.2, "erin": 0.1, "mallory": 0.0}
    full = np.full((2, 3), 0.2)  # 2 seeds x 3 test rows
    losses = {f"loss_{c}": full + d for c, d in cost.items()}
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]] * 3)  # every test row: alice > bob > carol > dave > erin
    np.savez(tmp_path / "d.npz", train_contributors=owners, baseline=np.full(3, np.log(2)), loss_full=full,
             loss_owner=full + 0.4, scores_m=scores, **losses)
    truth, agreement, out = valuation_rules.evaluate(str(tmp_path / "d.npz"))
    assert truth["alice"] == pytest.approx(0.5) and agreement == pytest.approx(1.0)
    # wallets: bob is ranked 2nd but costs nothing (mallory holds his copy), tied with mallory;
    # owners: bob and mallory together cost 0.4, second, as ranked
    assert out[("m", "summed")] == pytest.approx((0.551, 1.0), abs=1e-3)
    assert set(r for _, r in out) == set(valuation_rules.RULES)

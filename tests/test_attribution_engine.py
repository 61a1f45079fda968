"""Proof of Attribution engine parts that need no trained model: curvature, duplicate credit,
Sybil robustness through the whole index -> aggregate path, index format, valuation and its chart."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as safetensors_save

from provenant.attribution.aggregate import ContributionMeta, aggregate
from provenant.attribution.chart import render_svg, render_table
from provenant.attribution.curvature import (CurvatureError, Preconditioner, fit_preconditioner,
                                             training_vectors)
from provenant.attribution.duplicates import DuplicateError, duplicate_groups, share_credit, summarise
from provenant.attribution.index import (AttributionIndex, AttributionIndexError, IndexSettings,
                                         index_from_projected, mislabel_scores, score_projected)
from provenant.attribution.report import write_report
from provenant.attribution.valuation import ValuationError, value_from_scores

D = 64


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_the_preconditioner_is_the_damped_gauss_newton_inverse_and_round_trips() -> None:
    g = _rng(0).normal(size=(200, D))
    pre = fit_preconditioner(g, damping_ratio=0.5)
    fisher = g.T @ g / len(g)
    damping = 0.5 * np.trace(fisher) / D
    x = _rng(1).normal(size=(3, D))
    expected = np.linalg.solve(fisher + damping * np.eye(D), x.T).T
    np.testing.assert_allclose(pre.apply(x), expected, rtol=1e-9, atol=1e-12)
    assert pre.damping == pytest.approx(damping)
    again = Preconditioner.from_bytes(pre.to_bytes())
    assert np.array_equal(again.apply(x), pre.apply(x))
    assert fit_preconditioner(g, 0.5).to_bytes() == pre.to_bytes()  # deterministic


@pytest.mark.parametrize("bad", [np.zeros((5, D)), np.full((5, D), np.nan), np.ones((0, D)), np.ones(D)])
def test_the_preconditioner_refuses_gradients_that_define_nothing(bad: np.ndarray) -> None:
    with pytest.raises(CurvatureError):
        fit_preconditioner(bad)
    with pytest.raises(CurvatureError, match="damping_ratio"):
        fit_preconditioner(np.ones((5, D)), damping_ratio=0.0)
    with pytest.raises(CurvatureError, match="not a preconditioner"):
        Preconditioner.from_bytes(b"junk")


def _world(bulk: int, dim: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 diverse rows plus `bulk` noisy copies of one direction u at half their gradient norm."""
    rng = _rng(seed)
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    diverse = rng.normal(size=(300, dim))
    copies = 0.5 * np.sqrt(dim) * u + 0.1 * rng.normal(size=(bulk, dim))
    return np.vstack([diverse, copies]), u


def test_a_redundant_bulk_gains_little_credit_from_volume_where_grad_dot_grows_with_it() -> None:
    totals, dot_totals = [], []
    for bulk in (40, 160):
        g, u = _world(bulk)
        vectors, _ = training_vectors(g, fit_preconditioner(g))
        totals.append((vectors[300:] @ u).sum())
        dot_totals.append((g[300:] @ u).sum())
    assert dot_totals[1] / dot_totals[0] > 3.9  # volume buys credit without curvature...
    assert totals[1] / totals[0] < 2.5  # ...much less with it: 4x the rows, ~2.1x the credit (lambda = 30x mean)


def test_clipping_tames_outlier_gradients_but_leaves_small_ones_small() -> None:
    g = np.vstack([_rng(4).normal(size=(99, D)), 50 * np.ones((1, D))])  # one row with a huge gradient
    g[0] *= 0.01  # and one the model already fits
    pre = fit_preconditioner(g)
    clipped, _ = training_vectors(g, pre)
    unclipped, _ = training_vectors(g, pre, clip_quantile=1.0)
    norms = np.linalg.norm(g, axis=1)
    assert np.linalg.norm(clipped[99]) < np.linalg.norm(unclipped[99]) * np.median(norms) / norms[99] * 1.0001
    assert np.array_equal(clipped[0], unclipped[0])
    with pytest.raises(CurvatureError, match="clip_quantile"):
        training_vectors(g, pre, clip_quantile=0.0)


def test_a_row_whose_gradient_fights_its_cluster_has_the_largest_self_influence() -> None:
    rng = _rng(3)
    centres = rng.normal(size=(4, D)) * 3
    g = np.vstack([c + rng.normal(size=(50, D)) for c in centres])
    flipped = 17
    g[flipped] = -2 * centres[0] + rng.normal(size=D)  # a mislabelled row pushes against its class
    _, self_influence = training_vectors(g, fit_preconditioner(g))
    assert int(np.argmax(self_influence)) == flipped


def test_duplicate_groups_are_exact_or_near_with_the_same_label_and_headed_by_the_earliest_row() -> None:
    texts = ["The striker scored twice in the final", "the  striker scored twice in the FINAL",  # exact (normalised)
             "the striker scored twice in the finale", "the striker scored twice in the final",  # near / exact
             "the central bank raised interest rates", "the striker scored twice in the final"]  # other / other label
    labels = ["sports", "sports", "sports", "sports", "finance", "finance"]
    order = [(5, 0), (2, 3), (7, 1), (2, 1), (1, 0), (1, 1)]  # (contribution, row): row 3 is the earliest
    canonical = duplicate_groups(texts, labels, order)
    assert canonical.tolist() == [3, 3, 3, 3, 4, 5]
    exact_only = duplicate_groups(texts, labels, order, threshold=None)
    assert exact_only.tolist() == [3, 3, 2, 3, 4, 5]
    assert summarise(canonical).rows_without_credit == 3
    with pytest.raises(DuplicateError):
        duplicate_groups(texts, labels[:2], order)
    with pytest.raises(DuplicateError, match="threshold"):
        duplicate_groups(texts, labels, order, threshold=1.5)


def test_a_copy_with_words_added_is_grouped_where_jaccard_misses_it() -> None:
    row = "a whale is bigger than a cat"
    texts = [row, row + " indeed",  # character 5-gram Jaccard 0.77 < 0.8
             "a whale is really bigger than a cat",  # a word inside: Jaccard 0.63
             row + ", as every child who has seen both knows well",  # over twice as many words
             "bigger than a", "bigger than a dog",  # a subsequence, but 3 words: too short to call a copy
             "a cat is bigger than a whale"]  # the same words in another order: another row
    labels = ["true"] * 7
    order = [(1, i) for i in range(7)]
    assert duplicate_groups(texts, labels, order).tolist() == [0, 0, 0, 3, 4, 5, 6]
    assert duplicate_groups(texts, labels, order, words_added=False).tolist() == [0, 1, 2, 3, 4, 5, 6]
    other_label = ["true", "false", "false"] + ["true"] * 4
    assert duplicate_groups(texts, other_label, order).tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_shared_credit_is_worth_one_copy_and_goes_to_the_earliest_member() -> None:
    scores = np.array([[1.0, 3.0, 5.0, -2.0], [0.5, 0.5, 0.5, 4.0]])
    canonical = np.array([1, 1, 1, 3])  # rows 0, 1, 2 are one group headed by row 1
    first = share_credit(scores, canonical)
    assert first.tolist() == [[0.0, 3.0, 0.0, -2.0], [0.0, 0.5, 0.0, 4.0]]
    equal = share_credit(scores, canonical, "equal")
    np.testing.assert_allclose(equal[0], [1.0, 1.0, 1.0, -2.0])
    assert np.array_equal(share_credit(scores[0], canonical), first[0])
    with pytest.raises(DuplicateError, match="policy"):
        share_credit(scores, canonical, "largest")
    with pytest.raises(DuplicateError):
        share_credit(scores, canonical[:3])


def _index(rows: list[tuple[np.ndarray, str, int, int]], settings: IndexSettings) -> AttributionIndex:
    """rows: (projected gradient, text, contribution id, row index)."""
    return index_from_projected(np.array([r[0] for r in rows]), contribution_ids=[r[2] for r in rows],
                                row_indices=[r[3] for r in rows], label_ids=[0] * len(rows),
                                texts=[r[1] for r in rows], settings=settings, adapter_sha256="aa", layout_sha256="bb")


@pytest.mark.parametrize("how", ["twice in one wallet", "copied by a Sybil wallet", "split into many contributions",
                                 "copied by a Sybil wallet, a word inserted in each row"])
def test_duplicating_or_splitting_data_gains_at_most_five_percent(how: str) -> None:
    rng = _rng(11)
    settings = IndexSettings(projection_dim=D)
    alice = [(rng.normal(size=D) + 2, f"alice row number {i} about tides and moons", 1, i) for i in range(20)]
    bob = [(rng.normal(size=D) - 1, f"bob row {i}: interest rates and bond yields", 2, i) for i in range(30)]
    carol = [(rng.normal(size=D), f"carol row {i}: recipes with garlic and basil", 3, i) for i in range(30)]
    meta = {1: ContributionMeta("0xa11ce", 1), 2: ContributionMeta("0xb0b", 1), 3: ContributionMeta("0xca401", 2)}
    queries = rng.normal(size=(25, D))  # alice's rows get ~30% of the payout: room for a copy to gain

    def payout(rows: list, owner_of: dict[int, ContributionMeta], who: set[str]) -> float:
        index = _index(rows, settings)
        ppm = 0
        for q in score_projected(index, queries):
            attribution = aggregate(q, index.contribution_ids, owner_of)
            ppm += sum(s.ppm for s in attribution.contributors if s.key in who)
        return ppm / len(queries)

    once = payout(alice + bob + carol, meta, {"0xa11ce"})
    if how == "twice in one wallet":
        extra = [(g, t, 4, i) for g, t, _, i in alice]
        gamed = payout(alice + bob + carol + extra, {**meta, 4: ContributionMeta("0xa11ce", 1)}, {"0xa11ce"})
    elif how.startswith("copied by a Sybil wallet"):
        edited = how.endswith("inserted in each row")  # no longer an exact copy, nor the same gradient
        extra = [(g + 0.05 * rng.normal(size=D) if edited else g, t.replace(" about ", " about silvery ") if edited else t,
                  4, i) for g, t, _, i in alice]
        gamed = payout(alice + bob + carol + extra, {**meta, 4: ContributionMeta("0x5b11", 2)}, {"0xa11ce", "0x5b11"})
    else:
        split = [(g, t, 10 + i % 5, i // 5) for g, t, _, i in alice]
        owners = {**meta, **{10 + k: ContributionMeta(f"0xa11ce{k}", 1) for k in range(5)}}
        gamed = payout(split + bob + carol, owners, {f"0xa11ce{k}" for k in range(5)})
    assert once > 50_000  # alice's rows matter to these queries
    assert gamed <= 1.05 * once, (how, once, gamed)
    # nor does the victim lose: a copy must not merge the victim's distinct rows into one group
    assert gamed >= 0.95 * once, (how, once, gamed)


def test_without_duplicate_sharing_a_second_copy_would_pay() -> None:
    """The guard above is the credit rule's doing: raw scores pay a copy again."""
    rng = _rng(5)
    g = rng.normal(size=(40, D))
    rows = [(g[i], f"row {i} text", 1 + i % 2, i) for i in range(40)] + [(g[0], "row 0 text", 3, 0)]
    index = _index(rows, IndexSettings(projection_dim=D))
    q = g[0][None, :]
    raw, shared = score_projected(index, q, share_duplicates=False)[0], score_projected(index, q)[0]
    assert raw[40] == pytest.approx(raw[0]) and raw[40] > 0
    assert shared[40] == 0.0 and shared[0] == pytest.approx(raw[0])


def test_index_format_round_trips_and_rejects_inconsistent_files() -> None:
    rng = _rng(2)
    rows = [(rng.normal(size=D), f"text {i % 7}", 1 + i % 3, i) for i in range(21)]  # 3 copies of each text
    index = _index(rows, IndexSettings(projection_dim=D, damping_ratio=5.0))
    assert summarise(index.canonical).groups == 7
    data = index.to_bytes()
    loaded = AttributionIndex.from_bytes(data)
    assert loaded.to_bytes() == data and loaded.settings == index.settings
    assert np.array_equal(mislabel_scores(loaded), mislabel_scores(index))  # the stored neighbour-disagreement score
    assert index.bytes_per_example == D * 4 + 40
    with pytest.raises(AttributionIndexError, match="outside"):
        AttributionIndex(index.gradients, index.contribution_ids, index.row_indices, index.label_ids, index.settings,
                         "aa", "bb", index.self_influence, np.full(21, 99))
    with pytest.raises(AttributionIndexError, match="self_influence"):
        AttributionIndex(index.gradients, index.contribution_ids, index.row_indices, index.label_ids, index.settings,
                         "aa", "bb", index.self_influence[:3], index.canonical)
    with pytest.raises(AttributionIndexError, match="query"):
        score_projected(index, np.ones((1, D + 1)))
    with pytest.raises(ValueError, match="damping_ratio"):
        IndexSettings(damping_ratio=-1.0)


def test_a_format_1_index_still_loads_as_grad_dot() -> None:
    g = np.arange(12, dtype=np.float32).reshape(3, 4)
    header = {"format": "provenant-attribution-index/1", "settings": {"projection_dim": 4, "seed": 9},
              "adapter_sha256": "ab", "layout_sha256": "cd"}
    data = safetensors_save({"gradients": g, "contribution_ids": np.arange(3), "row_indices": np.arange(3),
                             "label_ids": np.zeros(3, dtype=np.int64)}, metadata={"provenant": json.dumps(header)})
    loaded = AttributionIndex.from_bytes(data)
    assert np.array_equal(score_projected(loaded, np.ones((1, 4)))[0], g.sum(axis=1))
    assert loaded.canonical.tolist() == [0, 1, 2]
    # settings written before the words-added test existed say how that index was grouped: without it
    assert loaded.settings.duplicate_words_added is False and IndexSettings().duplicate_words_added is True


def test_valuation_averages_held_out_scores_and_renders_a_table_and_chart(tmp_path: Path) -> None:
    rows = [(np.eye(D)[i % D], f"t{i}", 1 + i % 4, i) for i in range(8)]
    index = _index(rows, IndexSettings(projection_dim=D))
    meta = {1: ContributionMeta("0xaaa", 1), 2: ContributionMeta("0xbbb", 1), 3: ContributionMeta("0xaaa", 2),
            4: ContributionMeta("0xccc", 2)}
    # held-out row 1 improved by 1.2 nats: its scores (|s| sum 8) hand out 1.2 in proportion, signed;
    # row 2 got worse by 0.8 against the guess: it has no gain to hand out
    blocks = [(np.array([[1.0, 2, 0, -1, 1, 2, 0, -1]]), np.array([1.2])),
              (np.array([[3.0, 0, 0, -1, 3, 0, 0, -1]]), np.array([-0.8]))]
    valuation = value_from_scores(blocks, 2, index, meta, "model 7 (demo)", baseline="a uniform guess")
    np.testing.assert_allclose(valuation.per_example, [0.075, 0.15, 0, -0.075, 0.075, 0.15, 0, -0.075])
    assert valuation.gain == pytest.approx(0.2)
    by_contribution = {s.key: s.score for s in valuation.attribution.contributions}
    assert by_contribution == pytest.approx({"1": 0.15, "2": 0.3, "3": 0.0, "4": -0.15})
    shares = {s.key: s.ppm for s in valuation.attribution.datanets}
    assert shares == {"1": 1_000_000, "2": 0}  # Datanet 2 nets -0.15: no share of the positive part
    table = render_table(valuation)
    assert "Datanet 1" in table and "0xccc" in table and "100.00%" in table
    assert "held-out loss is 0.2 nats per row below a uniform guess's" in table and "does worse" not in table
    worse = value_from_scores([(blocks[1][0], np.array([-0.8]))], 1, index, meta, "m", baseline="a uniform guess")
    table = render_table(worse)  # a model that lost to the guess says so, and does not claim a gain
    assert "held-out loss is 0.8 nats per row above a uniform guess's" in table
    assert "does worse than a uniform guess on held-out rows" in table
    svg = ET.fromstring(render_svg(valuation))
    rects = [e for e in svg.iter() if e.tag.endswith("rect")]
    assert len(rects) == 1 + 2 + 3 + 4  # background + bars for Datanets, contributors, contributions
    assert any(r.get("fill") == "#c62828" for r in rects)  # the harmful contribution is drawn red
    files = write_report(valuation, tmp_path / "out")
    assert [p.name for p in files.paths] == ["report.txt", "report.svg", "report.json"]
    saved = json.loads(files.paths[2].read_text())
    assert saved["datanets"][0] == {"id": "1", "value": pytest.approx(0.45), "share_ppm": 1_000_000}
    assert saved["gain"] == pytest.approx(0.2) and saved["baseline"] == "a uniform guess"
    assert write_report(valuation, tmp_path / "again").paths[1].read_bytes() == files.paths[1].read_bytes()
    assert "no shares are given" in table  # its one held-out row lost to the guess: no gain to share
    # every Datanet nets a loss: the table says there is nothing to share instead of listing 0% shares
    harmful = value_from_scores([(-np.abs(blocks[0][0]), np.array([-1.0]))], 1, index, meta, "m")
    assert all(s.ppm == 0 for s in harmful.attribution.datanets) and "no shares are given" in render_table(harmful)
    with pytest.raises(ValuationError, match="held-out"):
        value_from_scores([], 0, index, meta, "m")
    with pytest.raises(ValuationError, match="contributions"):
        value_from_scores(blocks, 2, index, {1: meta[1]}, "m")
    with pytest.raises(ValuationError, match="one gain per scored row"):
        value_from_scores([(blocks[0][0], np.zeros(2))], 1, index, meta, "m")
    with pytest.raises(ValuationError, match="finite"):
        value_from_scores([(blocks[0][0], np.array([np.nan]))], 1, index, meta, "m")

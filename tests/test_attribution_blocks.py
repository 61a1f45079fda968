"""Per-module (block-diagonal) curvature and neighbour-based mislabel scores: engine parts that need
no trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from provenant.attribution.curvature import (CurvatureError, fit_preconditioner, mislabel_suspicion,
                                             neighbour_disagreement, training_vectors)
from provenant.attribution.index import AttributionIndex, IndexSettings, index_from_projected, mislabel_scores
from provenant.attribution.projection import Projector

LAYOUT = (("enc.0.q.lora_A.w", 48), ("enc.0.q.lora_B.w", 40), ("enc.1.v.lora_A.w", 48), ("enc.1.v.lora_B.w", 40),
          ("head.bias", 2), ("head.weight", 30))


def test_a_per_module_projection_maps_each_module_into_its_own_block() -> None:
    projector = Projector(LAYOUT, dim=64, seed=1, per_module=True)
    assert projector.modules == ("enc.0.q", "enc.1.v", "head")
    assert projector.block_slices == ((0, 22), (22, 43), (43, 64))
    grads = torch.randn(20, 208, generator=torch.Generator().manual_seed(0))
    full = projector.project(grads)
    only_head = grads.clone()
    only_head[:, :176] = 0
    part = projector.project(only_head)
    assert torch.count_nonzero(part[:, :43]) == 0 and torch.equal(part[:, 43:], full[:, 43:])
    # a per-module index never answers a global query, and vice versa
    assert projector.layout_sha256 != Projector(LAYOUT, dim=64, seed=1).layout_sha256
    with pytest.raises(ValueError, match="below the number of modules"):
        Projector(LAYOUT, dim=2, seed=1, per_module=True).block_slices


def test_the_block_diagonal_preconditioner_inverts_each_block_with_its_own_damping() -> None:
    rng = np.random.default_rng(0)
    g = np.hstack([rng.normal(size=(80, 10)) * 100.0, rng.normal(size=(80, 6))])  # two modules, 100x apart
    blocks = ((0, 10), (10, 16))
    pre = fit_preconditioner(g, damping_ratio=2.0, blocks=blocks)
    x = rng.normal(size=(5, 16))
    expected = []
    for a, b in blocks:
        fisher = g[:, a:b].T @ g[:, a:b] / len(g)
        damping = 2.0 * np.trace(fisher) / (b - a)
        expected.append(np.linalg.solve(fisher + damping * np.eye(b - a), x[:, a:b].T).T)
    assert np.allclose(pre.apply(x), np.hstack(expected), rtol=1e-9, atol=1e-12)
    # one global block would damp the small module by the large one's scale: its part almost vanishes
    global_part = fit_preconditioner(g, damping_ratio=2.0).apply(x)[:, 10:]
    assert np.linalg.norm(global_part) < 1e-2 * np.linalg.norm(np.hstack(expected)[:, 10:])
    with pytest.raises(CurvatureError, match="tile"):
        fit_preconditioner(g, blocks=((0, 10), (11, 16)))


def test_neighbour_disagreement_flags_the_flipped_row_not_the_hard_clean_one() -> None:
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 32)) * 3
    g = np.vstack([c * rng.uniform(0.5, 1.5) + rng.normal(size=(40, 32)) for c in centres])
    flipped, hard = 7, 55
    g[flipped] = -1.0 * centres[0] + rng.normal(size=32)  # same pattern, the other label: the sign flips
    g[hard] = 4.0 * centres[1] + rng.normal(size=32)  # a clean row the model fits badly: large, same sign
    vectors, self_influence = training_vectors(g, fit_preconditioner(g, 10.0))
    suspicion = neighbour_disagreement(g, vectors)
    assert int(np.argmax(suspicion)) == flipped
    assert suspicion[hard] < np.median(suspicion)  # its neighbours support it
    assert np.array_equal(neighbour_disagreement(g, vectors), suspicion)  # deterministic


def test_mislabel_suspicion_ranks_a_memorised_flip_and_an_unfitted_one_above_clean_rows() -> None:
    """Two ways a wrong label shows: neighbours oppose a memorised one (whose self-influence is only
    in the top quarter, as the benchmark's flipped classifier rows are), an unfitted one keeps a large
    gradient and self-influence; the combined rank puts both above every clean row."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(4, 32)) * 3
    g = np.vstack([c * rng.uniform(0.5, 1.5) + rng.normal(size=(40, 32)) for c in centres])
    memorised, unfitted = 7, 90
    g[memorised] = -1.0 * centres[0] + 2.0 * rng.normal(size=32)  # fitted, and against its pattern
    g[unfitted] = -6.0 * centres[2] + rng.normal(size=32)  # not fitted: large, and against its pattern
    vectors, self_influence = training_vectors(g, fit_preconditioner(g, 10.0))
    neighbours = neighbour_disagreement(g, vectors)
    suspicion = mislabel_suspicion(neighbours, self_influence)
    clean = np.delete(np.arange(len(g)), [memorised, unfitted])
    assert (self_influence > self_influence[memorised]).sum() > 10  # self-influence alone ranks it low
    assert suspicion[memorised] > suspicion[clean].max() and suspicion[unfitted] > suspicion[clean].max()
    assert np.array_equal(mislabel_suspicion(neighbours, self_influence), suspicion)  # deterministic
    assert 0.0 <= suspicion.min() and suspicion.max() < 1.0
    # the weights: the two ranks count equally (ranks 2/3, 0, 1/3 and 1/3, 2/3, 0)
    np.testing.assert_allclose(mislabel_suspicion(np.array([3.0, 1.0, 2.0]), np.array([2.0, 3.0, 1.0])),
                               np.array([1 / 2, 1 / 3, 1 / 6]))
    with pytest.raises(CurvatureError):
        mislabel_suspicion(neighbours, self_influence[:-1])


def test_a_module_index_round_trips_and_an_older_index_reads_as_global() -> None:
    projector = Projector(LAYOUT, dim=64, seed=2, per_module=True)
    grads = projector.project(torch.randn(30, 208, generator=torch.Generator().manual_seed(3)))
    settings = IndexSettings(projection_dim=64, seed=2, curvature="module")
    assert IndexSettings().curvature == "global"  # the shipped default (see index.CURVATURES)
    index = index_from_projected(grads, contribution_ids=range(30), row_indices=[0] * 30, label_ids=[0] * 30,
                                 texts=[f"row {i} {'x' * i}" for i in range(30)], settings=settings,
                                 adapter_sha256="a", layout_sha256=projector.layout_sha256,
                                 blocks=projector.block_slices)
    loaded = AttributionIndex.from_bytes(index.to_bytes())
    assert loaded.settings == settings and np.array_equal(mislabel_scores(loaded), mislabel_scores(index))
    assert index.bytes_per_example == 64 * 4 + 40
    legacy = AttributionIndex(index.gradients, index.contribution_ids, index.row_indices, index.label_ids,
                              IndexSettings(projection_dim=64, seed=2, curvature="global"), "a", "b",
                              index.self_influence)
    assert np.array_equal(mislabel_scores(legacy), index.self_influence.astype(np.float64))

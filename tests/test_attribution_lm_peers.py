"""The peers (TRAK, Kronfluence, dattri) on the attribution benchmark's causal-LM task (bench/attribution/peers_lm.py).

The loss and snapshot checks run in the product's venv; the peer runs skip unless their package is
importable (bench/.venv-attribution: `bench/.venv-attribution/bin/python -m pytest -q tests/test_attribution_lm_peers.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attribution import lm_model, peers_lm as peers  # noqa: E402
from bench.attribution.harness import Trained  # noqa: E402
from bench.attribution.lm_backend import LmBackend, LmConfig  # noqa: E402
from bench.attribution.tasks import causal_task  # noqa: E402

SETTINGS = lm_model.LmSettings(epochs=2, batch_size=8, learning_rate=1e-2)  # random-init base: no cache needed


@pytest.fixture(scope="module")
def setup() -> tuple[LmBackend, Trained, list]:
    torch.manual_seed(0)
    task = causal_task(rows_per_skill=4, bulk_rows=4, test_per_skill=1)
    backend = LmBackend(task, LmConfig(SETTINGS))
    trained = backend.train(list(range(len(task.train))))
    return backend, trained, list(task.train)


def test_the_base_is_evaluated_once_and_reported_first(setup) -> None:  # type: ignore[no-untyped-def]
    backend, trained, _ = setup
    assert [entry["model"] for entry in backend.per_skill][:1] == ["base (no fine-tune)"]
    assert len(backend.per_skill) == 2  # the base, then the one trained model
    base = backend.base_losses()
    assert base.shape == trained.test_losses.shape and backend.base_losses() is base and len(backend.per_skill) == 2


def test_peer_row_loss_is_the_benchmark_row_loss_at_any_padding(setup) -> None:  # type: ignore[no-untyped-def]
    backend, trained, rows = setup
    model = trained.model.model
    width = peers.lm_width(rows, backend.test_rows) + 5  # wider than any row: padding must not matter
    ids, mask, loss_mask = peers._lm_tensors(rows, width)
    assert ids.shape == (len(rows), width) and mask.sum() < mask.numel()
    params = {n: p.detach() for n, p in lm_model.trainable(model)}
    with torch.no_grad():
        reference = lm_model.row_losses(model, rows)
        one = torch.stack([peers.lm_row_loss(model, params, ids[i], loss_mask[i]) for i in range(len(rows))])
        summed = peers.lm_row_loss(model, params, ids, loss_mask)
    assert torch.allclose(one, reference, atol=1e-5), (one - reference).abs().max()
    assert torch.allclose(summed, reference.sum(), rtol=1e-5)
    grad = torch.func.grad(lambda p: peers.lm_row_loss(model, p, ids[0], loss_mask[0]))(params)
    flat = torch.cat([grad[n].reshape(-1) for n in params])
    assert torch.allclose(flat, lm_model.per_example_gradients(model, rows[:1])[0], atol=1e-5)


def test_tracin_snapshots_replay_the_seeded_run(setup) -> None:  # type: ignore[no-untyped-def]
    backend, trained, rows = setup
    epochs, snapshots = backend.epoch_checkpoints(trained, rows, snapshots=2)
    assert epochs == [1, 2] and len(snapshots) == 2
    final = dict(lm_model.trainable(trained.model.model))
    assert all(torch.equal(snapshots[-1][n], p) for n, p in final.items())
    assert any(not torch.equal(snapshots[0][n], p) for n, p in final.items())  # epoch 1 is not the end
    replay = lm_model.train_lm(rows, SETTINGS).model  # the replay's premise: the same rows give the same bits
    assert all(torch.equal(p, final[n]) for n, p in lm_model.trainable(replay))


@pytest.mark.parametrize("name,package", [("TRAK", "trak"), ("Kronfluence", "kronfluence"),
                                          ("dattri-TracIn", "dattri")])
def test_peer_scores_every_test_row_against_every_training_row(setup, name: str, package: str) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip(package)
    backend, trained, rows = setup
    out = peers.causal_runners(backend, [name])[name](trained, rows, True)
    assert out.scores.shape == (len(backend.test_rows), len(rows)) and np.isfinite(out.scores).all()
    assert out.self_scores is not None and out.self_scores.shape == (len(rows),)
    feats = backend.features(trained, rows)
    grad_dot = feats.test.astype(np.float64) @ feats.train.astype(np.float64).T
    corr = float(np.corrcoef(out.scores.ravel(), grad_dot.ravel())[0, 1])
    if name == "TRAK":  # its inverse kernel at proj_dim 12 on 24 rows decorrelates it from the raw dot product;
        # a row's score on itself is phi' (Phi'Phi + l)^-1 phi (1 - p) >= 0 whatever the projection
        assert (out.self_scores >= 0).all() and out.scores.std() > 0, out.self_scores
    elif name == "dattri-TracIn":  # lr x grad-dot over two snapshots, through a 512-dim projection
        assert corr > 0.5, corr
    # Kronfluence: its sign is set by grad-dot; its wiring is checked at identity curvature below


def test_kronfluence_wiring_at_identity_curvature_is_grad_dot(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With no curvature, Kronfluence's pairwise score is the dot product of the two rows' loss gradients:
    the LM task's losses, masks and tracked LoRA modules are wired as ours and grad-dot see them."""
    pytest.importorskip("kronfluence")
    backend, trained, rows = setup
    out = peers.run_kronfluence_lm(trained, rows, backend.test_rows, False, str(tmp_path), None, strategy="identity")
    feats = backend.features(trained, rows)
    grad_dot = feats.test.astype(np.float64) @ feats.train.astype(np.float64).T
    assert np.allclose(out.scores, grad_dot, rtol=1e-3, atol=1e-4 * np.abs(grad_dot).max())

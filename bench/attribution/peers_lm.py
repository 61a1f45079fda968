"""The peers (TRAK, Kronfluence, dattri) on the causal-LM task: the small Llama + LoRA (lm_model.py),
with the classification adapters' settings (peers.py, whose helpers these share).

Imported only when peers are requested (they live in bench/.venv-attribution).
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from bench.attribution.harness import Trained
from bench.attribution.methods import MethodOutput
from bench.attribution.peers import (PEERS, TRAK_PROJ_DIM, _trainable_only, _trak_block, checked_peers,
                                     dattri_if_output, grad_dot_reference, kronfluence_output)
from bench.attribution.tasks import Row

# -- the causal-LM task --------------------------------------------------------------------------
# The same three peers on the small Llama + LoRA (lm_model.py). Every peer scores one row by the loss
# ours and grad-dot differentiate (lm_model.row_losses: the mean cross-entropy of the completion tokens
# and EOS given the prompt). Rows are right-padded to one width with no attention mask: attention is
# causal, so padding after a row's last token cannot change its scored positions (bit-identical to
# row_losses, checked by tests/test_attribution_lm_peers.py), and vmapped peers need one shape.
def _lm_tensors(rows: Sequence[Row], width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, loss mask) for rows, right-padded to `width` tokens."""
    from bench.attribution import lm_model

    ids, mask, loss_mask = lm_model._encode(rows)
    pad = width - ids.shape[1]
    if pad < 0:
        raise ValueError(f"rows are {ids.shape[1]} tokens wide, more than the common width {width}")
    ids = F.pad(ids, (0, pad), value=lm_model.ByteTokenizer().pad_token_id)  # never attended to by a scored position
    return ids, F.pad(mask, (0, pad)), F.pad(loss_mask, (0, pad))


def lm_width(*row_sets: Sequence[Row]) -> int:
    from bench.attribution import lm_model

    return max(lm_model._encode(list(rows))[0].shape[1] for rows in row_sets if rows)


def _token_nll(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy of the next token; one-hot, not gather: vmap-safe."""
    onehot = torch.arange(logits.shape[-1]) == ids[..., 1:, None]
    return -(torch.log_softmax(logits[..., :-1, :], -1) * onehot).sum(-1)


def lm_row_loss(model: torch.nn.Module, params: Any, ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """lm_model.row_losses for one row (ids (W,)) or a batch (ids (B, W), summed), through functional_call."""
    single = ids.dim() == 1
    batch_ids = ids[None] if single else ids
    lmask = loss_mask[None] if single else loss_mask
    logits = functional_call(model, params, (batch_ids,)).logits
    per_row = (_token_nll(logits, batch_ids) * lmask).sum(-1) / lmask.sum(-1)
    return per_row[0] if single else per_row.sum()


def _lm_private(trained: Trained) -> torch.nn.Module:
    """A private copy of the trained LoRA LM (peers wrap its modules or load state dicts into it)."""
    return copy.deepcopy(trained.model.model)


def _lora_names(model: torch.nn.Module) -> list[str]:
    from bench.attribution import lm_model

    return [n for n, _ in lm_model.trainable(model)]


def run_trak_lm(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                workdir: str) -> MethodOutput:
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput
    from trak.projectors import BasicProjector, ProjectionType

    model = _lm_private(trained)
    trainable = _lora_names(model)
    width = lm_width(rows, test_rows)

    class CompletionMarginOutput(AbstractModelOutput):
        """TRAK's margin per completion token (log p / (1 - p) of the reference token), averaged over
        the completion like the row loss; out-to-loss: the matching mean of (1 - p)."""

        def __init__(self) -> None:
            super().__init__()

        @staticmethod
        def get_output(model, weights, buffers, ids, loss_mask):  # type: ignore[no-untyped-def]
            logits = functional_call(model, (weights, buffers), (ids[None],)).logits[0, :-1]
            onehot = torch.arange(logits.shape[-1]) == ids[1:, None]
            correct = (logits * onehot).sum(-1)
            others = logits.masked_fill(onehot, -torch.inf).logsumexp(-1)
            return ((correct - others) * loss_mask).sum() / loss_mask.sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):  # type: ignore[no-untyped-def]
            ids, loss_mask = batch
            logits = functional_call(model, (weights, buffers), (ids,)).logits
            p = torch.exp(-_token_nll(logits, ids))
            return (((1 - p) * loss_mask).sum(-1) / loss_mask.sum(-1)).detach().unsqueeze(-1)

    n_params = sum(p.numel() for n, p in model.named_parameters() if n in set(trainable))
    proj_dim = min(TRAK_PROJ_DIM, len(rows) // 2)
    started = time.perf_counter()
    projector = BasicProjector(grad_dim=n_params, proj_dim=proj_dim, seed=0, proj_type=ProjectionType.normal,
                               device="cpu", dtype=torch.float32, block_size=_trak_block(proj_dim))
    traker = TRAKer(model=model, task=CompletionMarginOutput(), train_set_size=len(rows), save_dir=workdir,
                    load_from_save_dir=True, device="cpu", gradient_computer=_trainable_only(trainable),
                    projector=projector, use_half_precision=False, grad_wrt=trainable, lambda_reg=1e-3,
                    logging_level=40)
    traker.load_checkpoint(model.state_dict(), model_id=0)
    ids, _, loss_mask = _lm_tensors(rows, width)
    for start in range(0, len(rows), 32):
        traker.featurize(batch=(ids[start:start + 32], loss_mask[start:start + 32]),
                         num_samples=min(32, len(rows) - start))
    traker.finalize_features()
    build = time.perf_counter() - started

    def score(targets: Sequence[Row], exp: str) -> np.ndarray:
        t_ids, _, t_loss_mask = _lm_tensors(targets, width)
        traker.start_scoring_checkpoint(exp_name=exp, checkpoint=model.state_dict(), model_id=0,
                                        num_targets=len(targets))
        for start in range(0, len(targets), 32):
            traker.score(batch=(t_ids[start:start + 32], t_loss_mask[start:start + 32]),
                         num_samples=min(32, len(targets) - start))
        return np.asarray(traker.finalize_scores(exp_name=exp), dtype=np.float64).T

    started = time.perf_counter()
    scores = score(test_rows, "test")
    query = (time.perf_counter() - started) / len(test_rows)
    self_scores = np.diag(score(rows, "self")).copy() if need_self else None
    return MethodOutput("TRAK", scores, self_scores, "self-influence (TRAK score of a row on itself)", build, query,
                        proj_dim * 4.0,
                        [f"traker 0.3.2, 1 checkpoint (no ensemble), proj_dim {proj_dim}, lambda_reg 1e-3, "
                         "output: completion-token margin, mean over the completion"])


def run_kronfluence_lm(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                       workdir: str, reference: np.ndarray | None, strategy: str = "ekfac") -> MethodOutput:
    """EK-FAC influence of every training row on every test row's completion loss ('identity': plain
    grad-dot through Kronfluence, which the test uses to check this wiring)."""
    from kronfluence.task import Task

    model = _lm_private(trained)
    tracked = sorted({n.rsplit(".", 1)[0] for n in _lora_names(model)})  # every lora_A/B.default Linear
    width = lm_width(rows, test_rows)

    def completion_loss(logits: torch.Tensor, ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
        return ((_token_nll(logits, ids) * loss_mask).sum(-1) / loss_mask.sum(-1)).sum()

    class LmTask(Task):
        def compute_train_loss(self, batch: Any, model: torch.nn.Module, sample: bool = False) -> torch.Tensor:
            logits = model(batch["input_ids"]).logits
            if not sample:
                return completion_loss(logits, batch["input_ids"], batch["loss_mask"])
            with torch.no_grad():  # the true Fisher: completion tokens drawn from the model itself
                probs = torch.softmax(logits[:, :-1].detach(), -1)
                drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).view(probs.shape[:-1])
                ids = torch.cat([batch["input_ids"][:, :1], drawn], 1)
            return completion_loss(logits, ids, batch["loss_mask"])

        def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
            return completion_loss(model(batch["input_ids"]).logits, batch["input_ids"], batch["loss_mask"])

        def get_influence_tracked_modules(self) -> list[str]:
            return tracked

        def get_attention_mask(self, batch: Any) -> torch.Tensor:
            return batch["attention_mask"]  # padding tokens stay out of the covariances

    class Rows(torch.utils.data.Dataset):
        def __init__(self, items: Sequence[Row]):
            self.ids, self.mask, self.loss_mask = _lm_tensors(items, width)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "loss_mask": self.loss_mask[i]}

    shapes = [p.shape for n, p in model.named_parameters() if ".lora_" in n and p.requires_grad]
    return kronfluence_output(model, LmTask(), Rows(rows), Rows(test_rows), analysis="lm", strategy=strategy,
                              weight_shapes=shapes, tracked="every LoRA A/B (28 modules x 2)", need_self=need_self,
                              reference=reference, workdir=workdir)


def _dattri_lm_task(trained: Trained, checkpoints: Sequence[dict[str, torch.Tensor]]):  # type: ignore[no-untyped-def]
    from dattri.task import AttributionTask

    model = _lm_private(trained)

    def loss_func(params: dict[str, torch.Tensor], data: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """One row under vmap (TracIn) or a batch (the mean of its row losses, for Arnoldi's HVPs)."""
        ids, loss_mask = data
        loss = lm_row_loss(model, params, ids, loss_mask)
        return loss if ids.dim() == 1 else loss / ids.shape[0]

    def load(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in state.items():
                params[name].copy_(value)
        return model

    return AttributionTask(loss_func=loss_func, model=model, checkpoints=list(checkpoints),
                           checkpoints_load_func=load)


def _lm_loader(rows: Sequence[Row], width: int, batch_size: int) -> torch.utils.data.DataLoader:
    ids, _, loss_mask = _lm_tensors(rows, width)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(ids, loss_mask), batch_size=batch_size,
                                       shuffle=False)


def run_dattri_tracin_lm(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                         learning_rate: float, checkpoints: Sequence[dict[str, torch.Tensor]],
                         epochs: Sequence[int]) -> MethodOutput:
    """TracIn over LoRA snapshots at the given epochs (lr x grad-dot summed), projected to 512 like classification."""
    from dattri.algorithm.tracin import TracInAttributor

    task = _dattri_lm_task(trained, checkpoints)
    width = lm_width(rows, test_rows)
    attributor = TracInAttributor(task=task, weight_list=torch.full((len(checkpoints),), learning_rate),
                                  normalized_grad=False, projector_kwargs={"proj_dim": 512, "device": "cpu"},
                                  device="cpu")
    started = time.perf_counter()
    scores = attributor.attribute(_lm_loader(rows, width, 128),
                                  _lm_loader(test_rows, width, len(test_rows))).double().numpy().T
    elapsed = time.perf_counter() - started
    self_scores = attributor.self_attribute(_lm_loader(rows, width, 128)).double().numpy() if need_self else None
    frac = len(rows) / (len(rows) + len(test_rows))
    return MethodOutput("dattri-TracIn", scores, self_scores, "self-influence (TracIn)", elapsed * frac,
                        elapsed * (1 - frac) / len(test_rows), 512 * 4.0 * len(checkpoints),
                        [f"dattri 0.3.0 TracInAttributor, LoRA snapshots after epochs {list(epochs)} (kept by "
                         "the trainer, as for ours), proj 512"])


def run_dattri_if_lm(trained: Trained, rows: Sequence[Row], test_rows: Sequence[Row], need_self: bool,
                     reference: np.ndarray | None) -> MethodOutput:
    model = trained.model.model
    task = _dattri_lm_task(trained, [{n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}])
    width = lm_width(rows, test_rows)
    return dattri_if_output(task, lambda: _lm_loader(rows, width, 128), _lm_loader(test_rows, width, len(test_rows)),
                            need_self, reference)


def causal_runners(backend: Any, names: Sequence[str]) -> dict[str, Callable[[Trained, Sequence[Row], bool], MethodOutput]]:
    """The peers on the causal-LM task (LmBackend): the same settings as classification_runners."""
    checked_peers(names)
    test_rows = backend.test_rows
    lr = backend.config.settings.learning_rate
    reference = grad_dot_reference(backend)

    def workdir() -> str:
        return tempfile.mkdtemp(prefix="bench-attr-lm-")

    def tracin(t: Trained, rows: Sequence[Row], s: bool) -> MethodOutput:
        epochs, checkpoints = backend.epoch_checkpoints(t, rows)
        return run_dattri_tracin_lm(t, rows, test_rows, s, lr, checkpoints, epochs)

    table = {
        "TRAK": lambda t, rows, s: run_trak_lm(t, rows, test_rows, s, workdir()),
        "Kronfluence": lambda t, rows, s: run_kronfluence_lm(t, rows, test_rows, s, workdir(), reference(t, rows)),
        "dattri-TracIn": tracin,
        "dattri-IF": lambda t, rows, s: run_dattri_if_lm(t, rows, test_rows, s, reference(t, rows)),
    }
    return {name: table[name] for name in PEERS if name in names}

"""The one training loop both tasks share: seeded epochs of shuffled mini-batches with AdamW,
per-step progress, a checkpoint after every epoch, resume, cancellation.

Determinism: the batch order comes from an explicit generator seeded with `seed`, and dropout
draws from the process-global RNG, which is seeded here inside `fork_rng` (so callers' RNG state
is untouched) and saved in every checkpoint. Same model init + data + settings + torch thread
count give bit-identical tensors, and a resumed run ends where an uninterrupted one does. Because
the dropout RNG is process-global, trainings in one process take turns (`TRAINING_LOCK`); on a
2-core machine running them side by side would gain nothing anyway.

Devices: the loop runs wherever the model's tensors are (the caller moves the model and each batch);
on a GPU it also seeds, saves and restores that GPU's RNG. Bit-identity is promised on the CPU only.
Under torchrun (`provenant.factory.replicas`) every global mini-batch is split across processes
and the gradients summed, so the step equals the single-process one up to float summation order;
only the main process checkpoints and reports progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from provenant.factory.replicas import Replicas

TRAINING_LOCK = threading.Lock()


class TrainingCancelled(RuntimeError):
    """Raised between steps when `Checkpoints.cancelled()` says so; the last checkpoint stays."""


class Checkpoints(Protocol):
    """Where a training saves its state after each epoch and reads it back to resume.

    A resumed training ends with the same adapter bytes as an uninterrupted one: the state holds
    the trainable tensors, the optimizer's moments, the batch-order generator and the global RNG
    (dropout), all as they were at the end of the last finished epoch."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, state: dict[str, Any]) -> None: ...

    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int


@dataclass(frozen=True)
class LoopResult:
    epoch_losses: list[float]  # weighted mean training loss of each epoch
    seconds: float  # wall time of this call's epochs (a resumed call counts only its own)
    examples_per_second: float
    # the adapter at the end of each epoch (the last is the final one): attribution indexes the
    # training rows at several of them (`attribution.snapshots.snapshot_epochs`). Kept in the resume
    # state, so a resumed training returns the same list as an uninterrupted one.
    epoch_adapters: tuple[bytes, ...] = ()


# The loss of one mini-batch (indices into the training set) and its weight in the epoch's mean
# (examples for a classifier, target tokens for a causal LM).
BatchLoss = Callable[[Sequence[int]], tuple[torch.Tensor, float]]


def run_epochs(model: nn.Module, params: Sequence[nn.Parameter], n: int, settings: LoopSettings,
               batch_loss: BatchLoss, *, save_adapter: Callable[[], bytes],
               load_adapter: Callable[[bytes], None],
               progress: Callable[[dict], None] | None = None,
               checkpoints: Checkpoints | None = None, device: torch.device | None = None,
               replicas: Replicas | None = None) -> LoopResult:
    """Train `params` of `model` for `settings.epochs` over `n` examples; resume from `checkpoints`.
    `replicas`: this process's place in a torchrun job (None: train alone)."""
    device = device or torch.device("cpu")
    gpus = [device] if device.type == "cuda" else []
    main = replicas is None or replicas.is_main
    save = main and checkpoints is not None
    progress = progress if main else None
    optimizer = torch.optim.AdamW(list(params), lr=settings.learning_rate, weight_decay=0.0)
    order_rng = torch.Generator().manual_seed(settings.seed)
    bs = settings.batch_size
    steps_per_epoch = -(-n // bs)
    epoch_losses: list[float] = []
    epoch_adapters: list[bytes] = []
    started = time.perf_counter()
    trained_examples = 0
    resumed = checkpoints.load() if checkpoints is not None else None
    with TRAINING_LOCK, torch.random.fork_rng(devices=gpus):  # dropout uses the global RNG: seed, then restore
        torch.manual_seed(settings.seed)  # seeds the CPU and every GPU generator
        first_epoch = 0
        if resumed is not None:
            load_adapter(resumed["adapter"])
            optimizer.load_state_dict(resumed["optimizer"])
            order_rng.set_state(resumed["order_rng"])
            torch.set_rng_state(resumed["global_rng"])
            if gpus and resumed.get("gpu_rng") is not None:
                torch.cuda.set_rng_state(resumed["gpu_rng"], device)
            epoch_losses = list(resumed["epoch_losses"])
            epoch_adapters = list(resumed.get("epoch_adapters", ()))
            first_epoch = len(epoch_losses)
        model.train()
        for epoch in range(first_epoch, settings.epochs):
            order = torch.randperm(n, generator=order_rng).tolist()
            total, weight = 0.0, 0.0
            for step, start in enumerate(range(0, n, bs)):
                if checkpoints is not None and checkpoints.cancelled():
                    raise TrainingCancelled(f"cancelled at epoch {epoch + 1}, step {step + 1}")
                idx = order[start:start + bs]
                optimizer.zero_grad(set_to_none=True)
                if replicas is None:
                    loss, w = batch_loss(idx)
                    loss.backward()
                    step_loss = loss.item()
                else:
                    step_loss, w = _replicated_step(replicas, idx, batch_loss, params)
                optimizer.step()
                total += step_loss * w
                weight += w
                trained_examples += len(idx)
                if progress is not None:
                    done = (epoch - first_epoch) * steps_per_epoch + step + 1
                    left = (settings.epochs - first_epoch) * steps_per_epoch - done
                    elapsed = time.perf_counter() - started
                    progress({"stage": "train", "epoch": epoch + 1, "epochs": settings.epochs, "step": step + 1,
                              "steps": steps_per_epoch, "loss": step_loss,
                              "examples_per_second": trained_examples / elapsed if elapsed > 0 else 0.0,
                              "eta_seconds": elapsed / done * left})
            epoch_losses.append(total / weight if weight > 0 else 0.0)
            if main:
                epoch_adapters.append(save_adapter())
            if save:
                checkpoints.save({"adapter": epoch_adapters[-1], "optimizer": optimizer.state_dict(),
                                  "order_rng": order_rng.get_state(), "global_rng": torch.get_rng_state(),
                                  "gpu_rng": torch.cuda.get_rng_state(device) if gpus else None,
                                  "epoch_losses": list(epoch_losses), "epoch_adapters": list(epoch_adapters)})
            if replicas is not None:
                replicas.barrier()  # the others wait while the main process writes its checkpoint
            if progress is not None:
                progress({"stage": "epoch", "epoch": epoch + 1, "epochs": settings.epochs,
                          "train_loss": epoch_losses[-1], "seconds": time.perf_counter() - started})
        model.eval()
    seconds = time.perf_counter() - started
    return LoopResult(epoch_losses=epoch_losses, seconds=seconds,
                      examples_per_second=trained_examples / seconds if seconds > 0 else 0.0,
                      # a state saved before adapters were kept leaves gaps: then none is returned
                      epoch_adapters=tuple(epoch_adapters) if len(epoch_adapters) == len(epoch_losses) else ())


def _replicated_step(replicas: Replicas, batch: Sequence[int], batch_loss: BatchLoss,
                     params: Sequence[nn.Parameter]) -> tuple[float, float]:
    """One data-parallel step: local loss scaled to the global batch, gradients summed. Returns the
    global batch's mean loss and weight, the numbers a single process would have seen."""
    local = replicas.shard(batch)
    loss, w = batch_loss(local) if local else (None, 0.0)
    local_loss = loss.item() if loss is not None else 0.0
    total_w, total_loss = replicas.totals(w, local_loss * w)
    if loss is not None and total_w > 0:
        (loss * (w / total_w)).backward()
    replicas.sum_gradients(params)
    return (total_loss / total_w if total_w > 0 else 0.0), total_w

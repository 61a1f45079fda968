"""Train a LoRA text classifier on Datanet rows, deterministically, on the CPU.

Read top to bottom: validate -> labels -> build model -> epochs of shuffled mini-batches with AdamW
-> evaluate -> serialise the trainable tensors. Same examples + settings + base model + torch thread
count give bit-identical `adapter_bytes` on one machine. All randomness comes from `settings.seed`:
an explicit generator for the initial weights and the batch order, and a forked (then restored)
global RNG for the dropout inside the base model, so callers' RNG state is untouched. Because that
dropout RNG is process-global, trainings in one process take turns (`_TRAINING_LOCK`); on a
2-core machine running them side by side would gain nothing anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from provenant.factory.base_models import DEFAULT_BASE_MODEL, load_base_model
from provenant.factory.model import (ADAPTER_FORMAT, LoraClassifier, adapter_to_bytes, build_lora_classifier,
                                     encode, example_loss, load_adapter_bytes, trainable_parameters)


_TRAINING_LOCK = threading.Lock()


@dataclass(frozen=True)
class Example:
    """One training row, traceable to its contribution."""

    text: str
    label: str
    contribution_id: int
    row_index: int  # index of the row inside its contribution file


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("query", "value")
    learning_rate: float = 1e-3
    epochs: int = 3
    batch_size: int = 16
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        problems = [msg for ok, msg in [
            (self.rank >= 1, "rank must be >= 1"),
            (self.alpha >= 1, "alpha must be >= 1"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (len(self.target_modules) >= 1, "target_modules must name at least one module"),
            (self.learning_rate > 0.0, "learning_rate must be > 0"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.max_length >= 2, "max_length must be >= 2"),
            (self.seed >= 0, "seed must be >= 0"),
        ] if not ok]
        if problems:
            raise ValueError("invalid LoRA settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """JSON-able, key order fixed; used in the training-config hash."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSettings":
        return cls(**{**data, "target_modules": tuple(data["target_modules"])})


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


@dataclass
class TrainedAdapter:
    adapter_bytes: bytes  # safetensors: every trainable tensor (LoRA + head), sorted by name
    config: dict  # JSON-able: format, task, base_model, labels (sorted), lora settings, pooling
    metrics: dict = field(default_factory=dict)  # train_loss per epoch, speed, eval accuracy/loss


def train_classifier(examples: Sequence[Example], settings: LoraSettings, base_model: str = DEFAULT_BASE_MODEL,
                     eval_examples: Sequence[Example] = (),
                     progress: Callable[[dict], None] | None = None,
                     checkpoints: Checkpoints | None = None) -> TrainedAdapter:
    """Fine-tune LoRA + a linear head on `examples`; return the adapter, its config and metrics."""
    adapter, _ = fit_classifier(examples, settings, base_model, eval_examples, progress, checkpoints)
    return adapter


def fit_classifier(examples: Sequence[Example], settings: LoraSettings, base_model: str = DEFAULT_BASE_MODEL,
                   eval_examples: Sequence[Example] = (),
                   progress: Callable[[dict], None] | None = None,
                   checkpoints: Checkpoints | None = None) -> tuple[TrainedAdapter, LoraClassifier]:
    """`train_classifier`, also returning the trained in-memory module (eval mode)."""
    if len(examples) == 0:
        raise ValueError("cannot train on zero examples")
    labels = sorted({ex.label for ex in examples})
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least 2 distinct labels, got {labels}")
    unknown = sorted({ex.label for ex in eval_examples} - set(labels))
    if unknown:
        raise ValueError(f"eval examples use labels absent from training: {unknown[:5]}")
    label_to_id = {label: i for i, label in enumerate(labels)}
    texts = [ex.text for ex in examples]
    targets = torch.tensor([label_to_id[ex.label] for ex in examples], dtype=torch.int64)

    base = load_base_model(base_model)
    model = build_lora_classifier(base, rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                                  target_modules=settings.target_modules, num_labels=len(labels),
                                  seed=settings.seed)
    params = [p for _, p in trainable_parameters(model)]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    order_rng = torch.Generator().manual_seed(settings.seed)

    n, bs = len(examples), settings.batch_size
    steps_per_epoch = -(-n // bs)
    epoch_losses: list[float] = []
    started = time.perf_counter()
    resumed = checkpoints.load() if checkpoints is not None else None
    with _TRAINING_LOCK, torch.random.fork_rng(devices=[]):  # dropout uses the global RNG: seed, then restore
        torch.manual_seed(settings.seed)
        first_epoch = 0
        if resumed is not None:
            load_adapter_bytes(model, resumed["adapter"])
            optimizer.load_state_dict(resumed["optimizer"])
            order_rng.set_state(resumed["order_rng"])
            torch.set_rng_state(resumed["global_rng"])
            epoch_losses = list(resumed["epoch_losses"])
            first_epoch = len(epoch_losses)
        model.train()
        for epoch in range(first_epoch, settings.epochs):
            order = torch.randperm(n, generator=order_rng).tolist()
            total = 0.0
            for step, start in enumerate(range(0, n, bs)):
                if checkpoints is not None and checkpoints.cancelled():
                    raise TrainingCancelled(f"cancelled at epoch {epoch + 1}, step {step + 1}")
                idx = order[start:start + bs]
                input_ids, attention_mask = encode(base.tokenizer, [texts[i] for i in idx], settings.max_length)
                loss = example_loss(model(input_ids, attention_mask), targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
                if progress is not None:
                    done = (epoch - first_epoch) * steps_per_epoch + step + 1
                    left = (settings.epochs - first_epoch) * steps_per_epoch - done
                    elapsed = time.perf_counter() - started
                    progress({"stage": "train", "epoch": epoch + 1, "epochs": settings.epochs, "step": step + 1,
                              "steps": steps_per_epoch, "loss": loss.item(),
                              "examples_per_second": done * bs / elapsed if elapsed > 0 else 0.0,
                              "eta_seconds": elapsed / done * left})
            epoch_losses.append(total / n)
            if checkpoints is not None:
                checkpoints.save({"adapter": adapter_to_bytes(model), "optimizer": optimizer.state_dict(),
                                  "order_rng": order_rng.get_state(), "global_rng": torch.get_rng_state(),
                                  "epoch_losses": list(epoch_losses)})
            if progress is not None:
                progress({"stage": "epoch", "epoch": epoch + 1, "epochs": settings.epochs,
                          "train_loss": epoch_losses[-1], "seconds": time.perf_counter() - started})
        model.eval()
    seconds = time.perf_counter() - started

    metrics: dict = {"train_loss": epoch_losses, "seconds": seconds, "examples": n,
                     "examples_per_second": n * settings.epochs / seconds if seconds > 0 else 0.0,
                     "threads": torch.get_num_threads()}
    if eval_examples:
        metrics.update(evaluate(model, base.tokenizer, eval_examples, label_to_id, settings))
        if progress is not None:
            progress({"stage": "eval", "eval_accuracy": metrics["eval_accuracy"], "eval_loss": metrics["eval_loss"]})
    config = {"format": ADAPTER_FORMAT, "task": "classification", "base_model": base_model, "labels": labels,
              "lora": settings.to_dict(), "pooling": "mean"}
    return TrainedAdapter(adapter_bytes=adapter_to_bytes(model), config=config, metrics=metrics), model


@torch.no_grad()
def evaluate(model: LoraClassifier, tokenizer, examples: Sequence[Example], label_to_id: dict[str, int],
             settings: LoraSettings) -> dict:
    """Accuracy and mean cross-entropy of `model` (eval mode) on labelled examples."""
    correct, loss_sum = 0, 0.0
    for start in range(0, len(examples), settings.batch_size):
        chunk = examples[start:start + settings.batch_size]
        targets = torch.tensor([label_to_id[ex.label] for ex in chunk], dtype=torch.int64)
        logits = model(*encode(tokenizer, [ex.text for ex in chunk], settings.max_length))
        loss_sum += example_loss(logits, targets).item() * len(chunk)
        correct += int((logits.argmax(dim=-1) == targets).sum())
    return {"eval_accuracy": correct / len(examples), "eval_loss": loss_sum / len(examples),
            "eval_examples": len(examples)}

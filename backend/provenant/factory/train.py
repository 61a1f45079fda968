"""Train a LoRA text classifier on Datanet rows: bit-reproducibly on the CPU, or on a GPU.

Read top to bottom: validate -> labels -> build model -> epochs of shuffled mini-batches with AdamW
-> evaluate -> serialise the trainable tensors. Same examples + settings + base model + torch thread
count give bit-identical `adapter_bytes` on one machine. All randomness comes from `settings.seed`:
an explicit generator for the initial weights and the batch order, and a forked (then restored)
global RNG for the dropout inside the base model, so callers' RNG state is untouched. The epochs,
checkpoints, resume and cancellation are the shared loop of `provenant.factory.loop`; the device
choice and the torchrun data-parallel path are `provenant.factory.devices` and `.replicas`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from provenant.factory.base_models import DEFAULT_BASE_MODEL, load_base_model
from provenant.factory.devices import describe, module_on, resolve_device
from provenant.factory.loop import Checkpoints, LoopSettings, TrainingCancelled, run_epochs
from provenant.factory.model import (ADAPTER_FORMAT, LoraClassifier, adapter_to_bytes, build_lora_classifier,
                                     encode, example_loss, load_adapter_bytes, trainable_parameters)
from provenant.factory.replicas import Replicas

__all__ = ["Checkpoints", "Example", "LoraSettings", "TrainedAdapter", "TrainingCancelled", "evaluate",
           "fit_classifier", "train_classifier"]


@dataclass(frozen=True)
class Example:
    """One training row, traceable to its contribution."""

    text: str
    label: str
    contribution_id: int
    row_index: int  # index of the row inside its contribution file
    datanet_id: int = 0  # 0: not known (rows not read from a Datanet); per-Datanet metrics group by it


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
    quantize_base: str = "none"  # "nf4": QLoRA over a 4-bit base (causal LMs, CUDA + bitsandbytes only)

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
            (self.quantize_base in ("none", "nf4"), "quantize_base must be none or nf4"),
        ] if not ok]
        if problems:
            raise ValueError("invalid LoRA settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """JSON-able, key order fixed; used in the training-config hash. `quantize_base` appears only
        when set, so every configuration that existed before it keeps its hash."""
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        if self.quantize_base == "none":
            del data["quantize_base"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LoraSettings":
        return cls(**{**data, "target_modules": tuple(data["target_modules"])})


@dataclass
class TrainedAdapter:
    adapter_bytes: bytes  # safetensors: every trainable tensor (LoRA + head), sorted by name
    config: dict  # JSON-able: format, task, base_model, labels (sorted), lora settings, pooling
    metrics: dict = field(default_factory=dict)  # train_loss per epoch, speed, eval accuracy/loss
    # the adapter after each epoch (the last equals adapter_bytes; empty when a resumed training's
    # state predates them): what attribution indexes at several points of the run
    epoch_adapters: tuple[bytes, ...] = field(default=(), repr=False)


def train_classifier(examples: Sequence[Example], settings: LoraSettings, base_model: str = DEFAULT_BASE_MODEL,
                     eval_examples: Sequence[Example] = (),
                     progress: Callable[[dict], None] | None = None,
                     checkpoints: Checkpoints | None = None, device: str | None = None) -> TrainedAdapter:
    """Fine-tune LoRA + a linear head on `examples`; return the adapter, its config and metrics."""
    adapter, _ = fit_classifier(examples, settings, base_model, eval_examples, progress, checkpoints, device)
    return adapter


def fit_classifier(examples: Sequence[Example], settings: LoraSettings, base_model: str = DEFAULT_BASE_MODEL,
                   eval_examples: Sequence[Example] = (),
                   progress: Callable[[dict], None] | None = None,
                   checkpoints: Checkpoints | None = None,
                   device: str | None = None) -> tuple[TrainedAdapter, LoraClassifier]:
    """`train_classifier`, also returning the trained CPU module (eval mode). `device`: "auto"
    (CUDA when present), "cpu", "cuda" or "cuda:N"; under torchrun, data-parallel."""
    if len(examples) == 0:
        raise ValueError("cannot train on zero examples")
    if settings.quantize_base != "none":
        raise ValueError(f"quantize_base={settings.quantize_base!r} (QLoRA) is for causal-LM bases; "
                         "classifier bases train in float32")
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
    where = resolve_device(device)
    replicas = Replicas.from_env(where)
    cpu_model = build_lora_classifier(base, rank=settings.rank, alpha=settings.alpha, dropout=settings.dropout,
                                      target_modules=settings.target_modules, num_labels=len(labels),
                                      seed=settings.seed)
    model = module_on(cpu_model, where)
    targets = targets.to(where)

    def batch_loss(idx: Sequence[int]) -> tuple[torch.Tensor, float]:
        input_ids, attention_mask = encode(base.tokenizer, [texts[i] for i in idx], settings.max_length)
        logits = model(input_ids.to(where), attention_mask.to(where))
        return example_loss(logits, targets[list(idx)]), float(len(idx))

    result = run_epochs(model, [p for _, p in trainable_parameters(model)], len(examples),
                        LoopSettings(epochs=settings.epochs, batch_size=settings.batch_size,
                                     learning_rate=settings.learning_rate, seed=settings.seed),
                        batch_loss, save_adapter=lambda: adapter_to_bytes(model),
                        load_adapter=lambda data: load_adapter_bytes(model, data),
                        progress=progress, checkpoints=checkpoints, device=where, replicas=replicas)
    n, epoch_losses, seconds = len(examples), result.epoch_losses, result.seconds

    metrics: dict = {"train_loss": epoch_losses, "seconds": seconds, "examples": n,
                     "examples_per_second": result.examples_per_second,
                     "threads": torch.get_num_threads(), "device": describe(where),
                     "processes": replicas.world if replicas else 1}
    if eval_examples:
        metrics.update(evaluate(model, base.tokenizer, eval_examples, label_to_id, settings, where))
        if progress is not None:
            progress({"stage": "eval", "eval_accuracy": metrics["eval_accuracy"], "eval_loss": metrics["eval_loss"]})
    config = {"format": ADAPTER_FORMAT, "task": "classification", "base_model": base_model, "labels": labels,
              "lora": settings.to_dict(), "pooling": "mean"}
    adapter_bytes = adapter_to_bytes(model)
    if model is not cpu_model:
        load_adapter_bytes(cpu_model, adapter_bytes)  # what attribution and serving see: the CPU module
    return (TrainedAdapter(adapter_bytes=adapter_bytes, config=config, metrics=metrics,
                           epoch_adapters=result.epoch_adapters), cpu_model)


@torch.no_grad()
def evaluate(model: LoraClassifier, tokenizer, examples: Sequence[Example], label_to_id: dict[str, int],
             settings: LoraSettings, device: torch.device | None = None) -> dict:
    """Accuracy and mean cross-entropy of `model` (eval mode) on labelled examples."""
    correct, loss_sum, where = 0, 0.0, device or torch.device("cpu")
    for start in range(0, len(examples), settings.batch_size):
        chunk = examples[start:start + settings.batch_size]
        targets = torch.tensor([label_to_id[ex.label] for ex in chunk], dtype=torch.int64, device=where)
        logits = model(*(t.to(where) for t in encode(tokenizer, [ex.text for ex in chunk], settings.max_length)))
        loss_sum += example_loss(logits, targets).item() * len(chunk)
        correct += int((logits.argmax(dim=-1) == targets).sum())
    return {"eval_accuracy": correct / len(examples), "eval_loss": loss_sum / len(examples),
            "eval_examples": len(examples)}

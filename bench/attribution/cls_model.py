"""The classification side: train with the factory's own trainer, read losses and gradients.

Training is `provenant.factory.train.fit_classifier` (the code path every Factory model takes), so
"ours" is measured on exactly what production indexes. Epoch-end adapters are captured through the
trainer's `Checkpoints` hook for multi-checkpoint TracIn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.attribution.tasks import Row
from provenant.factory.model import encode, trainable_parameters
from provenant.factory.train import Example, LoraSettings, fit_classifier
from provenant.serving.engine import Classifier

LABELS = ("false", "true")


@dataclass
class TrainedCls:
    classifier: Classifier
    seconds: float
    epoch_adapters: list[bytes]  # adapter bytes at the end of each epoch (the last is the final model)
    config: dict


class _EpochCapture:
    """Implements the trainer's Checkpoints protocol: keeps each epoch's adapter, never resumes."""

    def __init__(self) -> None:
        self.adapters: list[bytes] = []

    def load(self) -> dict[str, Any] | None:
        return None

    def save(self, state: dict[str, Any]) -> None:
        self.adapters.append(state["adapter"])

    def cancelled(self) -> bool:
        return False


def to_examples(rows: Sequence[Row], ids: Sequence[int] | None = None) -> list[Example]:
    """Each training row is its own contribution (id = 1 + row number), so example-level scores are kept."""
    ids = list(range(len(rows))) if ids is None else list(ids)
    return [Example(text=rows[i].text, label=rows[i].label, contribution_id=1 + i, row_index=0) for i in ids]


def train_cls(rows: Sequence[Row], ids: Sequence[int], settings: LoraSettings, base_model: str) -> TrainedCls:
    examples = to_examples(rows, ids)
    if {ex.label for ex in examples} != set(LABELS):
        raise ValueError("a training subset must hold both labels")
    capture = _EpochCapture()
    started = time.perf_counter()
    adapter, model = fit_classifier(examples, settings, base_model, checkpoints=capture)
    seconds = time.perf_counter() - started
    from provenant.factory.base_models import load_base_model

    classifier = Classifier(model, load_base_model(base_model), list(LABELS), settings.max_length, adapter.config)
    return TrainedCls(classifier, seconds, capture.adapters, adapter.config)


@torch.no_grad()
def per_example_losses(classifier: Classifier, rows: Sequence[Row], batch: int = 64) -> np.ndarray:
    """Cross-entropy of each row at its label (float64)."""
    out = []
    targets = torch.tensor([classifier.label_to_id[r.label] for r in rows], dtype=torch.int64)
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        logits = classifier.model(*encode(classifier.base.tokenizer, [r.text for r in chunk], classifier.max_length))
        out.append(torch.nn.functional.cross_entropy(logits, targets[start:start + batch], reduction="none"))
    return torch.cat(out).double().numpy()


def accuracy(classifier: Classifier, rows: Sequence[Row]) -> float:
    preds = [p.label for p in classifier.predict([r.text for r in rows])]
    return float(np.mean([p == r.label for p, r in zip(preds, rows)]))


def layer_groups(classifier: Classifier) -> list[tuple[str, int, int]]:
    """(module name, start, stop) slices of the flattened gradient, one per LoRA module / the head:
    the 'layers' of DataInf's layer-wise closed form."""
    groups: list[tuple[str, int, int]] = []
    offset = 0
    for name, p in trainable_parameters(classifier.model):
        module = name.split(".lora_")[0] if ".lora_" in name else name.rsplit(".", 1)[0]
        if groups and groups[-1][0] == module:
            groups[-1] = (module, groups[-1][1], offset + p.numel())
        else:
            groups.append((module, offset, offset + p.numel()))
        offset += p.numel()
    return groups

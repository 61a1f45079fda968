"""Serve LoRA classifiers over shared base weights.

`Classifier.load(adapter_bytes, config)` builds one classifier: the base encoder is loaded once per
process (cached by resolved path in `provenant.factory.base_models`) and every classifier's module
tree points at those same weight tensors; only its LoRA matrices and head are its own (~0.3 MB for
MiniLM, r=8, query/value). Inference runs under `torch.inference_mode`, so many classifiers can
share a base without touching each other's state. Each classifier has a lock that its predictions
and attribution's per-example gradients (which swap its trainable tensors through
torch.func.functional_call) take, so threads may share one classifier safely.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from provenant.factory.base_models import BaseModel, load_base_model
from provenant.factory.model import (ADAPTER_FORMAT, LoraClassifier, adapter_to_bytes, build_lora_classifier,
                                     encode, load_adapter_bytes)

PREDICT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]  # label -> probability, in the classifier's label order


class Classifier:
    """A trained LoRA classifier ready for inference (and for attribution, which reads `.model`)."""

    def __init__(self, model: LoraClassifier, base: BaseModel, labels: Sequence[str], max_length: int,
                 config: dict | None = None):
        model.eval()
        self.model = model
        self.base = base
        self.labels: list[str] = list(labels)
        self.max_length = max_length
        self.config = dict(config or {})
        if model.head.out_features != len(self.labels):
            raise ValueError(f"head has {model.head.out_features} outputs but {len(self.labels)} labels")
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.lock = threading.RLock()
        # Identifies the exact trainable tensors; attribution indexes are bound to it.
        self.adapter_sha256 = hashlib.sha256(adapter_to_bytes(model)).hexdigest()

    @classmethod
    def load(cls, adapter_bytes: bytes, config: dict) -> "Classifier":
        """Base weights (shared, cached) + this adapter's LoRA and head tensors."""
        if config.get("task") != "classification":
            raise ValueError(f"not a classification adapter: task={config.get('task')!r}")
        if config.get("format", ADAPTER_FORMAT) != ADAPTER_FORMAT:
            raise ValueError(f"unsupported adapter format {config.get('format')!r}")
        labels, lora = list(config["labels"]), config["lora"]
        if len(labels) < 2 or labels != sorted(set(labels)):
            raise ValueError("config labels must be a sorted list of at least 2 distinct labels")
        base = load_base_model(config["base_model"])
        model = build_lora_classifier(base, rank=int(lora["rank"]), alpha=int(lora["alpha"]),
                                      dropout=float(lora["dropout"]), target_modules=tuple(lora["target_modules"]),
                                      num_labels=len(labels), seed=int(lora.get("seed", 0)))
        load_adapter_bytes(model, adapter_bytes)
        return cls(model, base, labels, int(lora["max_length"]), config)

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw float32 logits, (len(texts), len(labels)), computed in batches of PREDICT_BATCH_SIZE."""
        if isinstance(texts, str):
            raise TypeError("predict takes a sequence of texts, not one string")
        out = []
        with self.lock, torch.inference_mode():
            for start in range(0, len(texts), PREDICT_BATCH_SIZE):
                chunk = [str(t) for t in texts[start:start + PREDICT_BATCH_SIZE]]
                out.append(self.model(*encode(self.base.tokenizer, chunk, self.max_length)))
        return torch.cat(out) if out else torch.empty(0, len(self.labels))

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probs = torch.softmax(self.logits(texts), dim=-1).tolist()
        return [Prediction(label=self.labels[max(range(len(row)), key=row.__getitem__)],
                           probabilities=dict(zip(self.labels, row))) for row in probs]

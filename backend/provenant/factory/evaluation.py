"""Held-out metrics per Datanet: how the trained model does on each Datanet's held-out rows.

Loss for every task (mean cross-entropy per example for classifiers, per target token for causal
LMs) and accuracy for classifiers; keyed by the Datanet id as a string (JSON object keys), so the
manifest, the job API and the web show the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from torch import nn

from provenant.factory.train import LoraSettings


def _by_datanet(examples: Sequence[Any]) -> dict[int, list[Any]]:
    groups: dict[int, list[Any]] = defaultdict(list)
    for ex in examples:
        groups[ex.datanet_id].append(ex)
    return dict(sorted(groups.items()))


def per_datanet_metrics(task: str, model: nn.Module, base_model: str, held_out: Sequence[Any],
                        adapter_config: dict[str, Any], settings: LoraSettings) -> dict[str, dict[str, Any]]:
    """Datanet id -> eval metrics of `model` (eval mode) on that Datanet's held-out rows."""
    if not held_out:
        return {}
    if task == "classification":
        from provenant.factory.base_models import load_base_model
        from provenant.factory.train import evaluate

        tokenizer = load_base_model(base_model).tokenizer
        label_to_id = {label: i for i, label in enumerate(adapter_config["labels"])}
        return {str(d): evaluate(model, tokenizer, group, label_to_id, settings)  # type: ignore[arg-type]
                for d, group in _by_datanet(held_out).items()}
    from provenant.factory.base_models import load_causal_base_model
    from provenant.factory.train_lm import evaluate_lm

    base = load_causal_base_model(base_model)
    return {str(d): evaluate_lm(model, base, group, settings) for d, group in _by_datanet(held_out).items()}

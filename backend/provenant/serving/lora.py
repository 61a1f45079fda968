"""LoRA adapters for causal LMs: the stored format, and parsing it into tensors ready to serve.

An adapter is a safetensors file whose keys follow peft's naming
(`base_model.model.<module path>.lora_A.weight`, shape (r, in); `...lora_B.weight`, shape (out, r)), so
peft's `set_peft_model_state_dict` loads the same bytes; its config (rank, alpha, target modules, base
model) lives in the model's manifest. Serving folds nothing into the base weights: each target module
computes `base(x) + scale * (x @ A.T) @ B.T` per request row (see `provenant.serving.lm_engine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
import torch.nn.functional as F
from torch import nn

CAUSAL_ADAPTER_FORMAT = "provenant-lora-causal/1"
CAUSAL_TASK = "causal-lm"
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
_PREFIX = "base_model.model."


class AdapterFormatError(ValueError):
    """Adapter bytes or config that do not fit the base model."""


@dataclass(frozen=True)
class LoraWeights:
    """One adapter, parsed: module path -> (A (r, in), B (out, r)), plus the LoRA scale alpha / r."""

    rank: int
    scale: float
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def transposed(self, path: str, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views (A^T (in, rank), B^T (rank, out)), zero-padded to `rank` only when it is larger."""
        a, b = self.modules[path]
        if rank == self.rank:
            return a.T, b.T
        return F.pad(a.T, (0, rank - self.rank)), F.pad(b.T, (0, 0, 0, rank - self.rank))

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.modules.values())


def adapter_config(base_model: str, rank: int = 8, alpha: int = 16,
                   target_modules: tuple[str, ...] = DEFAULT_TARGETS) -> dict[str, Any]:
    return {"task": CAUSAL_TASK, "format": CAUSAL_ADAPTER_FORMAT, "base_model": base_model,
            "lora": {"rank": rank, "alpha": alpha, "target_modules": list(target_modules)}}


def target_linears(model: nn.Module, targets: tuple[str, ...] | list[str]) -> dict[str, nn.Linear]:
    """Module path -> nn.Linear for every linear whose last name component is a target."""
    found = {name: m for name, m in model.named_modules()
             if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in set(targets)}
    if not found:
        raise AdapterFormatError(f"target modules {list(targets)} match no linear layer of the base model")
    return found


def random_adapter(base: nn.Module, config: dict[str, Any], seed: int, b_std: float = 0.02) -> bytes:
    """A seeded adapter with non-zero A and B (as after training), for tests and benchmarks."""
    lora = config["lora"]
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for path, linear in sorted(target_linears(base, lora["target_modules"]).items()):
        a = torch.empty(lora["rank"], linear.in_features)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)  # peft's A init
        b = torch.randn(linear.out_features, lora["rank"], generator=generator) * b_std
        state[f"{_PREFIX}{path}.lora_A.weight"] = a.contiguous()
        state[f"{_PREFIX}{path}.lora_B.weight"] = b.contiguous()
    return safetensors_save(state, metadata={"format": CAUSAL_ADAPTER_FORMAT})


def parse_adapter(adapter_bytes: bytes, config: dict[str, Any], base: nn.Module,
                  device: str | torch.device = "cpu") -> LoraWeights:
    """Check the bytes against the config and the base's shapes; return float32 tensors."""
    if config.get("task") != CAUSAL_TASK or config.get("format") != CAUSAL_ADAPTER_FORMAT:
        raise AdapterFormatError(f"not a causal-LM adapter config: task={config.get('task')!r}")
    lora = config["lora"]
    rank, alpha = int(lora["rank"]), float(lora["alpha"])
    if rank <= 0:
        raise AdapterFormatError(f"LoRA rank must be positive, got {rank}")
    try:
        state = safetensors_load(adapter_bytes)
    except Exception as exc:  # safetensors raises its own error types
        raise AdapterFormatError(f"adapter bytes are not a valid safetensors file: {exc}") from exc
    linears = target_linears(base, lora["target_modules"])
    expected = {f"{_PREFIX}{p}.lora_{ab}.weight" for p in linears for ab in "AB"}
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise AdapterFormatError(f"adapter does not fit the base: missing {missing[:2]}, unexpected {unexpected[:2]}")
    modules = {}
    for path, linear in linears.items():
        a, b = state[f"{_PREFIX}{path}.lora_A.weight"], state[f"{_PREFIX}{path}.lora_B.weight"]
        if a.shape != (rank, linear.in_features) or b.shape != (linear.out_features, rank):
            raise AdapterFormatError(f"{path}: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit rank {rank}")
        modules[path] = (a.to(device, torch.float32).contiguous(), b.to(device, torch.float32).contiguous())
    return LoraWeights(rank=rank, scale=alpha / rank, modules=modules)

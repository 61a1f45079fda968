"""Where a training runs: the device choice, and moving a model there without touching the shared base.

`resolve_device("auto")` picks CUDA when torch sees a GPU, else the CPU; `PROVENANT_DEVICE`
overrides "auto" for a whole process (e.g. `cpu` to force the bit-reproducible path on a GPU
machine). Under torchrun each process takes the GPU of its `LOCAL_RANK` (or shares GPU 0 when
there are more processes than GPUs, which only a test of the multi-process path would do).

The process-wide base models (`provenant.factory.base_models`) stay on the CPU: serving and
attribution share their tensors. A training on a GPU gets its own copy of the module tree with every
tensor moved (`module_on`), and hands back a CPU module rebuilt from the adapter bytes, so what
attribution and serving see never depends on where the training ran.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

DEVICE_ENV = "PROVENANT_DEVICE"


class DeviceError(ValueError):
    """The requested device does not exist on this machine."""


def resolve_device(requested: str | None = None) -> torch.device:
    """"auto" (the default; `PROVENANT_DEVICE` when set) -> cuda when available, else cpu."""
    choice = (requested or os.environ.get(DEVICE_ENV) or "auto").strip().lower()
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise DeviceError(f"unknown device {choice!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {choice!r} requested but torch sees no CUDA GPU "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
        if device.index is None:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            device = torch.device("cuda", local % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {choice!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise DeviceError(f"device {choice!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def describe(device: torch.device) -> str:
    """"cpu" or "cuda:0 (NVIDIA H200)": recorded in a training's metrics."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def module_on(module: nn.Module, device: torch.device) -> nn.Module:
    """A new module tree whose tensors live on `device`; `module` (and the base it shares) is untouched.
    Tied tensors stay tied: the memo maps each original tensor to exactly one moved copy."""
    if device.type == "cpu":
        return module
    memo: dict[int, object] = {}
    for param in module.parameters():
        memo[id(param)] = nn.Parameter(param.detach().to(device), requires_grad=param.requires_grad)
    for buffer in module.buffers():
        memo[id(buffer)] = buffer.to(device)
    return copy.deepcopy(module, memo)

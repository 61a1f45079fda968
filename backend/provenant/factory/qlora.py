"""QLoRA: LoRA trained over a 4-bit (NF4) copy of the causal base, on a CUDA GPU with bitsandbytes.

The frozen base is quantised to NF4 with bf16 compute (the QLoRA paper's recipe), the LoRA tensors
stay float32, and the adapter is saved in the same serving format as any other: its tensor names
are those of the full-precision base, so serving and attribution load it over the shared float32
base unchanged (the usual QLoRA practice of serving over the unquantised weights). The choice is part
of the LoRA settings (`quantize_base="nf4"`), hence of the manifest's training config.

Refused with one clear error when there is no CUDA GPU or no bitsandbytes: 4-bit matmuls have no
CPU kernels, and silently training in full precision would record a lie in the lineage.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from provenant.factory.base_models import TINY_LLAMA, CausalBaseModel, resolve_base_model

QUANTIZATIONS = ("none", "nf4")


class QuantizationUnavailable(ValueError):
    """4-bit base loading was asked for where it cannot run."""


def check_available(device: torch.device) -> None:
    """Raise `QuantizationUnavailable` naming what is missing (a CUDA device, bitsandbytes)."""
    if device.type != "cuda":
        raise QuantizationUnavailable(
            f"QLoRA (a 4-bit NF4 base, quantize_base='nf4') needs a CUDA GPU; this training runs on {device}"
            + ("" if torch.cuda.is_available() else " (torch sees no CUDA GPU)"))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise QuantizationUnavailable("QLoRA (a 4-bit NF4 base, quantize_base='nf4') needs the bitsandbytes package "
                                      "(pip install bitsandbytes) on this GPU machine") from exc


def load_nf4_base(base: CausalBaseModel, device: torch.device) -> nn.Module:
    """A 4-bit (NF4, bf16 compute) copy of `base` on `device`, frozen; the shared base is untouched.
    A config-built base (tiny-llama) goes through a temporary checkpoint: bitsandbytes quantises
    while loading weights."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    check_available(device)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
    placement = {"": device.index or 0}
    if base.path == TINY_LLAMA:
        with tempfile.TemporaryDirectory() as folder:
            base.model.save_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map=placement)
    else:
        model = AutoModelForCausalLM.from_pretrained(resolve_base_model(base.name), local_files_only=True,
                                                     quantization_config=config, device_map=placement)
    model.eval()
    model.requires_grad_(False)
    return model

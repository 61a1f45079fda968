"""The LoRA sequence classifier: shared frozen encoder + peft LoRA + mean pooling + linear head.

One function builds it (`build_lora_classifier`) for training, serving and attribution alike, so
the three always see the same module tree and the same trainable tensor names. The encoder's weight
tensors are shared with the process-wide base model (no copy); only the LoRA matrices and the head
belong to one classifier.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from provenant.factory.base_models import BaseModel

ADAPTER_FORMAT = "provenant-lora-classifier/1"


class LoraClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone = backbone  # transformer with LoRA layers injected; base weights frozen + shared
        self.head = head  # hidden_size -> num_labels

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                backbone_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, num_labels). `backbone_mask`: an already prepared 4D additive mask for the
        transformer (used under torch.func.vmap, where transformers' own mask preparation fails)."""
        mask_for_backbone = attention_mask if backbone_mask is None else backbone_mask
        hidden = self.backbone(input_ids=input_ids, attention_mask=mask_for_backbone).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # mean over real tokens
        return self.head(pooled)


def build_lora_classifier(base: BaseModel, *, rank: int, alpha: int, dropout: float,
                          target_modules: Sequence[str], num_labels: int, seed: int) -> LoraClassifier:
    """A fresh classifier over `base`: LoRA A ~ kaiming-uniform, B = 0, head ~ N(0, 0.02), from `seed`."""
    # Copy the module tree but not the tensors: every parameter/buffer maps to itself in the memo.
    shared = {id(t): t for t in itertools.chain(base.encoder.parameters(), base.encoder.buffers())}
    backbone = copy.deepcopy(base.encoder, memo=shared)
    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                      bias="none")
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG; keep it intact
        try:
            backbone = inject_adapter_in_model(lora, backbone)
        except ValueError as exc:
            raise ValueError(f"LoRA target_modules {list(target_modules)} do not match the base model: {exc}") from exc
        head = nn.Linear(base.hidden_size, num_labels, dtype=torch.float32)
    model = LoraClassifier(backbone, head)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("head.") or ".lora_" in name)

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in trainable_parameters(model):
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(param, a=math.sqrt(5), generator=generator)  # peft's default
            elif ".lora_B." in name or name == "head.bias":
                param.zero_()
            elif name == "head.weight":
                param.normal_(0.0, 0.02, generator=generator)
            else:  # pragma: no cover - guards future peft variants (e.g. lora_embedding_*)
                raise ValueError(f"unexpected trainable tensor {name}")
    model.eval()
    return model


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable tensors in a fixed order (sorted by name): the adapter, and the attribution layout."""
    return sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda item: item[0])


def adapter_to_bytes(model: nn.Module) -> bytes:
    """Safetensors bytes of every trainable tensor (LoRA + head). Tensors are laid out sorted by
    dtype then name; keep the metadata to ONE key (several come out in a per-process random order)."""
    state = {name: p.detach().to("cpu", torch.float32).contiguous().clone() for name, p in trainable_parameters(model)}
    return safetensors_save(state, metadata={"format": ADAPTER_FORMAT})


def load_adapter_bytes(model: nn.Module, adapter_bytes: bytes) -> None:
    """Copy adapter tensors into `model`; the names and shapes must match exactly."""
    try:
        state = safetensors_load(adapter_bytes)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"adapter bytes are not a valid safetensors file: {exc}") from exc
    params = dict(trainable_parameters(model))
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"adapter does not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            tensor = state[name]
            if tensor.shape != param.shape or tensor.dtype != torch.float32:
                raise ValueError(f"adapter tensor {name}: {tuple(tensor.shape)} {tensor.dtype}, "
                                 f"expected {tuple(param.shape)} float32")
            param.copy_(tensor)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize a batch, padded to its longest row (at most max_length tokens)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def example_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; the loss that training minimises and attribution differentiates."""
    return F.cross_entropy(logits, targets)

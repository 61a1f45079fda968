"""A minimal deterministic LoRA trainer for the causal-LM task (the factory has no LM trainer to call yet).

A small Llama (lm_pretrain.bench_llama_config: the factory tiny-llama's family, byte tokenizer and
seeded init, scaled for 2 CPU cores; optionally pretrained, cached) with peft LoRA on every
projection of every layer. The loss is the mean cross-entropy of the completion tokens (and EOS) given
the prompt; prompt tokens are not scored. Training is seeded (init, batch order) and runs one
thread-count-deterministic loop; per-example gradients are plain autograd, one row at a time.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from bench.attribution.tasks import Row
from provenant.factory.base_models import ByteTokenizer, load_causal_base_model


@dataclass(frozen=True)
class LmSettings:
    base: str = "bench-llama"  # lm_pretrain.build_base: the small Llama; "tiny-llama": the factory's 29 M one
    rank: int = 8  # rank 16 memorised the rows (train loss 0.002, held-out exact match lower)
    alpha: int = 16
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    layers: tuple[int, ...] | None = None  # None: every layer (the small base is 4 layers deep)
    learning_rate: float = 2e-3
    epochs: int = 12
    batch_size: int = 16
    seed: int = 0
    pretrain_steps: int = 0  # > 0: the base is first pretrained on generated primitives (lm_pretrain.py)


_BASES: dict[tuple[str, int], nn.Module] = {}


def base_lm(settings: LmSettings) -> nn.Module:
    """The frozen base every LoRA copy shares (one per process and settings): random init or pretrained."""
    key = (settings.base, max(0, settings.pretrain_steps))
    if key not in _BASES:
        from bench.attribution import lm_pretrain

        if settings.pretrain_steps <= 0:
            _BASES[key] = (load_causal_base_model("tiny-llama").model if settings.base == "tiny-llama"
                           else lm_pretrain.build_base(settings.base))
        else:
            _BASES[key] = lm_pretrain.pretrained_base(settings.base, settings.pretrain_steps, **(
                {"batch_size": 32, "learning_rate": 1e-3} if settings.base == "tiny-llama" else {}))
    return _BASES[key]


def build_lora_lm(settings: LmSettings) -> nn.Module:
    """A LoRA copy of the shared base: module tree copied, base tensors shared and frozen."""
    base = base_lm(settings)
    shared = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
    model = copy.deepcopy(base, memo=shared)
    layers = list(settings.layers) if settings.layers is not None else None
    with torch.random.fork_rng(devices=[]):
        model = inject_adapter_in_model(LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                                                   target_modules=list(settings.target_modules), bias="none",
                                                   layers_to_transform=layers,
                                                   layers_pattern="layers" if layers is not None else None), model)
    generator = torch.Generator().manual_seed(settings.seed)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name)
        if ".lora_A." in name:
            with torch.no_grad():
                nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=generator)
        elif ".lora_B." in name:
            with torch.no_grad():
                p.zero_()
    model.eval()
    return model


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda item: item[0])


def _encode(rows: Sequence[Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, loss mask): BOS prompt completion EOS, right-padded; the loss mask marks
    the positions whose NEXT token is a completion token."""
    tok = ByteTokenizer()  # the byte tokenizer of both bases (no 29 M model built for it)
    seqs, starts = [], []
    for r in rows:
        prompt = tok.encode(r.text)
        seqs.append(prompt + tok.encode(r.label, add_bos=False) + [tok.eos_token_id])
        starts.append(len(prompt))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    loss_mask = torch.zeros((len(rows), width - 1), dtype=torch.float32)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        loss_mask[i, start - 1:len(s) - 1] = 1.0
    return ids, mask, loss_mask


def row_losses(model: nn.Module, rows: Sequence[Row]) -> torch.Tensor:
    """Mean completion cross-entropy per row (differentiable)."""
    ids, mask, loss_mask = _encode(rows)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tokens = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                             reduction="none").view(len(rows), -1)
    return (tokens * loss_mask).sum(1) / loss_mask.sum(1)


@dataclass
class TrainedLm:
    model: nn.Module
    seconds: float
    epoch_states: list[dict[str, torch.Tensor]] = field(default_factory=list)  # LoRA tensors after each epoch


def train_lm(rows: Sequence[Row], settings: LmSettings) -> TrainedLm:
    if not rows:
        raise ValueError("cannot train on zero rows")
    model = build_lora_lm(settings)
    params = [p for _, p in trainable(model)]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    order_rng = torch.Generator().manual_seed(settings.seed)
    started = time.perf_counter()
    model.train()
    epoch_states = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(rows), generator=order_rng).tolist()
        for start in range(0, len(rows), settings.batch_size):
            batch = [rows[i] for i in order[start:start + settings.batch_size]]
            loss = row_losses(model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        epoch_states.append({n: p.detach().clone() for n, p in trainable(model)})  # as the Factory's loop keeps them
    model.eval()
    return TrainedLm(model, time.perf_counter() - started, epoch_states)


@torch.no_grad()
def eval_losses(model: nn.Module, rows: Sequence[Row]) -> np.ndarray:
    return torch.cat([row_losses(model, rows[s:s + 64]) for s in range(0, len(rows), 64)]).double().numpy()


@torch.no_grad()
def exact_match(model: nn.Module, rows: Sequence[Row]) -> np.ndarray:
    """Greedy completion equals the reference (teacher-forced argmax over the completion positions)."""
    ids, mask, loss_mask = _encode(rows)
    pred = model(input_ids=ids, attention_mask=mask).logits[:, :-1].argmax(-1)
    ok = (pred == ids[:, 1:]) | (loss_mask == 0)
    return ok.all(dim=1).numpy()


def per_example_gradients(model: nn.Module, rows: Sequence[Row], micro_batch: int = 32) -> torch.Tensor:
    """(len(rows), P) float32: gradient of each row's completion loss w.r.t. the LoRA tensors, from one
    batched backward per micro-batch (the engine's `lora_gradients`, as the product's LM index uses)."""
    from provenant.attribution.lora_gradients import per_example_linear_gradients

    names = [n for n, _ in trainable(model)]
    out = torch.empty(len(rows), sum(p.numel() for _, p in trainable(model)), dtype=torch.float32)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].text) + len(rows[i].label))
    positions = [order[s:s + micro_batch] for s in range(0, len(order), micro_batch)]
    batches = [[rows[i] for i in group] for group in positions]
    model.eval()
    return per_example_linear_gradients(model, names, batches, lambda batch: row_losses(model, batch).sum(), out,
                                        positions)


def gradients_side_by_side(model: nn.Module, row: Row, others: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
    """(1 + len(others), P): one row's gradient at the model's LoRA tensors, then at each of `others`,
    in one pass over k copies of the row (the engine's `adapters_side_by_side`, as the product's LM
    attributor differentiates an answer at its index's snapshots)."""
    from provenant.attribution.lora_gradients import adapters_side_by_side, per_example_linear_gradients

    names = [n for n, _ in trainable(model)]
    k = 1 + len(others)
    out = torch.empty(k, sum(p.numel() for _, p in trainable(model)), dtype=torch.float32)
    model.eval()
    with adapters_side_by_side(model, names, others):
        return per_example_linear_gradients(model, names, [[row] * k], lambda batch: row_losses(model, batch).sum(),
                                            out, [list(range(k))])


def layer_groups(model: nn.Module) -> list[tuple[str, int, int]]:
    groups: list[tuple[str, int, int]] = []
    offset = 0
    for name, p in trainable(model):
        module = name.split(".lora_")[0]
        if groups and groups[-1][0] == module:
            groups[-1] = (module, groups[-1][1], offset + p.numel())
        else:
            groups.append((module, offset, offset + p.numel()))
        offset += p.numel()
    return groups


@torch.no_grad()
def base_embed(texts: Sequence[str], settings: LmSettings | None = None) -> np.ndarray:
    """Mean last hidden state of the frozen base LM over the bytes of each text."""
    tokenizer = ByteTokenizer()
    model = base_lm(settings or LmSettings())
    out = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text)])
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        out.append(hidden[0].mean(0).numpy())
    return np.stack(out)

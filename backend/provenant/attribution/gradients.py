"""Per-example loss gradients w.r.t. a classifier's trainable tensors, and their random projection.

Two steps, each a plain function:
1. `per_example_gradients`: for each (text, label), the gradient of the cross-entropy at that label
   w.r.t. every trainable tensor (LoRA A/B + head) at the adapter given (eval mode: no dropout),
   flattened in the fixed `trainable_parameters` order. Several rows: one ordinary batched backward
   per micro-batch with hooks (`per_example_gradients_batched`, `lora_gradients`); the torch.func.vmap
   path it replaced (`per_example_gradients_vmap`) stays as a second reference beside the plain loop
   `per_example_gradients_loop`.
   One row (a query being attributed): `query_gradients.query_gradient`, one reverse-mode pass
   without vmap, the frozen encoder linears on oneDNN (~2x cheaper than vmap at batch size 1).
2. `projection.Projector.project`: a seeded random projection of those gradients to `dim` floats.

Curvature (the damped Gauss-Newton inverse in the projected space) lives in `curvature`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from provenant.attribution.lora_gradients import per_example_linear_gradients
from provenant.factory.model import encode, example_loss, trainable_parameters
from provenant.serving.engine import Classifier

MICRO_BATCH = 64  # examples per batched forward/backward (measured: 16 -> 64 saves ~15% for the vmap path too)


def per_example_gradients(classifier: Classifier, texts: Sequence[str], label_ids: Sequence[int],
                          micro_batch: int = MICRO_BATCH) -> torch.Tensor:
    """(len(texts), P) float32: flattened loss gradients per example.

    A single row (one answer being attributed) takes the single-query path (`query_gradients`);
    several rows (index building, `attribute_many`) the batched micro-batches below. Both agree with
    `per_example_gradients_loop` up to float rounding, and each is bit-identical run to run.
    """
    if len(texts) == 1 and len(label_ids) == 1:
        from provenant.attribution.query_gradients import query_gradient  # imports this module

        return query_gradient(classifier, texts[0], int(label_ids[0]))[None]
    return per_example_gradients_batched(classifier, texts, label_ids, micro_batch)


def per_example_gradients_batched(classifier: Classifier, texts: Sequence[str], label_ids: Sequence[int],
                                  micro_batch: int = MICRO_BATCH) -> torch.Tensor:
    """(len(texts), P) float32: flattened loss gradients per example, from one ordinary forward and
    backward per micro-batch (`lora_gradients`: each Linear's input and output gradient, recorded by
    hooks). Rows are grouped by token length (stable order) as in the vmap path below."""
    if len(texts) != len(label_ids):
        raise ValueError("texts and label_ids differ in length")
    model, tokenizer = classifier.model, classifier.base.tokenizer
    model.eval()
    names = [name for name, _ in trainable_parameters(model)]
    out = torch.empty(len(texts), sum(p.numel() for _, p in trainable_parameters(model)), dtype=torch.float32)
    if len(texts) == 0:
        return out
    token_ids = [tokenizer(str(t), truncation=True, max_length=classifier.max_length)["input_ids"] for t in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
    positions = [order[start:start + micro_batch] for start in range(0, len(order), micro_batch)]
    batches = [(*_pad_right([token_ids[i] for i in rows], pad_id),
                torch.tensor([int(label_ids[i]) for i in rows], dtype=torch.int64)) for rows in positions]

    def summed_loss(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        input_ids, mask, labels = batch  # each row's loss is its own cross-entropy: sum, not mean
        return F.cross_entropy(model(input_ids, mask), labels, reduction="sum")

    with classifier.lock:
        return per_example_linear_gradients(model, names, batches, summed_loss, out, positions)


def per_example_gradients_vmap(classifier: Classifier, texts: Sequence[str], label_ids: Sequence[int],
                               micro_batch: int = MICRO_BATCH) -> torch.Tensor:
    """(len(texts), P) float32: flattened loss gradients per example, batched with torch.func.vmap.

    Rows are grouped by token length (stable order) into micro-batches padded to their longest row,
    so a row's gradient equals the one-at-a-time loop (`per_example_gradients_loop`) up to float
    rounding. transformers' attention-mask preparation cannot run under vmap, so the 4D additive mask
    is built here from the 2D one and handed to the model ready-made.
    """
    if len(texts) != len(label_ids):
        raise ValueError("texts and label_ids differ in length")
    model, tokenizer = classifier.model, classifier.base.tokenizer
    model.eval()
    names_params = trainable_parameters(model)
    params = {name: p.detach() for name, p in names_params}
    out = torch.empty(len(texts), sum(p.numel() for p in params.values()), dtype=torch.float32)
    if len(texts) == 0:
        return out
    token_ids = [tokenizer(str(t), truncation=True, max_length=classifier.max_length)["input_ids"] for t in texts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def loss_of_one(params: dict[str, torch.Tensor], input_ids: torch.Tensor, mask: torch.Tensor,
                    label: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - mask.to(torch.float32))[None, None, None, :] * torch.finfo(torch.float32).min
        logits = functional_call(model, params, (input_ids[None], mask[None]), {"backbone_mask": additive})
        return example_loss(logits, label[None])

    grad_per_example = vmap(grad(loss_of_one), in_dims=(None, 0, 0, 0))
    order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
    with classifier.lock:  # functional_call swaps the model's trainable tensors while it runs
        for start in range(0, len(order), micro_batch):
            rows = order[start:start + micro_batch]
            input_ids, mask = _pad_right([token_ids[i] for i in rows], pad_id)
            labels = torch.tensor([int(label_ids[i]) for i in rows], dtype=torch.int64)
            grads = grad_per_example(params, input_ids, mask, labels)
            out[rows] = torch.cat([grads[name].reshape(len(rows), -1) for name, _ in names_params], dim=1)
    return out


def _pad_right(token_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask) int64 tensors, as BERT-style tokenizers pad."""
    width = max(len(tokens) for tokens in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(token_lists), width), dtype=torch.int64)
    for row, tokens in enumerate(token_lists):
        input_ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        mask[row, :len(tokens)] = 1
    return input_ids, mask


def per_example_gradients_loop(classifier: Classifier, texts: Sequence[str], label_ids: Sequence[int]) -> torch.Tensor:
    """Reference implementation: one example at a time, plain autograd. Same layout as above."""
    model = classifier.model
    model.eval()
    params = [p for _, p in trainable_parameters(model)]
    out = torch.empty(len(texts), sum(p.numel() for p in params), dtype=torch.float32)
    for row, (text, label_id) in enumerate(zip(texts, label_ids, strict=True)):
        input_ids, attention_mask = encode(classifier.base.tokenizer, [text], classifier.max_length)
        with classifier.lock, torch.enable_grad():
            loss = example_loss(model(input_ids, attention_mask), torch.tensor([int(label_id)], dtype=torch.int64))
            grads = torch.autograd.grad(loss, params)
        out[row] = torch.cat([g.reshape(-1) for g in grads])
    return out

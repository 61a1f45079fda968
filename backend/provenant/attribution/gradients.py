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
2. `Projector.project`: a seeded Gaussian JL projection to `dim` floats. The P x dim matrix is never
   held whole: it is generated in chunks of rows, each from its own generator seeded by
   (seed, tensor name, chunk), so the projection of one tensor does not depend on the others.

Curvature (the damped Gauss-Newton inverse in the projected space) lives in `curvature`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from provenant.attribution.lora_gradients import per_example_linear_gradients
from provenant.factory.model import encode, example_loss, trainable_parameters
from provenant.serving.engine import Classifier

MICRO_BATCH = 64  # examples per batched forward/backward (measured: 16 -> 64 saves ~15% for the vmap path too)
CHUNK_ROWS = 8192  # rows of the projection generated at once: 8192 x 1024 x 4 B = 32 MiB


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


def module_of(tensor_name: str) -> str:
    """The module a trainable tensor belongs to: a LoRA pair (A, B) is one module, the head another."""
    return tensor_name.split(".lora_")[0] if ".lora_" in tensor_name else tensor_name.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Projector:
    """x -> R^T x / sqrt(dim), R ~ N(0, 1)^(P x dim) in float32, regenerated chunk by chunk from `seed`.

    per_module=False: one JL projection of the whole gradient (format-2 indexes before module blocks).
    per_module=True: the output is split into one block per module (a LoRA module's A and B, or the
    head), `dim // modules` coordinates each (the first `dim % modules` get one more), and each block
    is a JL projection of that module's gradient alone. The curvature is then fitted per block
    (block-diagonal, as EK-FAC and LoGra do per layer), and a query reads P x dim / modules floats of
    projection instead of P x dim (13x fewer for MiniLM r=8 query/value + head).
    """

    layout: tuple[tuple[str, int], ...]  # (tensor name, numel) in flattening order
    dim: int
    seed: int
    per_module: bool = False

    @classmethod
    def for_classifier(cls, classifier: Classifier, dim: int, seed: int, per_module: bool = False) -> "Projector":
        layout = tuple((name, p.numel()) for name, p in trainable_parameters(classifier.model))
        return cls(layout=layout, dim=dim, seed=seed, per_module=per_module)

    @property
    def layout_sha256(self) -> str:
        tag = "/module-blocks" if self.per_module else ""  # a global index never answers a per-module query
        return hashlib.sha256((repr(self.layout) + tag).encode()).hexdigest()

    @property
    def modules(self) -> tuple[str, ...]:
        names: list[str] = []
        for name, _ in self.layout:
            if not names or names[-1] != module_of(name):
                names.append(module_of(name))
        return tuple(names)

    @property
    def block_slices(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each module's coordinates in the output; one block when not per_module."""
        if not self.per_module:
            return ((0, self.dim),)
        count = len(self.modules)
        if count > self.dim:
            raise ValueError(f"projection dim {self.dim} is below the number of modules ({count})")
        sizes = [self.dim // count + (1 if k < self.dim % count else 0) for k in range(count)]
        starts = [sum(sizes[:k]) for k in range(count)]
        return tuple((start, start + size) for start, size in zip(starts, sizes, strict=True))

    def _chunk_seed(self, name: str, chunk: int) -> int:
        digest = hashlib.sha256(f"provenant-jl/{self.seed}/{name}/{chunk}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def project(self, grads: torch.Tensor) -> torch.Tensor:
        """(B, P) float32 -> (B, dim) float32; chunk products are summed in float64."""
        total = sum(numel for _, numel in self.layout)
        if grads.ndim != 2 or grads.shape[1] != total:
            raise ValueError(f"expected (B, {total}) gradients, got {tuple(grads.shape)}")
        grads = grads.to(torch.float32)
        out = torch.zeros(grads.shape[0], self.dim, dtype=torch.float64)
        blocks = dict(zip(self.modules, self.block_slices, strict=True)) if self.per_module else None
        offset = 0
        for name, numel in self.layout:
            start_col, stop_col = blocks[module_of(name)] if blocks is not None else (0, self.dim)
            width = stop_col - start_col
            for chunk, start in enumerate(range(0, numel, CHUNK_ROWS)):
                rows = min(CHUNK_ROWS, numel - start)
                matrix = _projection_chunk(self._chunk_seed(name, chunk), rows, width)
                out[:, start_col:stop_col] += (grads[:, offset + start:offset + start + rows] @ matrix).to(torch.float64)
            offset += numel
        for start_col, stop_col in self.block_slices:  # each block is a JL map of its own module
            out[:, start_col:stop_col] /= (stop_col - start_col) ** 0.5
        return out.to(torch.float32)


class _BlockCache:
    """Least-recently-used projection blocks under a byte budget; thread-safe; off (0 bytes) by default."""

    def __init__(self) -> None:
        self.max_bytes, self.bytes = 0, 0
        self.blocks: OrderedDict[tuple[int, int, int], torch.Tensor] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None:
        with self.lock:
            block = self.blocks.get(key)
            if block is not None:
                self.blocks.move_to_end(key)
            return block

    def put(self, key: tuple[int, int, int], block: torch.Tensor) -> None:
        with self.lock:
            if key not in self.blocks and block.numel() * 4 <= self.max_bytes:
                self.blocks[key] = block
                self.bytes += block.numel() * 4
            self._shrink()

    def resize(self, max_bytes: int) -> None:
        with self.lock:
            self.max_bytes = max_bytes
            self._shrink()

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes:
            _, block = self.blocks.popitem(last=False)
            self.bytes -= block.numel() * 4


_BLOCKS = _BlockCache()


def _projection_chunk(chunk_seed: int, rows: int, dim: int) -> torch.Tensor:
    """A (rows, dim) N(0, 1) float32 block from its own generator (or the cache, when enabled)."""
    block = _BLOCKS.get((chunk_seed, rows, dim))
    if block is None:
        block = torch.randn(rows, dim, generator=torch.Generator().manual_seed(chunk_seed), dtype=torch.float32)
        _BLOCKS.put((chunk_seed, rows, dim), block)
    return block


def set_projection_cache(max_bytes: int) -> None:
    """Keep up to `max_bytes` of generated projection blocks in memory, least recently used out.

    Off by default. Generating the blocks dominates a single query (~0.5 s for MiniLM r=8 at
    dim 1024 on 2 cores, ~0.1 s with the blocks cached); a server attributing every call should
    enable it: ~300 MB covers every adapter sharing one layout (base, rank, targets, seed, dim).
    Scores are identical with or without it: a cached block is exactly what its generator makes.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    _BLOCKS.resize(int(max_bytes))

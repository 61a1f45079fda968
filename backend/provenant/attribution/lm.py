"""Gradient attribution for causal-LM adapters: the same index recipe as classifiers.

A row's loss is the SUMMED next-token cross-entropy over its target tokens (the completion and
EOS, exactly the positions `factory.train_lm.tokenize` labels), so a query's score is the change
in the log-likelihood of the whole answer. The index stores the unit-normalised training
direction, so a long training row does not outweigh a short one by its length alone.

Per-example gradients come from one ordinary batched backward per micro-batch, with hooks on the
LoRA Linears (`lora_gradients`; Hugging Face's causal attention-mask preparation cannot run under
torch.func.vmap); one row, or an adapter with non-Linear tensors, takes the plain one-row loop. The
adapter's identity is the sha256 of its serving bytes.

Per-answer attribution of a served LM (`LmAttributor`) combines this gradient influence with span
attribution over the tokenised training rows (`attribution.spans`): the span index holds exactly the
token stream each training row trained on (prompt + completion + EOS, without BOS), the output is
matched without BOS/EOS, and the two are combined by `combine_attributions` (method
"influence+spans/1"). Serving receipts and settlement scores both come from `LmAttributor`.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from provenant.attribution.aggregate import Attribution, ContributionMeta, aggregate
from provenant.attribution.index import (PROJECT_BLOCK, AttributionIndex, AttributionIndexError, IndexSettings,
                                         index_from_projected, score_projected)
from provenant.attribution.lora_gradients import adapters_side_by_side, per_example_linear_gradients
from provenant.attribution.projection import Projector
from provenant.attribution.snapshots import earlier_adapters
from provenant.attribution.spans import (DEFAULT_MIN_LENGTH, SpanDocument, SpanIndex, build_span_index,
                                        combine_attributions, find_spans, span_attribution)
from provenant.factory.base_models import ByteTokenizer, CausalBaseModel
from provenant.factory.train_lm import (IGNORE, LmExample, collate, encode_text, lm_adapter_bytes, lm_adapter_tensors,
                                        load_lm_adapter, pad_id, tokenize, token_loss, trainable)

METHOD = "influence+spans/1"  # the receipt's and the results' name for this attribution
GRADIENT_ONLY_METHOD = "influence/1"  # a manifest with a gradient index but no span index
BYTE_MIN_LENGTH = 32  # span min_length for byte-level tokenizers: a few words, not a common bigram


def lm_projector(model: nn.Module, settings: IndexSettings) -> Projector:
    layout = tuple((name, p.numel()) for name, p in trainable(model))
    if not layout:
        raise AttributionIndexError("the model has no trainable (LoRA) tensors to attribute through")
    return Projector(layout=layout, dim=settings.projection_dim, seed=settings.seed, per_module=settings.per_module,
                     sketch=settings.projection)


def adapter_fingerprint(model: nn.Module) -> str:
    return hashlib.sha256(lm_adapter_bytes(model)).hexdigest()


def per_example_lm_gradients(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                             max_length: int) -> torch.Tensor:
    """(len(examples), P) float32: gradient of each row's summed target-token loss, trainable tensors
    flattened in `trainable` (name) order. A row with no target token has a zero gradient.

    Several rows: one batched backward per micro-batch of rows of similar length (`lora_gradients`),
    when every trainable tensor is a Linear weight (LoRA A/B); otherwise, and for one row, the loop."""
    names = [name for name, _ in trainable(model)]
    if len(examples) > 1 and _all_linear(model, names):
        return _per_example_lm_gradients_batched(model, base, examples, max_length, names)
    return per_example_lm_gradients_loop(model, base, examples, max_length)


def _all_linear(model: nn.Module, names: Sequence[str]) -> bool:
    return all(isinstance(model.get_submodule(n.rsplit(".", 1)[0]), nn.Linear) for n in names)


def per_example_lm_gradients_at(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                                max_length: int, snapshots: Sequence[bytes]) -> torch.Tensor:
    """(1 + len(snapshots), len(examples), P) float32: each row's gradient at the model's own adapter,
    then at each snapshot adapter (serving bytes of the same layout).

    For answers being attributed: every micro-batch runs once with its rows copied k times and the k
    adapters side by side (`lora_gradients.adapters_side_by_side`), so the frozen base makes one pass
    over k copies instead of k passes (one answer, 4 adapters of the benchmark's Llama: 57 ms against
    107 ms). Equal to `per_example_lm_gradients` at each adapter in turn up to float rounding;
    bit-identical run to run."""
    names = [name for name, _ in trainable(model)]
    if not _all_linear(model, names):
        return torch.stack(_at_each_adapter(lambda: per_example_lm_gradients_loop(model, base, examples, max_length),
                                            model, snapshots))
    others = [lm_adapter_tensors(model, adapter) for adapter in snapshots]
    return _per_example_lm_gradients_batched(model, base, examples, max_length, names, others).view(
        1 + len(others), len(examples), -1)


LOGITS_BUDGET = 1 << 25  # floats of logits per micro-batch (128 MB): rows x width x vocab stays under it
LM_MICRO_BATCH = 32


def _per_example_lm_gradients_batched(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                                      max_length: int, names: Sequence[str],
                                      others: Sequence[Mapping[str, torch.Tensor]] = ()) -> torch.Tensor:
    """(k n, P): row i's gradient at adapter a in row a n + i (a = 0: the model's own, then `others`)."""
    k, n = 1 + len(others), len(examples)
    out = torch.zeros(k * n, sum(p.numel() for _, p in trainable(model)), dtype=torch.float32)
    rows = [tokenize(base, example, max_length) for example in examples]
    pad = pad_id(base)
    vocab = lm_vocab_size(base)
    order = sorted(range(n), key=lambda i: len(rows[i].input_ids))
    groups: list[list[int]] = []
    for i in order:  # grow a micro-batch (each row k times) while its padded logits fit the budget
        width = len(rows[i].input_ids)  # the longest so far, rows being sorted by length
        size = (len(groups[-1]) + 1) * k if groups else 0
        if groups and size <= max(LM_MICRO_BATCH, k) and size * width * vocab <= LOGITS_BUDGET:
            groups[-1].append(i)
        else:
            groups.append([i])
    batches = [collate([rows[i] for i in group] * k, pad) for group in groups]  # adapter-major copies
    model.eval()

    def summed_loss(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        ids, mask, labels = batch
        return token_loss(model(input_ids=ids, attention_mask=mask).logits, labels)[0]  # summed over rows

    with adapters_side_by_side(model, names, others):
        return per_example_linear_gradients(model, names, batches, summed_loss, out,
                                            [[a * n + i for a in range(k) for i in group] for group in groups])


def per_example_lm_gradients_loop(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                                  max_length: int) -> torch.Tensor:
    """Reference implementation: one row at a time, plain autograd. Same layout as above."""
    params = [p for _, p in trainable(model)]
    out = torch.zeros(len(examples), sum(p.numel() for p in params), dtype=torch.float32)
    pad = pad_id(base)
    model.eval()
    for row, example in enumerate(examples):
        tokens = tokenize(base, example, max_length)
        if all(label == IGNORE for label in tokens.labels[1:]):
            continue
        ids, mask, labels = collate([tokens], pad)
        with torch.enable_grad():
            loss, _ = token_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        out[row] = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                              for g, p in zip(grads, params)])
    return out


@contextmanager
def adapter_loaded(model: nn.Module, adapter_bytes: bytes) -> Iterator[nn.Module]:
    """`model` with another adapter's LoRA tensors (an earlier snapshot of its run) loaded in place; its
    own tensors are put back on exit. Callers hold the model alone (the Factory's build, the attributor's lock)."""
    own = lm_adapter_bytes(model)
    load_lm_adapter(model, adapter_bytes)
    try:
        yield model
    finally:
        load_lm_adapter(model, own)


def _at_each_adapter(compute: Callable[[], torch.Tensor], model: nn.Module,
                     snapshots: Sequence[bytes]) -> list[torch.Tensor]:
    """`compute()` at the model's own adapter, then with each snapshot adapter loaded in turn; the
    model's own tensors are saved once and put back once, after the last snapshot."""
    out = [compute()]
    if snapshots:
        with adapter_loaded(model, snapshots[0]):
            out.append(compute())
            for adapter in snapshots[1:]:
                load_lm_adapter(model, adapter)
                out.append(compute())
    return out


def _projected_at_snapshots(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                            max_length: int, projector: Projector, snapshots: Sequence[bytes]) -> list[torch.Tensor]:
    """The training rows' projected gradients at the model's own adapter, then at each snapshot adapter
    (many rows: each adapter's batched pass is already efficient, so the adapters take turns)."""
    def projected() -> torch.Tensor:
        return torch.cat([projector.project(per_example_lm_gradients(model, base, examples[s:s + PROJECT_BLOCK],
                                                                     max_length))
                          for s in range(0, len(examples), PROJECT_BLOCK)])

    return _at_each_adapter(projected, model, snapshots)


def build_lm_index(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample], max_length: int,
                   settings: IndexSettings, epoch_adapters: Sequence[bytes] = ()) -> AttributionIndex:
    """Index the training rows of a causal-LM adapter at its final weights and, from `epoch_adapters`
    (the adapter after each epoch of its run, the last the final one), at `settings.snapshots` of them."""
    if len(examples) == 0:
        raise ValueError("cannot index zero examples")
    projector = lm_projector(model, settings)
    fingerprint = adapter_fingerprint(model)
    epochs, earlier = earlier_adapters(epoch_adapters, fingerprint, settings.snapshots)
    final, *at_snapshots = _projected_at_snapshots(model, base, examples, max_length, projector, earlier)
    return index_from_projected(
        final, contribution_ids=[ex.contribution_id for ex in examples],
        row_indices=[ex.row_index for ex in examples], label_ids=[0] * len(examples),
        texts=[ex.prompt + "\n" + ex.completion for ex in examples], settings=settings,
        adapter_sha256=fingerprint, layout_sha256=projector.layout_sha256,
        blocks=settings.curvature_blocks(projector), snapshot_projected=at_snapshots,
        snapshot_adapters=earlier, snapshot_epochs=epochs)


def attribute_lm_many(model: nn.Module, base: CausalBaseModel, index: AttributionIndex, prompts: Sequence[str],
                      outputs: Sequence[str], max_length: int, share_duplicates: bool = True) -> np.ndarray:
    """(Q, N) float64 scores: how much each training row raised the likelihood of each (prompt, output)."""
    if len(prompts) != len(outputs):
        raise ValueError("prompts and outputs differ in length")
    projector = lm_projector(model, index.settings)
    if index.layout_sha256 != projector.layout_sha256 or index.adapter_sha256 != adapter_fingerprint(model):
        raise AttributionIndexError("this attribution index was built for a different adapter")
    queries = [LmExample(prompt=p, completion=o, contribution_id=0, row_index=0) for p, o in zip(prompts, outputs)]
    block = max(1, PROJECT_BLOCK // (1 + len(index.snapshot_adapters)))  # gradients held at once: ~PROJECT_BLOCK rows
    projected = []
    for start in range(0, len(queries), block):
        grads = per_example_lm_gradients_at(model, base, queries[start:start + block], max_length,
                                            index.snapshot_adapters)  # (S, n, P): adapter by adapter
        at_snapshots = projector.project(grads.reshape(-1, grads.shape[-1])).view(grads.shape[0], grads.shape[1], -1)
        projected.append(torch.cat(list(at_snapshots), dim=1))  # (n, S * dim), the final adapter's block first
    return score_projected(index, torch.cat(projected).numpy(), share_duplicates)


# -- span index over the tokenised training rows ------------------------------------------------------

def lm_vocab_size(base: CausalBaseModel) -> int:
    """Every id the tokenizer or the model can produce (a model's embedding may be padded past the tokenizer)."""
    if isinstance(base.tokenizer, ByteTokenizer):
        return ByteTokenizer.vocab_size
    return max(int(getattr(base.model.config, "vocab_size", 0)), len(base.tokenizer))  # type: ignore[arg-type]


def span_min_length(base: CausalBaseModel) -> int:
    """The shortest verbatim span that earns credit: ~32 bytes for byte tokenizers (see `spans`)."""
    return BYTE_MIN_LENGTH if isinstance(base.tokenizer, ByteTokenizer) else DEFAULT_MIN_LENGTH


def span_documents(base: CausalBaseModel, examples: Sequence[LmExample], max_length: int) -> list[SpanDocument]:
    """One document per distinct (contribution, row) used: the tokens it trained on, BOS dropped. A row
    sampled twice (Datanet weights) is one document, since repeating it adds no new text to match."""
    bos = getattr(base.tokenizer, "bos_token_id", None)
    docs: dict[tuple[int, int], SpanDocument] = {}
    for ex in examples:
        key = (ex.contribution_id, ex.row_index)
        if key not in docs:
            ids = tokenize(base, ex, max_length).input_ids
            docs[key] = SpanDocument(ex.contribution_id, ex.row_index, ids[1:] if bos is not None else ids)
    return list(docs.values())


def build_lm_span_index(base: CausalBaseModel, examples: Sequence[LmExample], max_length: int) -> SpanIndex:
    if len(examples) == 0:
        raise ValueError("cannot index zero examples")
    return build_span_index(span_documents(base, examples, max_length), lm_vocab_size(base))


# -- per-answer attribution of a served LM ---------------------------------------------------------------

@dataclass
class LmAttributor:
    """A trained LM adapter with its gradient index and span index: attributes (prompt, output) pairs.

    Gradients run one row at a time through one module tree, so calls are serialised by a lock
    (serving answers from several threads). On one machine the result is a deterministic function of
    the adapter, the indexes and the call: scores are bit-identical run to run."""

    model: nn.Module
    base: CausalBaseModel
    index: AttributionIndex
    spans: SpanIndex | None
    max_length: int
    min_length: int
    meta: Mapping[int, ContributionMeta]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def method(self) -> str:
        return METHOD if self.spans is not None else GRADIENT_ONLY_METHOD

    def attribute_many(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[Attribution]:
        """Each call's combined attribution: w * span shares + (1 - w) * gradient shares, w = span coverage."""
        if len(prompts) != len(outputs):
            raise ValueError("prompts and outputs differ in length")
        if not prompts:
            return []
        with self._lock:
            scores = attribute_lm_many(self.model, self.base, self.index, prompts, outputs, self.max_length)
        out = []
        for row, output in zip(scores, outputs):
            gradient = aggregate(row, self.index.contribution_ids, self.meta)
            if self.spans is None:
                out.append(combine_attributions(None, gradient, 0, self.meta))
                continue
            found = find_spans(self.spans, encode_text(self.base, output), min_length=self.min_length)
            out.append(combine_attributions(span_attribution(found, self.meta), gradient, found.coverage, self.meta))
        return out

"""The loss gradient of ONE query (an answer being attributed) w.r.t. the classifier's trainable tensors.

`gradients.per_example_gradients` sends a single row here. For one row, torch.func.vmap only adds
cost (batching rules around every op, the functional_call parameter swap, a hand-built 4D mask), so
this is one forward and one reverse-mode pass of torch.autograd over the unpadded tokens,
differentiating only the trainable tensors (the frozen encoder's weight gradients are never formed).

Two implementations, same maths:
- `_bert_loss_side_by_side` (MiniLM and other BERT encoders, every Factory classifier today): the encoder
  layers written out on 2D (tokens, hidden) tensors. Each FROZEN linear runs through oneDNN, ~2x
  faster than MKL's sgemm on the (<= 32 x 384) x (384 x 1536) shapes a single query has, which
  dominate its cost: forward with the weight pre-packed once per process (`_packed`), backward
  (dL/dx = g W) on a transposed view of the weight itself (as fast as packed, and no second copy).
  oneDNN's results do not depend on the packing (same bits packed or not). LoRA branches,
  attention, LayerNorm, GELU, pooling and the head are plain torch ops under autograd.
- `_plain_loss`: the model's own forward + torch.autograd.grad, for anything else.

Layout: the same as `per_example_gradients` (flattened in `trainable_parameters` order), equal to
it up to float rounding (tests/test_attribution_query.py), and bit-identical run to run on one
machine and thread count: the same kernels on the same shapes in the same order, no atomics, and
nothing that depends on other rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from provenant.factory.model import example_loss, trainable_parameters
from provenant.serving.engine import Classifier

PACK_HINT = 32  # token count oneDNN's weight layout is chosen for (fixed: the layout must not vary by query)


def query_tokens(classifier: Classifier, text: str) -> torch.Tensor:
    """(1, T) int64 token ids, truncated to the classifier's max_length, never padded."""
    ids = classifier.base.tokenizer(str(text), truncation=True, max_length=classifier.max_length)["input_ids"]
    return torch.tensor([ids], dtype=torch.int64)


def query_gradient(classifier: Classifier, text: str, label_id: int) -> torch.Tensor:
    """(P,) float32: the gradient of the cross-entropy of `text` at `label_id` (eval mode, no dropout)."""
    return _gradient(classifier, text, label_id, plain=False)


def query_gradients_at(classifiers: Sequence[Classifier], text: str, label_id: int) -> torch.Tensor:
    """(len(classifiers), P) float32: `query_gradient` of one query at several adapters over ONE base
    (an index's snapshots). On the BERT path the adapters run side by side: every frozen linear
    takes all their tokens in one product ((k T) x hidden instead of k products of T rows), each
    adapter's LoRA branches and head on its own slice. Equal to one `query_gradient` per adapter up
    to float rounding; bit-identical run to run."""
    if len(classifiers) == 1:
        return query_gradient(classifiers[0], text, label_id)[None]
    layers = [None if not _ONEDNN else _bert_layers(c.model) for c in classifiers]
    if any(ls is None for ls in layers) or not _one_base([ls for ls in layers if ls is not None]):
        return torch.stack([query_gradient(c, text, label_id) for c in classifiers])
    input_ids = query_tokens(classifiers[0], text)
    target = torch.tensor([int(label_id)], dtype=torch.int64)
    with ExitStack() as locks, torch.enable_grad():
        for c in classifiers:
            locks.enter_context(c.lock)
        params = [[p for _, p in trainable_parameters(c.model)] for c in classifiers]
        loss = _bert_loss_side_by_side([c.model for c in classifiers], layers, input_ids, target)  # type: ignore[arg-type]
        grads = torch.autograd.grad(loss, [p for ps in params for p in ps])
    out, start = [], 0
    for ps in params:
        out.append(torch.cat([g.reshape(-1) for g in grads[start:start + len(ps)]]))
        start += len(ps)
    return torch.stack(out)


def query_gradient_plain(classifier: Classifier, text: str, label_id: int) -> torch.Tensor:
    """(P,) float32: the same gradient through the model's own forward (reference for tests and the bench)."""
    return _gradient(classifier, text, label_id, plain=True)


def _gradient(classifier: Classifier, text: str, label_id: int, plain: bool) -> torch.Tensor:
    input_ids = query_tokens(classifier, text)
    target = torch.tensor([int(label_id)], dtype=torch.int64)
    with classifier.lock, torch.enable_grad():
        model = classifier.model
        model.eval()
        params = [p for _, p in trainable_parameters(model)]
        layers = None if plain or not _ONEDNN else _bert_layers(model)
        if layers is None:
            loss = _plain_loss(model, input_ids, target)
        else:
            loss = _bert_loss_side_by_side([model], [layers], input_ids, target)
        grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1) for g in grads])


def _plain_loss(model: nn.Module, input_ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return example_loss(model(input_ids, torch.ones_like(input_ids)), target)  # one unpadded row: all real


# -- the BERT path --------------------------------------------------------------------------------

_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_PACK_LOCK = threading.Lock()
# (id, data_ptr, version) of a frozen weight -> (the weight, kept alive so the id is not reused; packed W)
_PACKED: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _packed(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(oneDNN-packed W for the forward, W^T view for the backward) of a frozen (out, in) weight,
    packed once per process and weight. The base encoder's weights are shared by every classifier
    over it, so the packed copies cost the encoder's linear weights once (43 MB for MiniLM), not
    per adapter."""
    key = (id(weight), weight.data_ptr(), weight._version)
    entry = _PACKED.get(key)
    if entry is None:
        with _PACK_LOCK, torch.no_grad():
            entry = _PACKED.get(key)
            if entry is None:
                w = weight.detach().contiguous()
                entry = (weight, torch.ops.mkldnn._reorder_linear_weight(w, PACK_HINT))
                _PACKED[key] = entry
    return entry[1], weight.detach().t()


def clear_packed_weights() -> None:
    """Drop every packed weight (e.g. after unloading a base model)."""
    with _PACK_LOCK:
        _PACKED.clear()


def _onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [None], "")


class _FrozenLinear(torch.autograd.Function):
    """y = x W^T + b with W, b frozen: forward with packed W, backward (dL/dx = g W) with W^T."""

    @staticmethod
    def forward(x: torch.Tensor, packed: torch.Tensor, packed_t: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        return _onednn_linear(x, packed, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
        ctx.packed_t = inputs[2]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[no-untyped-def]
        return _onednn_linear(grad_out.contiguous(), ctx.packed_t, None), None, None, None


def _is_lora(module: nn.Module) -> bool:
    return hasattr(module, "base_layer") and hasattr(module, "lora_A")


def _supported_linear(module: nn.Module) -> bool:
    """A frozen nn.Linear, or a peft LoRA Linear (unmerged, vanilla LoRA) around one."""
    if _is_lora(module):
        active = list(getattr(module, "active_adapters", []))
        return (not module.merged and not module.disable_adapters and len(active) == 1
                and active[0] in module.lora_A and not getattr(module, "lora_variant", {})
                and isinstance(module.lora_dropout[active[0]], (nn.Identity, nn.Dropout))
                and _supported_linear(module.base_layer))
    return (type(module) is nn.Linear and not module.weight.requires_grad
            and (module.bias is None or not module.bias.requires_grad))


def _bert_layers(model: nn.Module) -> list[nn.Module] | None:
    """The encoder layers when `model` is a LoraClassifier over a plain BERT encoder this module
    can run; None sends the query to the model's own forward."""
    backbone = getattr(model, "backbone", None)
    config = getattr(backbone, "config", None)
    if (type(backbone).__name__ != "BertModel" or config is None or model.training
            or getattr(config, "_attn_implementation", None) not in ("eager", "sdpa")
            or config.hidden_act != "gelu" or config.is_decoder or getattr(config, "add_cross_attention", False)
            or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or type(getattr(model, "head", None)) is not nn.Linear):
        return None
    layers = list(backbone.encoder.layer)
    for layer in layers:
        attn = layer.attention
        if layer.chunk_size_feed_forward or hasattr(layer, "crossattention"):
            return None
        linears = (attn.self.query, attn.self.key, attn.self.value, attn.output.dense,
                   layer.intermediate.dense, layer.output.dense)
        if not all(_supported_linear(m) for m in linears):
            return None
        if type(layer.intermediate.intermediate_act_fn).__name__ != "GELUActivation":
            return None
    return layers


def _frozen_of(module: nn.Module) -> nn.Linear:
    return module.base_layer if _is_lora(module) else module


def _layer_linears(layer: nn.Module) -> tuple[nn.Module, ...]:
    attn = layer.attention
    return (attn.self.query, attn.self.key, attn.self.value, attn.output.dense, layer.intermediate.dense,
            layer.output.dense)


def _one_base(layers: Sequence[list[nn.Module]]) -> bool:
    """Every model's frozen tensors are the very same tensors (adapters over one shared base)."""
    first = layers[0]
    for other in layers[1:]:
        if len(other) != len(first):
            return False
        for a, b in zip(first, other):
            pairs = [(_frozen_of(x).weight, _frozen_of(y).weight) for x, y in zip(_layer_linears(a), _layer_linears(b))]
            pairs += [(a.attention.output.LayerNorm.weight, b.attention.output.LayerNorm.weight),
                      (a.output.LayerNorm.weight, b.output.LayerNorm.weight)]
            if any(x is not y for x, y in pairs):
                return False
    return True


def _linear_side_by_side(modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """A frozen linear (oneDNN, packed) for k adapters at once, plus each LoRA layer's branch exactly as
    peft computes it: x is (k T, in), slice i belongs to modules[i]'s adapter."""
    base = _frozen_of(modules[0])  # the same frozen weight for all (`_one_base`)
    packed, packed_t = _packed(base.weight)
    result = _FrozenLinear.apply(x, packed, packed_t, None if base.bias is None else base.bias.detach())
    if not _is_lora(modules[0]):
        return result
    slices = x.chunk(len(modules))
    branches = []
    for module, xs in zip(modules, slices):
        name = module.active_adapters[0]
        branches.append(module.lora_B[name](module.lora_A[name](xs)) * module.scaling[name])
    return result + torch.cat(branches)


def _bert_loss_side_by_side(models: Sequence[nn.Module], layers: Sequence[list[nn.Module]], input_ids: torch.Tensor,
                            target: torch.Tensor) -> torch.Tensor:
    """LoraClassifier.forward's loss for one unpadded row, summed over k adapters of one base, on
    (k T, hidden) tensors (k = 1: one classifier). Without padding the additive attention mask is all
    zeros and mean pooling is a plain mean, so both are left out."""
    k = len(models)
    with torch.no_grad():  # the embeddings are the shared base's and frozen
        hidden = models[0].backbone.embeddings(input_ids=input_ids)[0].repeat(k, 1)
    tokens = input_ids.shape[1]
    for depth in range(len(layers[0])):
        at = [model_layers[depth] for model_layers in layers]
        attn = at[0].attention.self
        heads, head_size = attn.num_attention_heads, attn.attention_head_size

        def split(t: torch.Tensor) -> torch.Tensor:  # (k T, H*d) -> (k, H, T, d)
            return t.view(k, tokens, heads, head_size).transpose(1, 2)

        q = split(_linear_side_by_side([m.attention.self.query for m in at], hidden))
        key = split(_linear_side_by_side([m.attention.self.key for m in at], hidden))
        v = split(_linear_side_by_side([m.attention.self.value for m in at], hidden))
        weights = torch.softmax(torch.matmul(q, key.transpose(2, 3)) * attn.scaling, dim=-1)
        context = torch.matmul(weights, v).transpose(1, 2).reshape(k * tokens, heads * head_size)
        out = at[0].attention.output
        attended = _layer_norm(out.LayerNorm, _linear_side_by_side([m.attention.output.dense for m in at], context)
                               + hidden)
        inner = F.gelu(_linear_side_by_side([m.intermediate.dense for m in at], attended))
        hidden = _layer_norm(at[0].output.LayerNorm,
                             _linear_side_by_side([m.output.dense for m in at], inner) + attended)
    pooled = hidden.view(k, tokens, -1).sum(dim=1) / tokens
    return sum(example_loss(model.head(pooled[i:i + 1]), target) for i, model in enumerate(models))


def _layer_norm(module: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)

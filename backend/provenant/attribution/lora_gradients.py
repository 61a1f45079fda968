"""Per-example gradients of a LoRA model's trainable Linear tensors from one batched backward pass.

Every trainable tensor of our adapters is the weight (or bias) of an `nn.Linear`: peft's
`lora_A.default` / `lora_B.default`, and a classifier's head. For a Linear y = x W^T + b and a
batch loss that is the SUM of per-row losses, row n's gradient is
    dL_n/dW = sum over positions t of (dL/dy[n, t])^T x[n, t],   dL_n/db = sum over t of dL/dy[n, t],
because rows do not interact in the forward pass (eval mode; padding is masked). So one ordinary
forward over a micro-batch, with hooks recording each Linear's input and output, and one backward
for the gradients of those outputs (never of the weights themselves), gives every row's gradient:
the same numbers as one backward per row (up to float rounding), for about the cost of one
training step per micro-batch. This is the trick Opacus and
LoGra use. Measured on the attribution benchmark's MiniLM classifier (280 rows, 2 cores): 1.08 s
against 1.43 s for the torch.func.vmap path; on its small causal Llama, against a Python loop of
one backward per row, see bench/RESULTS.md (session 9).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class LoraGradientError(ValueError):
    """A model whose trainable tensors are not all Linear weights or biases."""


def _linear_of(model: nn.Module, tensor_name: str) -> tuple[str, nn.Linear, str]:
    path, kind = tensor_name.rsplit(".", 1)
    module = model.get_submodule(path)
    if not isinstance(module, nn.Linear) or kind not in ("weight", "bias"):
        raise LoraGradientError(f"trainable tensor {tensor_name} is not a Linear weight or bias")
    return path, module, kind


@contextmanager
def _recording(linears: dict[str, nn.Linear]) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    """Record each Linear's input (detached) and output (in the graph) during one forward."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(path: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            inputs[path] = args[0].detach()
            outputs[path] = output
        return record

    handles = [module.register_forward_hook(hook(path)) for path, module in linears.items()]
    try:
        yield inputs, outputs
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def adapters_side_by_side(model: nn.Module, tensor_names: Sequence[str],
                          others: Sequence[Mapping[str, torch.Tensor]]) -> Iterator[int]:
    """Run k = 1 + len(others) adapters of one model side by side: inside, a batch of k x n rows sends
    rows [i n, (i + 1) n) through adapter i (0: the model's own trainable tensors; i >= 1: `others[i-1]`,
    name -> tensor) and every other module, frozen, sees all k n rows in one product. Yields k.

    Each trainable Linear's output is replaced by a batched product with its k weights stacked (the
    model's own first, which keeps the output in the graph), so `per_example_linear_gradients` run
    inside gives row i its gradient AT adapter i (its formula reads only activations and output
    gradients). This is how one answer is differentiated at an index's snapshot adapters in one pass
    instead of k: the frozen base, which dominates the cost, runs once on k times the rows."""
    if not others:  # one adapter: the model as it is
        yield 1
        return
    located = [_linear_of(model, name) for name in tensor_names]
    for other in others:
        if set(other) != set(tensor_names):
            raise LoraGradientError("an adapter to run side by side does not have the model's trainable tensors")
    by_module: dict[str, tuple[nn.Linear, dict[str, list[torch.Tensor]]]] = {}
    for (path, module, kind), name in zip(located, tensor_names, strict=True):
        entry = by_module.setdefault(path, (module, {}))
        entry[1][kind] = [getattr(module, kind)] + [other[name].to(getattr(module, kind).dtype) for other in others]
    k = 1 + len(others)

    def hook(module: nn.Linear, stacks: dict[str, list[torch.Tensor]]) -> Callable[..., torch.Tensor]:
        def side_by_side(_: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            x = args[0]
            if x.shape[0] % k:
                raise LoraGradientError(f"a batch of {x.shape[0]} rows cannot run {k} adapters side by side")
            weights = torch.stack(stacks["weight"]) if "weight" in stacks else module.weight.expand(k, -1, -1)
            y = torch.matmul(x.reshape(k, -1, x.shape[-1]), weights.transpose(1, 2))
            if "bias" in stacks:
                y = y + torch.stack(stacks["bias"])[:, None, :]
            elif module.bias is not None:
                y = y + module.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])
        return side_by_side

    # registered before `per_example_linear_gradients`' recording hooks, so those see the replaced output
    handles = [module.register_forward_hook(hook(module, stacks)) for module, stacks in by_module.values()]
    try:
        yield k
    finally:
        for handle in handles:
            handle.remove()


def per_example_linear_gradients(model: nn.Module, tensor_names: Sequence[str], batches: Sequence[object],
                                 summed_loss: Callable[[object], torch.Tensor], out: torch.Tensor,
                                 row_positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """Fill `out[row_positions[k]]` with the per-row gradients of batch k (whose rows are those
    positions, in order): the trainable tensors `tensor_names`, flattened and concatenated in that
    order. `summed_loss(batch)` runs the forward and returns the sum of the batch's per-row losses."""
    located = [_linear_of(model, name) for name in tensor_names]
    linears = {path: module for path, module, _ in located}
    sizes = [getattr(module, kind).numel() for _, module, kind in located]
    if out.shape[1] != sum(sizes):
        raise ValueError(f"out has {out.shape[1]} columns for {sum(sizes)} gradient entries")
    with _recording(linears) as (inputs, outputs), torch.enable_grad():
        for batch, positions in zip(batches, row_positions, strict=True):
            inputs.clear()
            outputs.clear()
            n = len(positions)
            loss = summed_loss(batch)
            # dL/d(output) of each Linear, and nothing else: no weight gradient is formed or accumulated
            # (16% faster than backward() into the weights for one answer at 4 adapters, same bits)
            paths = [path for path, output in outputs.items() if output.requires_grad]
            grads = torch.autograd.grad(loss, [outputs[path] for path in paths], allow_unused=True)
            output_grads = {path: g for path, g in zip(paths, grads, strict=True) if g is not None}
            block = torch.empty(n, sum(sizes), dtype=torch.float32)
            offset = 0
            for (path, _, kind), size in zip(located, sizes, strict=True):
                grad_out = output_grads.get(path)
                if grad_out is None:  # the loss does not reach this module: zero gradient
                    block[:, offset:offset + size] = 0.0
                else:
                    g = grad_out.reshape(n, -1, grad_out.shape[-1]).to(torch.float32)
                    if kind == "weight":
                        x = inputs[path].reshape(n, -1, inputs[path].shape[-1]).to(torch.float32)
                        block[:, offset:offset + size] = torch.bmm(g.transpose(1, 2), x).reshape(n, -1)
                    else:
                        block[:, offset:offset + size] = g.sum(dim=1)
                offset += size
            out[list(positions)] = block
    return out

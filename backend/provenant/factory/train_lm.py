"""Train a LoRA adapter on a causal language model: bit-reproducibly on the CPU, or on a GPU.

Two row kinds: `{"text"}` rows train on every token; `{"prompt", "completion"}` rows train on the
completion only (the prompt's label positions are -100, so they add nothing to the loss). Each row
becomes `[BOS] prompt completion [EOS]`, the same token stream serving sees (it encodes the prompt
with a leading BOS and generates until EOS). The loss of a mini-batch is the mean over its target
tokens, as Hugging Face's `LlamaForCausalLM(labels=...)` computes it.

The adapter is written in the serving format (`provenant.serving.lora`): peft key names
`base_model.model.<module path>.lora_{A,B}.weight`, float32, so a trained model is servable as is
and `peft.set_peft_model_state_dict` loads the same bytes. Same examples + settings + base + torch
thread count give bit-identical bytes on the CPU (the loop is `provenant.factory.loop`). On a GPU
(`device`, default "auto") the training runs on a moved copy and the returned module is the CPU one
rebuilt from the adapter bytes (`provenant.factory.devices`).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from provenant.factory.base_models import ByteTokenizer, CausalBaseModel, load_causal_base_model
from provenant.factory.devices import describe, module_on, resolve_device
from provenant.factory.loop import Checkpoints, LoopSettings, run_epochs
from provenant.factory.qlora import load_nf4_base
from provenant.factory.replicas import Replicas
from provenant.factory.train import LoraSettings, TrainedAdapter
from provenant.serving.lora import CAUSAL_ADAPTER_FORMAT, CAUSAL_TASK

IGNORE = -100  # label of positions that add nothing to the loss
_SERVING_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LmExample:
    """One causal-LM training row, traceable to its contribution. `prompt` is "" for text rows."""

    prompt: str
    completion: str  # the whole text of a text row
    contribution_id: int
    row_index: int
    datanet_id: int = 0

    @classmethod
    def from_row(cls, row: dict, contribution_id: int, row_index: int, datanet_id: int = 0) -> "LmExample":
        if "completion" in row:
            return cls(row["prompt"], row["completion"], contribution_id, row_index, datanet_id)
        return cls("", row["text"], contribution_id, row_index, datanet_id)


@dataclass(frozen=True)
class Tokenized:
    input_ids: list[int]
    labels: list[int]  # IGNORE on BOS and prompt tokens


def _encode(tokenizer: object, text: str) -> list[int]:
    if not text:
        return []
    if isinstance(tokenizer, ByteTokenizer):
        return tokenizer.encode(text, add_bos=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]


def encode_text(base: CausalBaseModel, text: str) -> list[int]:
    """Token ids of `text` without BOS or EOS, as `tokenize` encodes a prompt or a completion."""
    return _encode(base.tokenizer, text)


def tokenize(base: CausalBaseModel, example: LmExample, max_length: int) -> Tokenized:
    """`[BOS] prompt completion [EOS]`, at most `max_length` tokens, labels on the completion + EOS.
    Too long: the completion keeps at least half the budget and the prompt loses its start."""
    bos = getattr(base.tokenizer, "bos_token_id", None)
    prefix = [] if bos is None else [int(bos)]
    prompt, target = _encode(base.tokenizer, example.prompt), _encode(base.tokenizer, example.completion)
    target = target + [base.eos_token_id]
    budget = max_length - len(prefix)
    if len(prompt) + len(target) > budget:
        keep_target = min(len(target), max(budget - len(prompt), budget // 2, 1))
        target = target[:keep_target]
        room = budget - keep_target
        prompt = prompt[len(prompt) - room:] if room > 0 else []
    ids = prefix + prompt + target
    return Tokenized(input_ids=ids, labels=[IGNORE] * (len(prefix) + len(prompt)) + target)


def pad_id(base: CausalBaseModel) -> int:
    pad = getattr(base.tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else base.eos_token_id


def collate(rows: Sequence[Tokenized], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels); padding is masked and ignored."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.input_ids)] = torch.tensor(r.input_ids)
        mask[i, :len(r.input_ids)] = 1
        labels[i, :len(r.labels)] = torch.tensor(r.labels)
    return ids, mask, labels


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token cross-entropy over target positions, number of target positions)."""
    shifted = labels[:, 1:].reshape(-1)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted, ignore_index=IGNORE,
                           reduction="sum")
    return loss, int((shifted != IGNORE).sum())


def build_lora_lm(base: CausalBaseModel, settings: LoraSettings) -> nn.Module:
    """A fresh LoRA view of the shared frozen base: A ~ kaiming-uniform (seeded), B = 0."""
    shared = {id(t): t for t in itertools.chain(base.model.parameters(), base.model.buffers())}
    model = copy.deepcopy(base.model, memo=shared)  # new module tree, the base's tensors
    return add_lora(model, settings, base.name)


def add_lora(model: nn.Module, settings: LoraSettings, base_name: str) -> nn.Module:
    """Inject LoRA into `model` (any device, full-precision or 4-bit linears) and initialise it from
    `settings.seed` on the CPU, so the initial adapter is the same wherever the training runs."""
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
        try:
            model = inject_adapter_in_model(config, model)
        except ValueError as exc:
            raise ValueError(f"LoRA target_modules {list(settings.target_modules)} do not match the causal base "
                             f"model {base_name!r}: {exc}") from exc
    for name, param in model.named_parameters():
        param.requires_grad_(".lora_" in name)
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.no_grad():
        for name, param in trainable(model):
            values = torch.zeros(param.shape, dtype=torch.float32)
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)  # peft's default
            elif ".lora_B." not in name:  # pragma: no cover - guards future peft variants (lora_embedding_*)
                raise ValueError(f"unexpected trainable tensor {name}")
            param.copy_(values)
    model.eval()
    return model


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda item: item[0])


def _serving_name(name: str) -> str:
    # peft's in-model name "x.q_proj.lora_A.default.weight" -> saved name "base_model.model.x.q_proj.lora_A.weight"
    return _SERVING_PREFIX + name.replace(".default.", ".")


def lm_adapter_bytes(model: nn.Module) -> bytes:
    """The serving format: one metadata key (several come out in a per-process random order)."""
    state = {_serving_name(n): p.detach().to("cpu", torch.float32).contiguous().clone() for n, p in trainable(model)}
    return safetensors_save(state, metadata={"format": CAUSAL_ADAPTER_FORMAT})


def lm_adapter_tensors(model: nn.Module, adapter_bytes: bytes) -> dict[str, torch.Tensor]:
    """An adapter's tensors keyed by `model`'s trainable names (serving bytes -> in-model names)."""
    state = safetensors_load(adapter_bytes)
    names = {_serving_name(n): n for n, _ in trainable(model)}
    if set(state) != set(names):
        raise ValueError("adapter does not fit this model: tensor names differ")
    return {names[saved]: tensor for saved, tensor in state.items()}


def load_lm_adapter(model: nn.Module, adapter_bytes: bytes) -> None:
    tensors = lm_adapter_tensors(model, adapter_bytes)
    with torch.no_grad():
        for name, param in trainable(model):
            param.copy_(tensors[name])


def load_lm_module(adapter_bytes: bytes, adapter_config: dict) -> tuple[nn.Module, CausalBaseModel]:
    """A stored adapter back as the module tree `fit_causal_lm` trained (trainable LoRA tensors on the
    shared frozen base), so gradient attribution sees the same tensor layout and adapter fingerprint."""
    try:
        settings = LoraSettings.from_dict(adapter_config["lora"])
        base_model = adapter_config["base_model"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"adapter config is not a Factory causal-LM config (missing {exc})") from exc
    base = load_causal_base_model(base_model)
    model = build_lora_lm(base, settings)
    load_lm_adapter(model, adapter_bytes)
    model.eval()
    return model, base


def fit_causal_lm(examples: Sequence[LmExample], settings: LoraSettings, base_model: str,
                  eval_examples: Sequence[LmExample] = (), progress: Callable[[dict], None] | None = None,
                  checkpoints: Checkpoints | None = None,
                  device: str | None = None) -> tuple[TrainedAdapter, nn.Module]:
    """Fine-tune LoRA on a causal LM; (adapter + config + metrics, the trained CPU module in eval mode).
    `device`: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N"; under torchrun, data-parallel."""
    if len(examples) == 0:
        raise ValueError("cannot train on zero examples")
    base = load_causal_base_model(base_model)
    if settings.max_length > base.max_positions:
        raise ValueError(f"max_length {settings.max_length} exceeds the base's {base.max_positions} positions")
    rows = [tokenize(base, ex, settings.max_length) for ex in examples]
    pad = pad_id(base)
    where = resolve_device(device)
    replicas = Replicas.from_env(where)
    cpu_model = build_lora_lm(base, settings)
    if settings.quantize_base == "nf4":  # QLoRA: the same LoRA init over a 4-bit copy of the base
        model = add_lora(load_nf4_base(base, where), settings, base.name)
    else:
        model = module_on(cpu_model, where)

    def batch_loss(idx: Sequence[int]) -> tuple[torch.Tensor, float]:
        ids, mask, labels = (t.to(where) for t in collate([rows[i] for i in idx], pad))
        total, count = token_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        return total / max(count, 1), float(count)

    result = run_epochs(model, [p for _, p in trainable(model)], len(rows),
                        LoopSettings(epochs=settings.epochs, batch_size=settings.batch_size,
                                     learning_rate=settings.learning_rate, seed=settings.seed),
                        batch_loss, save_adapter=lambda: lm_adapter_bytes(model),
                        load_adapter=lambda data: load_lm_adapter(model, data),
                        progress=progress, checkpoints=checkpoints, device=where, replicas=replicas)
    metrics: dict = {"train_loss": result.epoch_losses, "seconds": result.seconds, "examples": len(rows),
                     "train_tokens": sum(sum(1 for t in r.labels[1:] if t != IGNORE) for r in rows),
                     "examples_per_second": result.examples_per_second, "threads": torch.get_num_threads(),
                     "device": describe(where), "processes": replicas.world if replicas else 1,
                     "quantize_base": settings.quantize_base}
    if eval_examples:
        metrics.update(evaluate_lm(model, base, eval_examples, settings, where))
        if progress is not None:
            progress({"stage": "eval", "eval_loss": metrics["eval_loss"]})
    config = {"format": CAUSAL_ADAPTER_FORMAT, "task": CAUSAL_TASK, "base_model": base_model,
              "lora": settings.to_dict()}
    adapter_bytes = lm_adapter_bytes(model)
    if model is not cpu_model:
        load_lm_adapter(cpu_model, adapter_bytes)  # what attribution and serving see: the CPU module
    return (TrainedAdapter(adapter_bytes=adapter_bytes, config=config, metrics=metrics,
                           epoch_adapters=result.epoch_adapters), cpu_model)


@torch.no_grad()
def evaluate_lm(model: nn.Module, base: CausalBaseModel, examples: Sequence[LmExample],
                settings: LoraSettings, device: torch.device | None = None) -> dict:
    """Mean next-token loss per target token (and its perplexity) on held-out rows."""
    rows = [tokenize(base, ex, settings.max_length) for ex in examples]
    pad, loss_sum, tokens = pad_id(base), 0.0, 0
    for start in range(0, len(rows), settings.batch_size):
        ids, mask, labels = (t.to(device or "cpu") for t in collate(rows[start:start + settings.batch_size], pad))
        total, count = token_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
        loss_sum += total.item()
        tokens += count
    loss = loss_sum / max(tokens, 1)
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_examples": len(rows),
            "eval_tokens": tokens}


def train_causal_lm(examples: Sequence[LmExample], settings: LoraSettings, base_model: str,
                    eval_examples: Sequence[LmExample] = (), progress: Callable[[dict], None] | None = None,
                    checkpoints: Checkpoints | None = None, device: str | None = None) -> TrainedAdapter:
    return fit_causal_lm(examples, settings, base_model, eval_examples, progress, checkpoints, device)[0]

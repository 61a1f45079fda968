"""Give the benchmark's causal LM real (if small) knowledge before any contributor's data.

Why: LoRA on the factory's random-init "tiny-llama" learns letter statistics, not skills (exact
match 0). Why it was slow: that model has 29 M parameters (hidden 512, 9 layers); one AdamW step on
32 rows of ~20 bytes is ~111 GFLOP, and 2 shared cores give ~20-35 GFLOP/s in `aten::mm` (80% of the
profile), so ~3-6 s a step: 300 steps took 1,802 s. Nothing was wrong but the size.

So the benchmark uses `bench_llama_config`: the SAME family and code path (transformers'
LlamaForCausalLM, byte tokenizer, seeded init, no download), scaled to hidden 128 x 4 layers (0.89 M
parameters, ~33x fewer FLOPs a token: a 64-row step takes 0.17-0.5 s on the same shared cores).
It is first trained on generated text in the `"<op> <letters>="` format: NAMED primitive string operations (copy, reverse, rotate, shift, swap
pairs, first/last letter, ...), the way a pretrained LLM knows how to reverse a string, and three
instruction words whose operation depends on the input's length (`ROUTED`). The task's contributors
then teach something the base cannot know: what the never-pretrained word `do` means at each input
length (tasks.causal_task); no pretraining row pairs a length with the operation `do` gives it. The
weights are cached on disk, keyed by the sha256 of everything that determines them.

The default base (1,200 steps) is also committed, under `pinned/`, and read from there first: the
same seeded run pretrains a different base on another CPU (float kernels differ, and 1,200 steps
amplify it: base loss on reverse/3 2.816 on session 10-12's VMs, 6.200 on session 13's AMD EPYC),
so without it the causal task's numbers would depend on the machine that first ran it.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bench.attribution.tasks import _CAUSAL_SKILLS, CAUSAL_OP, LETTERS, STRING_OPS
from provenant.factory.base_models import ByteTokenizer, build_tiny_llama, tiny_llama_config

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "attribution"
PINNED = Path(__file__).resolve().parent / "pinned"  # committed bases, the same on every machine
GENERATOR_VERSION = 4  # bump when the pretraining text changes
PRETRAIN_OPS = {  # named ops; the task's instruction word (`do`) never appears here
    "cp": lambda s: s,
    "fst": lambda s: s[0],
    "lst": lambda s: s[-1],
    "tl": lambda s: s[1:],
    "pv": lambda s: "".join(LETTERS[(LETTERS.index(c) - 1) % len(LETTERS)] for c in s),
    "nx": lambda s: "".join(LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)] for c in s),
    **STRING_OPS,  # rv, rl, rr, sw: the operations the task's skills route to
}
# Instruction words whose meaning depends on the input's length, like the task's `do`, so the base
# learns to count and look an operation up; each is a cyclic shift of `do`'s table (a Latin square),
# so no (length, operation) pair of the task is ever pretrained: that routing stays the contributors'.
_TASK_TABLE = sorted(_CAUSAL_SKILLS.values())  # [(3, "rv"), (4, "rl"), (5, "rr"), (6, "sw")]
ROUTED = {word: {length: _TASK_TABLE[(i + k) % len(_TASK_TABLE)][1] for i, (length, _) in enumerate(_TASK_TABLE)}
          for k, word in enumerate(("go", "mix", "zap"), start=1)}
assert CAUSAL_OP not in PRETRAIN_OPS and CAUSAL_OP not in ROUTED
assert all(table[length] != op for table in ROUTED.values() for length, op in _TASK_TABLE)


def bench_llama_config():  # type: ignore[no-untyped-def]
    """The factory's tiny-llama config, scaled down for 2 CPU cores (same family, tokenizer and ids)."""
    config = tiny_llama_config()
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = 128, 352, 4
    config.num_attention_heads = config.num_key_value_heads = 4
    config.head_dim = 32
    config.max_position_embeddings = 64
    config.initializer_range = 0.02
    return config


def build_base(name: str, seed: int = 0) -> nn.Module:
    """A fresh, seeded, frozen LlamaForCausalLM: "tiny-llama" (the factory's) or "bench-llama" (small)."""
    if name == "tiny-llama":
        return build_tiny_llama(seed=seed)
    if name != "bench-llama":
        raise ValueError(f"unknown benchmark base {name!r}")
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(bench_llama_config())
    return model.eval().requires_grad_(False)


def pretrain_rows(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        if rng.random() < 0.5:  # a named primitive, 2-7 letters
            op = rng.choice(sorted(PRETRAIN_OPS))
            s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7)))
            out.append((f"{op} {s}=", PRETRAIN_OPS[op](s)))
        else:  # a length-routed instruction word, 3-6 letters
            word = rng.choice(sorted(ROUTED))
            s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 6)))
            out.append((f"{word} {s}=", STRING_OPS[ROUTED[word][len(s)]](s)))
    return out


def _batch(rows: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss on the completion and EOS only (the prompt's letters are random: nothing to learn there)."""
    tok = ByteTokenizer()
    seqs, starts = [], []
    for p, c in rows:
        prompt = tok.encode(p)
        seqs.append(prompt + tok.encode(c, add_bos=False) + [tok.eos_token_id])
        starts.append(len(prompt))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    loss_mask = torch.zeros((len(seqs), width - 1), dtype=torch.float32)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        loss_mask[i, start - 1:len(s) - 1] = 1.0
    return ids, mask, loss_mask


def _loss(model: nn.Module, rows: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, loss_mask = _batch(rows)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tokens = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
    loss = (tokens.view(len(ids), -1) * loss_mask).sum() / loss_mask.sum()
    exact = ((logits.argmax(-1) == ids[:, 1:]) | (loss_mask == 0)).all(1).float().mean()
    return loss, exact


def weights_path(name: str, steps: int, batch_size: int = 64, learning_rate: float = 3e-3, seed: int = 0) -> Path:
    """Where `pretrained_base` keeps these weights: `pinned/` when committed there, else the cache."""
    config = bench_llama_config() if name == "bench-llama" else tiny_llama_config()
    key = {"base": name, "config": config.to_dict(), "steps": steps, "batch": batch_size, "lr": learning_rate,
           "seed": seed, "generator": GENERATOR_VERSION, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    file = f"{name}-pretrained-{digest}.safetensors"
    return PINNED / file if (PINNED / file).exists() else CACHE / file


def pretrained_base(name: str, steps: int, batch_size: int = 64, learning_rate: float = 3e-3, seed: int = 0,
                    log=print) -> nn.Module:  # type: ignore[no-untyped-def]
    """`name` after `steps` full-model AdamW steps (warm-up, cosine decay) on `pretrain_rows` (cached)."""
    path = weights_path(name, steps, batch_size, learning_rate, seed)
    model = build_base(name, seed=0)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        return model.eval().requires_grad_(False)
    model.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, k / max(1, steps))))))
    rng = random.Random(seed + 4242)
    started = time.perf_counter()
    for step in range(steps):
        loss, exact = _loss(model, pretrain_rows(rng, batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            log(f"pretraining {name}: step {step + 1}/{steps}, loss {loss.item():.3f}, "
                f"exact match {exact.item():.2f}, {time.perf_counter() - started:.0f}s")
    model.eval().requires_grad_(False)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model


def pretrained_tiny_llama(steps: int) -> nn.Module:
    """Back-compatible name: the factory's tiny-llama after `steps` pretraining steps."""
    return pretrained_base("tiny-llama", steps, batch_size=32, learning_rate=1e-3)

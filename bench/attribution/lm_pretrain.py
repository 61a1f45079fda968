"""Give the benchmark's tiny causal LM real (if small) language knowledge before any contributor's data.

The factory's "tiny-llama" is a seeded random init: LoRA on it learns letter statistics, not skills,
so the causal task's exact match was 0 and its ground truth was noise. Here the whole model is first
trained for a bounded number of steps on generated text DISJOINT from every contributor's data:
the same "<op> <letters>=" format but other operations (copy, first/last letter, drop the first
letter, shift each letter by one, pair swap) and different ops names, so the base learns to read
and write letter strings after a prefix, and the four skills (reverse, upper-case, double, sort)
are left for the contributors' LoRA fine-tunes to teach. The weights are cached on disk, keyed by
the sha256 of everything that determines them, so every retrain in a run (and later runs) share them.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from bench.attribution.tasks import LETTERS
from provenant.factory.base_models import ByteTokenizer, build_tiny_llama, tiny_llama_config

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "attribution"
GENERATOR_VERSION = 1  # bump when the pretraining text changes
_SHIFT = {c: LETTERS[(i + 1) % len(LETTERS)] for i, c in enumerate(LETTERS)}
PRETRAIN_OPS = {  # none of these is a skill of the task (rev, up, dbl, srt), nor its ops name
    "cp": lambda s: s,
    "fst": lambda s: s[0],
    "lst": lambda s: s[-1],
    "tl": lambda s: s[1:],
    "nx": lambda s: "".join(_SHIFT[c] for c in s),
    "sw": lambda s: "".join(s[i + 1] + s[i] for i in range(0, len(s) - 1, 2)) + (s[-1] if len(s) % 2 else ""),
}


def pretrain_rows(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        op = rng.choice(sorted(PRETRAIN_OPS))
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 7)))
        out.append((f"{op} {s}=", PRETRAIN_OPS[op](s)))
    return out


def _batch(rows: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tok = ByteTokenizer()
    seqs = [tok.encode(p) + tok.encode(c, add_bos=False) + [tok.eos_token_id] for p, c in rows]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids, mask, mask[:, 1:].to(torch.float32)


def pretrained_tiny_llama(steps: int, batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
                          log=print) -> nn.Module:  # type: ignore[no-untyped-def]
    """The tiny llama after `steps` full-model AdamW steps on `pretrain_rows` (cached on disk)."""
    key = {"config": tiny_llama_config().to_dict(), "steps": steps, "batch": batch_size, "lr": learning_rate,
           "seed": seed, "generator": GENERATOR_VERSION, "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = CACHE / f"tiny-llama-pretrained-{digest}.safetensors"
    model = build_tiny_llama(seed=0)
    if path.exists():
        model.load_state_dict(load_file(str(path)))
        model.eval().requires_grad_(False)
        return model
    model.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    rng = random.Random(seed + 4242)
    started = time.perf_counter()
    for step in range(steps):
        ids, mask, loss_mask = _batch(pretrain_rows(rng, batch_size))
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        tokens = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none")
        loss = (tokens.view(len(ids), -1) * loss_mask).sum() / loss_mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"pretraining tiny-llama: step {step + 1}/{steps}, loss {loss.item():.3f}, "
                f"{time.perf_counter() - started:.0f}s")
    model.eval().requires_grad_(False)
    CACHE.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model

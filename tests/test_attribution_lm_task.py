"""The attribution benchmark's causal-LM task and its small Llama base (bench/attribution/)."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.attribution import lm_model, lm_pretrain  # noqa: E402
from bench.attribution.tasks import (CAUSAL_OP, FLIPPED_CONTRIBUTOR, SKILL_OWNER, STRING_OPS, SYBIL,  # noqa: E402
                                     SYBIL_VICTIM, causal_task)


def test_no_prompt_word_or_alphabet_names_a_skill() -> None:
    task = causal_task()
    skill_rows = [r for r in task.train if r.skill in SKILL_OWNER]
    assert {r.text.split()[0] for r in skill_rows + list(task.test)} == {CAUSAL_OP}
    for skill in SKILL_OWNER:  # each skill is one input length, its completion a same-length rewrite
        rows = [r for r in skill_rows if r.skill == skill]
        assert len({len(r.text) for r in rows}) == 1
        assert all(len(r.label) == len(r.text) - len(CAUSAL_OP) - 2 for r in rows)
    letters = {skill: Counter("".join(r.label for r in skill_rows if r.skill == skill)) for skill in SKILL_OWNER}
    assert all(set(c) <= set(lm_pretrain.LETTERS) and len(c) >= 20 for c in letters.values())
    flipped = [r for r in task.train if r.flipped]
    owner_rows = [r for r in task.train if r.contributor == FLIPPED_CONTRIBUTOR]
    assert {r.contributor for r in flipped} == {FLIPPED_CONTRIBUTOR} and 0.1 <= len(flipped) / len(owner_rows) <= 0.2
    length, op = 5, "rr"  # a flipped row's completion is NOT the skill's answer; the clean ones are
    for r in owner_rows:
        letters = r.text[len(CAUSAL_OP) + 1:-1]
        assert (STRING_OPS[op](letters) == r.label) != r.flipped and sorted(r.label) == sorted(letters)
        assert len(letters) == length
    by = {c: [(r.text, r.label) for r in task.train if r.contributor == c] for c in (SYBIL, SYBIL_VICTIM)}
    assert by[SYBIL] == by[SYBIL_VICTIM]
    assert not {r.text for r in task.test} & {r.text for r in task.train}


def test_bench_llama_is_the_tiny_llama_family_scaled_down() -> None:
    small = lm_pretrain.build_base("bench-llama")
    assert type(small).__name__ == "LlamaForCausalLM"
    assert small.config.vocab_size == 320 and small.config.eos_token_id == 257
    assert sum(p.numel() for p in small.parameters()) < 1_500_000
    again = lm_pretrain.build_base("bench-llama")  # seeded: the same init every time
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), again.state_dict().values()))


def test_the_benchmark_base_is_committed_so_every_machine_fine_tunes_the_same_weights() -> None:
    assert lm_pretrain.weights_path("bench-llama", 1200).parent == lm_pretrain.PINNED  # the bench's default
    logs: list[str] = []
    base = lm_pretrain.pretrained_base("bench-llama", 1200, log=logs.append)
    assert logs == []  # read from pinned/, not pretrained again
    _, exact = lm_pretrain._loss(base, lm_pretrain.pretrain_rows(random.Random(7), 64))
    assert exact > 0.9  # it knows the named primitives: pretrained weights, not the seeded init


def test_lora_on_the_small_base_fits_a_skill_quickly() -> None:
    torch.manual_seed(0)
    task = causal_task(rows_per_skill=8, bulk_rows=4, test_per_skill=2)
    rows = [r for r in task.train if r.skill == "category"]
    settings = lm_model.LmSettings(epochs=30, batch_size=8, learning_rate=1e-2)  # random-init base: 30 steps
    before = lm_model.eval_losses(lm_model.build_lora_lm(settings), rows).mean()
    trained = lm_model.train_lm(rows, settings)
    after = lm_model.eval_losses(trained.model, rows).mean()
    assert after < before - 1.0, (before, after)
    grads = lm_model.per_example_gradients(trained.model, rows[:2])
    assert grads.shape[0] == 2 and torch.isfinite(grads).all() and grads.abs().sum() > 0

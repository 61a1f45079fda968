"""Gradient attribution for causal-LM adapters: a real LoRA fine-tune of the config-built tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from provenant.attribution.aggregate import ContributionMeta, aggregate
from provenant.attribution.index import AttributionIndexError, IndexSettings
from provenant.attribution.lm import (attribute_lm_many, build_lm_index, per_example_lm_gradients,
                                      per_example_lm_gradients_loop)
from provenant.factory.base_models import load_causal_base_model
from provenant.factory.train import LoraSettings
from provenant.factory.train_lm import LmExample, build_lora_lm, collate, fit_causal_lm, token_loss, tokenize

SETTINGS = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=2, batch_size=8, max_length=40,
                        learning_rate=5e-3, seed=1)
SKILLS = {  # contributor -> rows of one skill, lexically unlike the others
    1: [LmExample(f"Q: {i} plus {i}? A:", f" {2 * i}", 1, i, 1) for i in range(8)],
    2: [LmExample("", f"the cat sat on mat number {i}.", 2, i, 1) for i in range(8)],
    3: [LmExample(f"Translate to French: {w}", f" {f}", 3, i, 2)
        for i, (w, f) in enumerate([("dog", "chien"), ("cat", "chat"), ("house", "maison"), ("water", "eau"),
                                    ("bread", "pain"), ("apple", "pomme"), ("tree", "arbre"), ("car", "voiture")])]}
ROWS = [row for rows in SKILLS.values() for row in rows]
META = {1: ContributionMeta("0xaaa", 1), 2: ContributionMeta("0xbbb", 1), 3: ContributionMeta("0xccc", 2)}
INDEX_SETTINGS = IndexSettings(projection_dim=256, seed=3)


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, object]:
    _, model = fit_causal_lm(ROWS, SETTINGS, "tiny-llama")
    return model, load_causal_base_model("tiny-llama")


def test_per_row_gradients_are_those_of_the_summed_target_loss(trained) -> None:
    model, base = trained
    rows = [ROWS[0], ROWS[9]]
    grads = per_example_lm_gradients(model, base, rows, SETTINGS.max_length)
    params = [p for n, p in sorted(model.named_parameters()) if p.requires_grad]
    for i, row in enumerate(rows):
        ids, mask, labels = collate([tokenize(base, row, SETTINGS.max_length)], 0)
        with torch.enable_grad():
            loss, _ = token_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
            expected = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        torch.testing.assert_close(grads[i], expected)
    assert grads[0].abs().sum() > 0


def test_batched_row_gradients_match_the_one_row_loop(trained) -> None:
    model, base = trained
    rows = ROWS + [LmExample("x" * 80, " y", 4, 0, 1)]  # lengths from 10 to the 40-token cap
    batched = per_example_lm_gradients(model, base, rows, SETTINGS.max_length)
    looped = per_example_lm_gradients_loop(model, base, rows, SETTINGS.max_length)
    # float rounding of batched products, against each row's gradient norm (elementwise, a few of the
    # 3.7 M entries near zero differ by up to 5e-6)
    relative = (batched - looped).norm(dim=1) / looped.norm(dim=1).clamp(min=1e-12)
    assert float(relative.max()) < 1e-4, relative
    assert batched.abs().sum(dim=1).min() > 0
    assert torch.equal(per_example_lm_gradients(model, base, rows, SETTINGS.max_length), batched)  # run to run


def test_each_answer_is_credited_to_the_contributor_whose_skill_it_uses(trained) -> None:
    model, base = trained
    index = build_lm_index(model, base, ROWS, SETTINGS.max_length, INDEX_SETTINGS)
    assert len(index) == len(ROWS) and index.bytes_per_example <= 16 * 1024
    queries = [("Q: 3 plus 3? A:", " 6", "0xaaa"), ("", "the cat sat on mat number 5.", "0xbbb"),
               ("Translate to French: bread", " pain", "0xccc")]
    scores = attribute_lm_many(model, base, index, [q[0] for q in queries], [q[1] for q in queries],
                               SETTINGS.max_length)
    for row, (_, _, contributor) in zip(scores, queries):
        top = aggregate(row, index.contribution_ids, META).contributors[0]
        assert top.key == contributor
    again = attribute_lm_many(model, base, index, [q[0] for q in queries], [q[1] for q in queries],
                              SETTINGS.max_length)
    assert np.array_equal(scores, again)  # reproducible to the bit on one machine


def test_an_lm_index_refuses_another_adapter(trained) -> None:
    model, base = trained
    index = build_lm_index(model, base, ROWS[:4], SETTINGS.max_length, INDEX_SETTINGS)
    fresh = build_lora_lm(base, SETTINGS)
    with pytest.raises(AttributionIndexError, match="different adapter"):
        attribute_lm_many(fresh, base, index, ["Q: 1 plus 1? A:"], [" 2"], SETTINGS.max_length)
    with pytest.raises(ValueError, match="differ in length"):
        attribute_lm_many(model, base, index, ["a", "b"], ["c"], SETTINGS.max_length)

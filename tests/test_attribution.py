"""Proof of Attribution on a trained MiniLM LoRA classifier: preconditioned projected gradients, duplicate
credit, mislabel detection and model-level valuation."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from provenant.attribution.gradients import (per_example_gradients, per_example_gradients_batched,
                                             per_example_gradients_loop, per_example_gradients_vmap)
from provenant.attribution.aggregate import ContributionMeta
from provenant.attribution.index import (AttributionIndex, IndexSettings, attribute, attribute_many, build_index,
                                         mislabel_scores)
from provenant.attribution.projection import (SKETCHES, SPARSE_NONZEROS, THREAD_ROWS, Projector,
                                              set_projection_cache)
from provenant.attribution.valuation import value_classifier
from provenant.factory.synthetic import synthetic_examples
from provenant.factory.train import LoraSettings, train_classifier
from provenant.serving.engine import Classifier

ROWS = synthetic_examples(90, seed=21)
# Plant one mislabelled row: a plainly financial sentence filed under "weather".
MISLABELLED = 45
ROWS[MISLABELLED] = replace(ROWS[MISLABELLED], text="the central bank raised interest rates by a quarter point",
                            label="weather")
SETTINGS = IndexSettings(projection_dim=256, seed=5)
QUERIES = {"sports": "the goalkeeper saved a penalty this week", "weather": "heavy rain flooded low-lying streets",
           "finance": "investors sold government bonds on monday"}


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    adapter = train_classifier(ROWS, LoraSettings(epochs=2, max_length=32, seed=3))
    return Classifier.load(adapter.adapter_bytes, adapter.config)


@pytest.fixture(scope="module")
def index(classifier: Classifier) -> AttributionIndex:
    return build_index(classifier, ROWS, SETTINGS)


@pytest.mark.slow
def test_index_bytes_and_scores_are_bit_identical_when_recomputed(classifier, index) -> None:
    again = build_index(classifier, ROWS, SETTINGS)
    assert again.to_bytes() == index.to_bytes()
    query = QUERIES["sports"]
    first = attribute(classifier, index, query)
    assert first.dtype == np.float64 and first.shape == (len(ROWS),)
    assert np.array_equal(first, attribute(classifier, again, query))
    assert np.array_equal(first, attribute(classifier, index, query, label="sports"))  # predicted label = sports


@pytest.mark.slow
def test_the_projection_cache_changes_speed_not_scores(classifier) -> None:
    # the cache holds Gaussian blocks: indexes before format /4 (the sparse map is always kept)
    index = build_index(classifier, ROWS, replace(SETTINGS, projection="gaussian"))
    uncached = attribute(classifier, index, QUERIES["weather"])
    set_projection_cache(200 * 2**20)
    try:
        cold = attribute(classifier, index, QUERIES["weather"])
        warm = attribute(classifier, index, QUERIES["weather"])
    finally:
        set_projection_cache(0)
    assert np.array_equal(uncached, cold) and np.array_equal(uncached, warm)


@pytest.mark.slow
def test_index_round_trips_through_bytes(classifier, index) -> None:
    data = index.to_bytes()
    loaded = AttributionIndex.from_bytes(data)
    assert loaded.to_bytes() == data
    assert np.array_equal(loaded.contribution_ids, [ex.contribution_id for ex in ROWS])
    assert np.array_equal(loaded.row_indices, [ex.row_index for ex in ROWS])
    assert np.array_equal(attribute(classifier, loaded, QUERIES["finance"]), attribute(classifier, index, QUERIES["finance"]))
    assert len(data) / len(ROWS) < SETTINGS.projection_dim * 4 + 64
    defaults = IndexSettings()  # default: up to 4 snapshots x 1,016 floats + 40 bytes = 16,296 bytes per example
    assert defaults.snapshots * defaults.projection_dim * 4 + 40 <= 16 * 1024
    with pytest.raises(ValueError, match="not an attribution index"):
        AttributionIndex.from_bytes(b"junk")


@pytest.mark.slow
def test_examples_with_the_predicted_label_score_higher(classifier, index) -> None:
    for label, text in QUERIES.items():
        assert classifier.predict([text])[0].label == label
        scores = attribute(classifier, index, text)
        same = index.label_ids == classifier.label_to_id[label]
        assert scores[same].mean() > 0 and scores[same].mean() > 5 * abs(scores[~same].mean()), label
        top = np.argsort(-scores, kind="stable")[:10]
        assert same[top].mean() >= 0.9, label  # the most helpful rows teach the answer's label


@pytest.mark.slow
def test_the_mislabelled_row_opposes_its_own_text_and_has_the_top_self_influence(classifier, index) -> None:
    text = ROWS[MISLABELLED].text
    assert classifier.predict([text])[0].label == "finance"  # one wrong row does not flip the answer
    scores = attribute(classifier, index, text)
    assert scores[MISLABELLED] < 0
    assert scores[MISLABELLED] == scores.min()  # it is the row pulling hardest the other way
    suspicion = mislabel_scores(index)
    assert int(np.argmax(suspicion)) == MISLABELLED


@pytest.mark.slow
def test_near_duplicate_rows_in_a_real_index_share_one_credit(classifier, index) -> None:
    heads = [int(h) for h in np.unique(index.canonical) if (index.canonical == h).sum() > 1]
    assert heads, "the synthetic rows contain near-duplicates (same subject and event, other filler words)"
    raw = attribute(classifier, index, QUERIES["weather"], share_duplicates=False)
    shared = attribute(classifier, index, QUERIES["weather"])
    for head in heads:
        members = np.flatnonzero(index.canonical == head)
        assert shared[head] == pytest.approx(raw[members].mean())
        assert all(shared[m] == 0.0 for m in members if m != head)
    alone = np.bincount(index.canonical, minlength=len(index))[index.canonical] == 1
    assert np.array_equal(shared[alone], raw[alone])


@pytest.mark.slow
def test_model_valuation_finds_the_mislabelled_row_harmful_and_clean_contributions_useful(classifier, index) -> None:
    held_out = synthetic_examples(24, seed=77)
    meta = {c: ContributionMeta(contributor=f"0x{c:040x}", datanet_id=1 + c % 2) for c in range(1, 6)}
    valuation = value_classifier(classifier, index, held_out, meta, model="test model")
    assert valuation.eval_rows == 24
    assert valuation.per_example[MISLABELLED] < 0
    assert (valuation.per_example < valuation.per_example[MISLABELLED]).sum() <= 2  # among the most harmful rows
    assert all(s.score > 0 for s in valuation.attribution.contributions)
    assert sum(s.ppm for s in valuation.attribution.datanets) > 999_990


@pytest.mark.slow
def test_batched_and_vmapped_gradients_match_the_one_at_a_time_loop(classifier) -> None:
    rows = ROWS[:20]
    texts, ids = [ex.text for ex in rows], [classifier.label_to_id[ex.label] for ex in rows]
    batched = per_example_gradients(classifier, texts, ids)  # the product's path: hooks, micro-batches
    looped = per_example_gradients_loop(classifier, texts, ids)
    assert batched.shape == looped.shape == (20, sum(p.numel() for p in classifier.model.parameters() if p.requires_grad))
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(per_example_gradients_vmap(classifier, texts, ids), looped, rtol=1e-4, atol=1e-6)
    # rows of many lengths in micro-batches of 3 (padding within each) give the same rows' gradients
    torch.testing.assert_close(per_example_gradients_batched(classifier, texts, ids, micro_batch=3), looped,
                               rtol=1e-4, atol=1e-6)
    assert torch.equal(per_example_gradients(classifier, texts, ids), batched)  # bit-identical run to run


@pytest.mark.slow
def test_batched_queries_agree_with_single_ones(classifier, index) -> None:
    texts = list(QUERIES.values())
    many = attribute_many(classifier, index, texts, ["sports", "sports", "finance"])
    for row, (text, label) in enumerate(zip(texts, ["sports", "sports", "finance"])):
        np.testing.assert_allclose(many[row], attribute(classifier, index, text, label), rtol=1e-4,
                                   atol=1e-6 * np.abs(many[row]).max())


@pytest.mark.slow
def test_an_index_only_answers_for_its_own_adapter(classifier, index) -> None:
    other = train_classifier(ROWS[:30], LoraSettings(epochs=1, max_length=32, seed=4))
    stranger = Classifier.load(other.adapter_bytes, other.config)
    with pytest.raises(ValueError, match="different adapter"):
        attribute(stranger, index, QUERIES["sports"])
    with pytest.raises(ValueError, match="unknown label"):
        attribute(classifier, index, QUERIES["sports"], label="cooking")


@pytest.mark.parametrize("sketch", SKETCHES)
def test_projection_preserves_inner_products_and_is_seeded(sketch: str) -> None:
    layout = (("a", 3000), ("b", 9000))  # "b" spans two Gaussian generation chunks
    projector = Projector(layout=layout, dim=1024, seed=0, sketch=sketch)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 12000, generator=g)
    x[1] = 0.6 * x[0] + 0.8 * x[1]  # correlation 0.6
    px = projector.project(x)
    assert px.dtype == torch.float32 and px.shape == (2, 1024)
    exact = (x[0] @ x[1]).item()
    assert abs((px[0] @ px[1]).item() - exact) < 0.15 * x[0].norm().item() * x[1].norm().item()
    assert abs(px[0].norm().item() / x[0].norm().item() - 1) < 0.1
    assert torch.equal(projector.project(x), px)
    assert not torch.equal(Projector(layout=layout, dim=1024, seed=1, sketch=sketch).project(x), px)
    # one tensor's part of the map does not depend on the others
    alone = Projector(layout=(("b", 9000),), dim=1024, seed=0, sketch=sketch).project(x[:, 3000:])
    both = projector.project(torch.cat([torch.zeros(2, 3000), x[:, 3000:]], dim=1))
    torch.testing.assert_close(alone, both, rtol=0, atol=1e-5)


def test_the_sparse_map_sends_each_coordinate_to_distinct_columns_of_its_module_block() -> None:
    layout = (("m1.lora_A.weight", 500), ("m1.lora_B.weight", 300), ("m2.lora_A.weight", 200))
    projector = Projector(layout=layout, dim=100, seed=3, per_module=True)
    columns, coordinates, values = projector.sparse_entries()
    assert len(columns) == 1000 * SPARSE_NONZEROS and np.allclose(np.abs(values), SPARSE_NONZEROS ** -0.5)
    for coordinate in (0, 799, 800, 999):
        mine = columns[coordinates == coordinate]
        start, stop = projector.block_slices[0 if coordinate < 800 else 1]
        assert len(set(mine)) == SPARSE_NONZEROS and all(start <= c < stop for c in mine)
    # a row projects to the same bits alone as in a batch (which may be split across threads)
    x = torch.randn(2 * THREAD_ROWS + 2, 1000, generator=torch.Generator().manual_seed(2))
    batch = projector.project(x)
    alone = torch.cat([projector.project(x[i:i + 1]) for i in (0, THREAD_ROWS, len(x) - 1)])
    assert torch.equal(alone, batch[[0, THREAD_ROWS, len(x) - 1]])
    # the kind of map is part of the layout hash: a Gaussian index never answers a sparse query
    assert projector.layout_sha256 != Projector(layout, 100, 3, per_module=True, sketch="gaussian").layout_sha256
    with pytest.raises(ValueError, match="sketch"):
        Projector(layout, 100, 3, sketch="dense")


@pytest.mark.slow  # ~10 s: the child process imports torch, transformers and peft
def test_index_bytes_are_identical_in_a_fresh_process(tmp_path: Path) -> None:
    """safetensors keeps metadata in a Rust HashMap (per-process order); the index must not depend on it."""
    script = (
        "import numpy as np, sys\n"
        "from provenant.attribution.index import AttributionIndex, IndexSettings\n"
        "g = np.arange(12, dtype=np.float32).reshape(3, 4)\n"
        "i = AttributionIndex(g, np.arange(3), np.arange(3) * 2, np.zeros(3, dtype=np.int64), IndexSettings(4, 9), 'ab', 'cd')\n"
        "sys.stdout.buffer.write(i.to_bytes())\n"
    )
    backend = str(Path(__file__).resolve().parent.parent / "backend")
    env = {**os.environ, "PYTHONPATH": backend + os.pathsep + os.environ.get("PYTHONPATH", "")}
    there = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, env=env).stdout
    here = AttributionIndex(np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(3), np.arange(3) * 2,
                            np.zeros(3, dtype=np.int64), IndexSettings(4, 9), "ab", "cd").to_bytes()
    assert there == here
    loaded = AttributionIndex.from_bytes(here)
    assert loaded.settings == IndexSettings(4, 9) and loaded.adapter_sha256 == "ab"

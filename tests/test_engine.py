"""Serving engine: adapters loaded over one shared base reproduce the trained model's predictions."""

from __future__ import annotations

import math

import pytest
import torch

from provenant.factory.model import LoraClassifier
from provenant.factory.synthetic import synthetic_examples
from provenant.factory.train import LoraSettings, TrainedAdapter, fit_classifier
from provenant.serving.engine import Classifier, Prediction

TRAIN = synthetic_examples(60, seed=11)
QUERIES = [ex.text for ex in synthetic_examples(45, seed=12)]  # 45 > one predict batch of 32


@pytest.fixture(scope="module")
def fitted() -> tuple[TrainedAdapter, LoraClassifier]:
    return fit_classifier(TRAIN, LoraSettings(epochs=2, max_length=32, seed=1))


@pytest.fixture(scope="module")
def other() -> TrainedAdapter:
    """A second adapter on the same base, with two labels instead of three."""
    rows = synthetic_examples(40, seed=13, labels=("cooking", "sports"))
    adapter, _ = fit_classifier(rows, LoraSettings(epochs=1, max_length=32, seed=2, rank=4))
    return adapter


@pytest.mark.slow
def test_loaded_adapter_predicts_exactly_like_the_in_memory_model(fitted) -> None:
    adapter, model = fitted
    loaded = Classifier.load(adapter.adapter_bytes, adapter.config)
    in_memory = Classifier(model, loaded.base, adapter.config["labels"], adapter.config["lora"]["max_length"])
    assert loaded.adapter_sha256 == in_memory.adapter_sha256
    assert loaded.predict(QUERIES) == in_memory.predict(QUERIES)  # bit-identical probabilities
    assert torch.equal(loaded.logits(QUERIES), in_memory.logits(QUERIES))


@pytest.mark.slow
def test_predictions_are_well_formed_and_mostly_right(fitted) -> None:
    adapter, _ = fitted
    classifier = Classifier.load(adapter.adapter_bytes, adapter.config)
    held_out = synthetic_examples(45, seed=12)
    predictions = classifier.predict([ex.text for ex in held_out])
    assert all(isinstance(p, Prediction) for p in predictions)
    for p in predictions:
        assert list(p.probabilities) == classifier.labels == ["finance", "sports", "weather"]
        assert math.isclose(sum(p.probabilities.values()), 1.0, abs_tol=1e-5)
        assert p.label == max(p.probabilities, key=p.probabilities.get)
    accuracy = sum(p.label == ex.label for p, ex in zip(predictions, held_out)) / len(held_out)
    assert accuracy > 0.8
    assert classifier.predict([]) == []
    with pytest.raises(TypeError):
        classifier.predict("one string is not a batch")


@pytest.mark.slow
def test_batching_does_not_change_answers(fitted) -> None:
    adapter, _ = fitted
    classifier = Classifier.load(adapter.adapter_bytes, adapter.config)
    together = classifier.predict(QUERIES)
    alone = [classifier.predict([q])[0] for q in QUERIES[:8]]
    assert [p.label for p in alone] == [p.label for p in together[:8]]
    for a, b in zip(alone, together):
        for label in classifier.labels:
            assert math.isclose(a.probabilities[label], b.probabilities[label], abs_tol=1e-5)


@pytest.mark.slow
def test_many_adapters_share_one_copy_of_the_base_weights(fitted, other) -> None:
    adapter, _ = fitted
    first = Classifier.load(adapter.adapter_bytes, adapter.config)
    before = first.predict(QUERIES[:5])
    second = Classifier.load(other.adapter_bytes, other.config)
    assert second.labels == ["cooking", "sports"]
    assert first.base is second.base
    base_first = dict(first.model.backbone.named_parameters())
    base_second = dict(second.model.backbone.named_parameters())
    word = "embeddings.word_embeddings.weight"
    assert base_first[word].data_ptr() == base_second[word].data_ptr()
    query = "encoder.layer.0.attention.self.query.base_layer.weight"
    assert base_first[query].data_ptr() == base_second[query].data_ptr()
    lora = "encoder.layer.0.attention.self.query.lora_A.default.weight"
    assert base_first[lora].data_ptr() != base_second[lora].data_ptr()
    assert base_first[lora].shape == (8, 384) and base_second[lora].shape == (4, 384)
    assert first.predict(QUERIES[:5]) == before  # loading another adapter changed nothing


@pytest.mark.slow
def test_bad_adapters_are_refused(fitted, other) -> None:
    adapter, _ = fitted
    with pytest.raises(ValueError, match="not a valid safetensors"):
        Classifier.load(b"not safetensors", adapter.config)
    with pytest.raises(ValueError):  # rank-4 two-label adapter under a rank-8 three-label config
        Classifier.load(other.adapter_bytes, adapter.config)
    with pytest.raises(ValueError, match="not a classification adapter"):
        Classifier.load(adapter.adapter_bytes, {**adapter.config, "task": "generation"})
    with pytest.raises(ValueError, match="sorted list"):
        Classifier.load(adapter.adapter_bytes, {**adapter.config, "labels": ["weather", "sports", "finance"]})

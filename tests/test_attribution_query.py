"""The single-query gradient path (`query_gradients`): same gradients and scores as the old vmapped
path up to float rounding, bit-identical run to run, used by `attribute` and `attribute_many`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from provenant.attribution import query_gradients
from provenant.attribution.gradients import per_example_gradients, per_example_gradients_vmap
from provenant.attribution.index import IndexSettings, attribute, attribute_many, build_index, score_projected
from provenant.attribution.projection import Projector
from provenant.factory.synthetic import synthetic_examples
from provenant.factory.train import LoraSettings, train_classifier
from provenant.serving.engine import Classifier

ROWS = synthetic_examples(48, seed=7)
SETTINGS = IndexSettings(projection_dim=256, seed=3)
LONG = " ".join(["the striker scored twice before the rain stopped play at the stadium"] * 6)  # > 32 tokens
QUERIES = [("the goalkeeper saved a penalty this week", "sports"), ("heavy rain flooded low-lying streets", "weather"),
           ("investors sold government bonds on monday", "sports"), (LONG, "finance")]
REL_TOL = 1e-5


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    adapter = train_classifier(ROWS, LoraSettings(epochs=1, max_length=32, seed=11))
    return Classifier.load(adapter.adapter_bytes, adapter.config)


@pytest.fixture(scope="module")
def index(classifier: Classifier):  # type: ignore[no-untyped-def]
    return build_index(classifier, ROWS, SETTINGS)


def _rel(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_the_minilm_classifier_takes_the_onednn_path(classifier) -> None:
    assert query_gradients._ONEDNN, "this torch build has no oneDNN: the fast path is never exercised"
    assert query_gradients._bert_layers(classifier.model) is not None


def test_query_gradient_matches_the_old_vmap_path(classifier) -> None:
    projector = Projector.for_classifier(classifier, SETTINGS.projection_dim, SETTINGS.seed)
    for text, label in QUERIES:
        label_id = classifier.label_to_id[label]
        new = per_example_gradients(classifier, [text], [label_id])  # dispatches to the single-query path
        old = per_example_gradients_vmap(classifier, [text], [label_id])
        plain = query_gradients.query_gradient_plain(classifier, text, label_id)
        assert new.shape == old.shape == (1, plain.numel()) and new.dtype == torch.float32
        assert float(old.abs().max()) > 0
        assert _rel(new, old) < REL_TOL and _rel(new[0], plain) < REL_TOL
        assert _rel(projector.project(new), projector.project(old)) < REL_TOL


def test_query_gradient_is_bit_identical_run_to_run(classifier) -> None:
    text, label = QUERIES[0]
    first = query_gradients.query_gradient(classifier, text, classifier.label_to_id[label])
    for _ in range(2):
        assert torch.equal(first, query_gradients.query_gradient(classifier, text, classifier.label_to_id[label]))


def test_attribute_scores_match_the_old_path_and_repeat_exactly(classifier, index) -> None:
    projector = Projector.for_classifier(classifier, SETTINGS.projection_dim, SETTINGS.seed)
    for text, label in QUERIES:
        scores = attribute(classifier, index, text, label)
        old = score_projected(index, projector.project(
            per_example_gradients_vmap(classifier, [text], [classifier.label_to_id[label]])).numpy())[0]
        assert scores.shape == (len(ROWS),) and scores.dtype == np.float64
        assert _rel(scores, old) < REL_TOL
        assert np.array_equal(scores, attribute(classifier, index, text, label))


def test_attribute_many_agrees_with_attribute(classifier, index) -> None:
    texts, labels = [t for t, _ in QUERIES], [lab for _, lab in QUERIES]
    many = attribute_many(classifier, index, texts, labels)  # several rows: the vmapped path
    assert many.shape == (len(QUERIES), len(ROWS))
    for row, (text, label) in enumerate(QUERIES):
        single = attribute(classifier, index, text, label)
        assert _rel(many[row], single) < 1e-4
        assert np.array_equal(attribute_many(classifier, index, [text], [label])[0], single)
    predicted = attribute(classifier, index, QUERIES[0][0])  # label omitted: the predicted one
    assert np.array_equal(predicted, attribute(classifier, index, QUERIES[0][0],
                                               classifier.predict([QUERIES[0][0]])[0].label))

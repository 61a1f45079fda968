"""Attribution through the training run: indexes built at several epoch-end adapters (snapshots.py).

Real LoRA training (the packaged MiniLM classifier and the config-built tiny Llama); each snapshot
index must score exactly what separate one-adapter indexes at those epochs score, summed."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from provenant.attribution.index import (AttributionIndex, AttributionIndexError, IndexSettings, attribute,
                                         attribute_many, build_index)
from provenant.attribution.lm import (adapter_fingerprint, adapter_loaded, attribute_lm_many, build_lm_index,
                                      per_example_lm_gradients_at, per_example_lm_gradients_loop)
from provenant.attribution.lora_gradients import LoraGradientError, adapters_side_by_side
from provenant.attribution.query_gradients import query_gradient, query_gradients_at
from provenant.attribution.snapshots import SnapshotError, earlier_adapters, snapshot_epochs
from provenant.factory.base_models import load_causal_base_model
from provenant.factory.synthetic import synthetic_examples
from provenant.factory.train import LoraSettings, TrainedAdapter, train_classifier
from provenant.factory.train_lm import (LmExample, collate, fit_causal_lm, lm_adapter_tensors, pad_id, tokenize,
                                        trainable)
from provenant.serving.engine import Classifier

ROWS = synthetic_examples(60, seed=11)
QUERIES = ["the goalkeeper saved a penalty this week", "heavy rain flooded low-lying streets"]
SETTINGS = IndexSettings(projection_dim=128, seed=2)  # snapshots: the default 4, of which a 3-epoch run has 3


@pytest.mark.parametrize("epochs, snapshots, expected", [(3, 3, (1, 2, 3)), (12, 4, (1, 4, 8, 12)),
                                                         (12, 3, (1, 6, 12)), (2, 3, (1, 2)), (5, 1, (5,)),
                                                         (10, 4, (1, 4, 7, 10)), (1, 4, (1,)),
                                                         (20, 8, (1, 3, 6, 9, 11, 14, 17, 20))])
def test_snapshot_epochs_are_evenly_spaced_from_the_first_to_the_final_epoch(epochs: int, snapshots: int,
                                                                     expected: tuple[int, ...]) -> None:
    assert snapshot_epochs(epochs, snapshots) == expected


def test_snapshot_settings_and_adapters_are_checked() -> None:
    with pytest.raises(SnapshotError, match=">= 1"):
        snapshot_epochs(0, 3)
    with pytest.raises(ValueError, match="4 x snapshots x projection_dim"):
        IndexSettings(projection_dim=1024, snapshots=4)  # 16,424 bytes per example: 40 over
    assert IndexSettings().snapshots == 4 and 4 * 4 * IndexSettings().projection_dim + 40 <= 16 * 1024
    with pytest.raises(ValueError, match="snapshots must be in"):
        IndexSettings(projection_dim=64, snapshots=9)
    with pytest.raises(SnapshotError, match="not the adapter being indexed"):
        earlier_adapters([b"epoch 1", b"epoch 2"], "00" * 32, 3)
    assert earlier_adapters([], "00" * 32, 3) == ((), ())  # no run to read: the final adapter only


@pytest.fixture(scope="module")
def trained() -> TrainedAdapter:
    return train_classifier(ROWS, LoraSettings(epochs=3, max_length=32, seed=4))


def test_the_trainer_keeps_every_epoch_adapter_the_last_being_the_model(trained: TrainedAdapter) -> None:
    assert len(trained.epoch_adapters) == 3 and trained.epoch_adapters[-1] == trained.adapter_bytes
    assert len(set(trained.epoch_adapters)) == 3


def test_a_snapshot_index_scores_the_sum_of_one_adapter_indexes_at_each_epoch(trained: TrainedAdapter) -> None:
    classifier = Classifier.load(trained.adapter_bytes, trained.config)
    index = build_index(classifier, ROWS, SETTINGS, trained.epoch_adapters)
    assert index.snapshot_epochs == (1, 2, 3) and index.snapshot_adapters == trained.epoch_adapters[:2]
    assert index.gradients.shape == (len(ROWS), 3 * 128) and index.bytes_per_example == 3 * 128 * 4 + 40

    scores = attribute_many(classifier, index, QUERIES, ["sports", "weather"], share_duplicates=False)
    one_adapter = IndexSettings(projection_dim=128, seed=2, snapshots=1)
    expected = np.zeros_like(scores)
    for adapter in trained.epoch_adapters:
        at_epoch = Classifier.load(adapter, trained.config)
        single = build_index(at_epoch, ROWS, one_adapter)
        assert single.snapshot_epochs == () and single.gradients.shape == (len(ROWS), 128)
        expected += attribute_many(at_epoch, single, QUERIES, ["sports", "weather"], share_duplicates=False)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    # one answer (serving's call) runs the three adapters side by side in one pass: the same scores
    single = attribute(classifier, index, QUERIES[0], "sports", share_duplicates=False)
    np.testing.assert_allclose(single, scores[0], rtol=1e-4, atol=1e-6)
    assert np.array_equal(attribute(classifier, index, QUERIES[0], "sports", share_duplicates=False), single)
    models = index.snapshot_classifiers(classifier)
    label = classifier.label_to_id["sports"]
    side_by_side = query_gradients_at(models, QUERIES[0], label)
    one_by_one = torch.stack([query_gradient(m, QUERIES[0], label) for m in models])
    assert float(((side_by_side - one_by_one).norm(dim=1) / one_by_one.norm(dim=1)).max()) < 1e-5

    # the earlier adapters travel inside the index: a second attributor needs the model and the index only
    again = AttributionIndex.from_bytes(index.to_bytes())
    assert again.snapshot_adapters == index.snapshot_adapters and again.snapshot_epochs == (1, 2, 3)
    fresh = Classifier.load(trained.adapter_bytes, trained.config)
    assert np.array_equal(attribute_many(fresh, again, QUERIES, ["sports", "weather"], share_duplicates=False),
                          scores)
    # the final adapter's mislabel scores and self-influence, as a one-adapter index has them
    final_only = build_index(classifier, ROWS, one_adapter)
    assert np.array_equal(index.mislabel, final_only.mislabel)
    assert np.array_equal(index.gradients[:, :128], final_only.gradients)


def test_a_tampered_snapshot_adapter_or_a_foreign_run_is_refused(trained: TrainedAdapter) -> None:
    classifier = Classifier.load(trained.adapter_bytes, trained.config)
    index = build_index(classifier, ROWS[:12], SETTINGS, trained.epoch_adapters)
    data = index.to_bytes()
    arrays = safetensors_load(data)
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + header_len])["__metadata__"]
    arrays["snapshot_adapter_1"] = arrays["snapshot_adapter_1"].copy()
    arrays["snapshot_adapter_1"][-1] ^= 1
    with pytest.raises(AttributionIndexError, match="snapshot adapter does not match its sha256"):
        AttributionIndex.from_bytes(safetensors_save(arrays, metadata=metadata))
    # a format-4 index must name its projection; an older one is read as Gaussian, and a sparse
    # index relabelled as older is then refused at query time (its layout hash names the sparse map)
    header = json.loads(metadata["provenant"])
    del header["settings"]["projection"]
    untouched = safetensors_load(data)
    with pytest.raises(AttributionIndexError, match="do not name their projection"):
        AttributionIndex.from_bytes(safetensors_save(untouched, metadata={"provenant": json.dumps(header)}))
    header["format"] = "provenant-attribution-index/3"
    relabelled = AttributionIndex.from_bytes(safetensors_save(untouched, metadata={"provenant": json.dumps(header)}))
    assert relabelled.settings.projection == "gaussian" and index.settings.projection == "sparse"
    with pytest.raises(AttributionIndexError, match="different adapter"):
        attribute(classifier, relabelled, QUERIES[0], "sports")

    other = train_classifier(ROWS[:12], LoraSettings(epochs=3, max_length=32, seed=9))
    with pytest.raises(SnapshotError, match="not the adapter being indexed"):
        build_index(classifier, ROWS[:12], SETTINGS, other.epoch_adapters)


LM_SETTINGS = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=3, batch_size=8, max_length=40,
                           learning_rate=5e-3, seed=1)
LM_ROWS = ([LmExample(f"Q: {i} plus {i}? A:", f" {2 * i}", 1, i, 1) for i in range(6)]
           + [LmExample("", f"the cat sat on mat number {i}.", 2, i, 1) for i in range(6)])


@pytest.fixture(scope="module")
def trained_lm() -> tuple[TrainedAdapter, torch.nn.Module]:
    return fit_causal_lm(LM_ROWS, LM_SETTINGS, "tiny-llama")


def test_an_lm_snapshot_index_sums_its_epochs_and_leaves_the_model_as_it_was(trained_lm) -> None:  # type: ignore[no-untyped-def]
    trained, model = trained_lm
    base = load_causal_base_model("tiny-llama")
    fingerprint = adapter_fingerprint(model)
    settings = IndexSettings(projection_dim=64, seed=3)
    index = build_lm_index(model, base, LM_ROWS, LM_SETTINGS.max_length, settings, trained.epoch_adapters)
    assert index.snapshot_epochs == (1, 2, 3) and adapter_fingerprint(model) == fingerprint
    prompts, outputs = ["Q: 2 plus 2? A:"], [" 4"]
    scores = attribute_lm_many(model, base, index, prompts, outputs, LM_SETTINGS.max_length, share_duplicates=False)
    assert adapter_fingerprint(model) == fingerprint  # the query put the final tensors back

    one_adapter = IndexSettings(projection_dim=64, seed=3, snapshots=1)
    expected = attribute_lm_many(model, base, build_lm_index(model, base, LM_ROWS, LM_SETTINGS.max_length, one_adapter),
                                 prompts, outputs, LM_SETTINGS.max_length, share_duplicates=False)
    for adapter in trained.epoch_adapters[:2]:
        with adapter_loaded(model, adapter):  # this epoch's tensors, for the index and the query alike
            single = build_lm_index(model, base, LM_ROWS, LM_SETTINGS.max_length, one_adapter)
            expected += attribute_lm_many(model, base, single, prompts, outputs, LM_SETTINGS.max_length,
                                          share_duplicates=False)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)



def test_an_answer_runs_the_lm_snapshot_adapters_side_by_side(trained_lm) -> None:  # type: ignore[no-untyped-def]
    trained, model = trained_lm
    base = load_causal_base_model("tiny-llama")
    fingerprint = adapter_fingerprint(model)
    answers = [LmExample("Q: 2 plus 2? A:", " 4", 0, 0), LmExample("", "the cat sat on the mat.", 0, 1),
               LmExample("Q: 7 plus 7? A:", "", 0, 2)]  # the last has only EOS as its target
    side_by_side = per_example_lm_gradients_at(model, base, answers, LM_SETTINGS.max_length,
                                               trained.epoch_adapters[:2])
    assert side_by_side.shape[:2] == (3, 3) and adapter_fingerprint(model) == fingerprint
    in_turn = [per_example_lm_gradients_loop(model, base, answers, LM_SETTINGS.max_length)]
    for adapter in trained.epoch_adapters[:2]:
        with adapter_loaded(model, adapter):
            in_turn.append(per_example_lm_gradients_loop(model, base, answers, LM_SETTINGS.max_length))
    expected = torch.stack(in_turn)
    assert not torch.allclose(expected[0], expected[1], rtol=1e-2)  # the adapters differ, so the test can fail
    assert torch.all((side_by_side - expected).norm(dim=-1) <= 1e-4 * expected.norm(dim=-1) + 1e-7)  # float rounding
    assert torch.equal(per_example_lm_gradients_at(model, base, answers, LM_SETTINGS.max_length,
                                                   trained.epoch_adapters[:2]), side_by_side)  # run to run

    names = [name for name, _ in trainable(model)]
    with adapters_side_by_side(model, names, [lm_adapter_tensors(model, trained.epoch_adapters[0])]) as k:
        batch = collate([tokenize(base, answers[0], LM_SETTINGS.max_length)] * (k + 1), pad_id(base))
        with pytest.raises(LoraGradientError, match="a batch of 3 rows cannot run 2 adapters side by side"):
            model(input_ids=batch[0], attention_mask=batch[1])

    foreign = fit_causal_lm(LM_ROWS[:4], replace(LM_SETTINGS, target_modules=("q_proj",)), "tiny-llama")[0]
    with pytest.raises(ValueError, match="tensor names differ"):
        per_example_lm_gradients_at(model, base, answers, LM_SETTINGS.max_length, foreign.epoch_adapters[:1])
    assert adapter_fingerprint(model) == fingerprint

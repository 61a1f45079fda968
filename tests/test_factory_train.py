"""Model Factory training: real LoRA fine-tuning of the packaged MiniLM on a synthetic dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as safetensors_load

from provenant.factory.base_models import BaseModelError, load_base_model
from provenant.factory.synthetic import synthetic_examples
from provenant.factory.train import Example, LoraSettings, TrainedAdapter, train_classifier

SETTINGS = LoraSettings(epochs=2, batch_size=16, max_length=32, seed=7)
TRAIN = synthetic_examples(72, seed=1)
HELD_OUT = synthetic_examples(30, seed=2)


@pytest.fixture(scope="module")
def trained() -> TrainedAdapter:
    return train_classifier(TRAIN, SETTINGS, eval_examples=HELD_OUT)


@pytest.mark.slow
def test_same_inputs_and_seed_give_identical_adapter_bytes(trained: TrainedAdapter) -> None:
    again = train_classifier(TRAIN, SETTINGS, eval_examples=HELD_OUT)
    assert again.adapter_bytes == trained.adapter_bytes
    assert again.config == trained.config
    assert again.metrics["train_loss"] == trained.metrics["train_loss"]


@pytest.mark.slow
def test_another_seed_gives_another_adapter(trained: TrainedAdapter) -> None:
    other = train_classifier(TRAIN, LoraSettings(**{**SETTINGS.to_dict(), "seed": 8, "epochs": 1}))
    assert other.adapter_bytes != trained.adapter_bytes


@pytest.mark.slow
def test_training_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(TRAIN[:24], LoraSettings(epochs=1, max_length=16))
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_held_out_accuracy_beats_chance_and_loss_falls(trained: TrainedAdapter) -> None:
    metrics = trained.metrics
    assert metrics["eval_examples"] == len(HELD_OUT)
    assert metrics["eval_accuracy"] > 0.8  # chance is 1/3
    assert len(metrics["train_loss"]) == SETTINGS.epochs
    assert metrics["train_loss"][-1] < metrics["train_loss"][0]
    assert metrics["examples_per_second"] > 0 and metrics["seconds"] > 0
    assert metrics["threads"] == torch.get_num_threads()


@pytest.mark.slow
def test_adapter_holds_exactly_the_lora_and_head_tensors(trained: TrainedAdapter) -> None:
    tensors = safetensors_load(trained.adapter_bytes)
    assert set(tensors) == {n for n in tensors if ".lora_A." in n or ".lora_B." in n} | {"head.weight", "head.bias"}
    assert all(t.dtype == torch.float32 for t in tensors.values())
    lora = [n for n in tensors if ".lora_" in n]
    assert len(lora) == 6 * 2 * 2  # 6 layers x (query, value) x (A, B)
    assert tensors["head.weight"].shape == (3, 384)
    assert tensors["backbone.encoder.layer.0.attention.self.query.lora_A.default.weight"].shape == (8, 384)
    assert not any(torch.all(tensors[n] == 0) for n in lora if ".lora_B." in n)  # B moved away from its zero init


@pytest.mark.slow
def test_config_is_json_and_complete(trained: TrainedAdapter) -> None:
    config = json.loads(json.dumps(trained.config, sort_keys=True))
    assert config["task"] == "classification"
    assert config["base_model"] == "minilm"
    assert config["labels"] == ["finance", "sports", "weather"]
    assert config["lora"] == SETTINGS.to_dict()
    assert LoraSettings.from_dict(config["lora"]) == SETTINGS
    json.dumps(trained.metrics)


@pytest.mark.slow
def test_progress_reports_every_epoch_and_eval() -> None:
    events: list[dict] = []
    train_classifier(TRAIN[:24], LoraSettings(epochs=2, max_length=16), eval_examples=HELD_OUT[:6],
                     progress=events.append)
    assert [e["epoch"] for e in events if e["stage"] == "epoch"] == [1, 2]
    steps = [e for e in events if e["stage"] == "train"]
    assert [(e["epoch"], e["step"]) for e in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]  # 24 rows, batch 16
    assert steps[-1]["eta_seconds"] == 0 and all(e["examples_per_second"] > 0 for e in steps)
    assert events[-1]["stage"] == "eval"


class _MemoryCheckpoints:
    """Checkpoints kept in memory; cancels the run once `cancel_after` epochs are saved."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.state: dict | None = None
        self.saved = 0
        self.cancel_after = cancel_after

    def load(self) -> dict | None:
        return self.state

    def save(self, state: dict) -> None:
        import io

        buffer = io.BytesIO()  # a real round trip through torch.save, as the job store does
        torch.save(state, buffer)
        buffer.seek(0)
        self.state = torch.load(buffer, weights_only=False)
        self.saved += 1

    def cancelled(self) -> bool:
        return self.cancel_after is not None and self.saved >= self.cancel_after


@pytest.mark.slow
def test_a_cancelled_then_resumed_training_ends_with_the_uninterrupted_adapter() -> None:
    from provenant.factory.train import TrainingCancelled

    settings = LoraSettings(epochs=3, batch_size=8, max_length=16, seed=5, dropout=0.1)  # dropout: RNG state matters
    rows = TRAIN[:32]
    straight = train_classifier(rows, settings)
    checkpoints = _MemoryCheckpoints(cancel_after=1)
    with pytest.raises(TrainingCancelled, match="epoch 2"):
        train_classifier(rows, settings, checkpoints=checkpoints)
    checkpoints.cancel_after = None
    resumed = train_classifier(rows, settings, checkpoints=checkpoints)
    assert resumed.adapter_bytes == straight.adapter_bytes
    assert resumed.metrics["train_loss"] == straight.metrics["train_loss"]
    # every epoch's adapter, for attribution snapshots: the resume state carries the earlier ones
    assert resumed.epoch_adapters == straight.epoch_adapters and len(straight.epoch_adapters) == 3


@pytest.mark.slow
def test_adapter_bytes_identical_in_a_fresh_process(tmp_path: Path) -> None:
    """Bit-identity must hold across processes too (e.g. no per-process hash ordering in the bytes)."""
    settings = LoraSettings(epochs=1, max_length=16, seed=3)
    rows = TRAIN[:24]
    here = train_classifier(rows, settings).adapter_bytes
    out = tmp_path / "adapter.safetensors"
    script = (
        f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"
        "from provenant.factory.synthetic import synthetic_examples\n"
        "from provenant.factory.train import LoraSettings, train_classifier\n"
        "a = train_classifier(synthetic_examples(72, seed=1)[:24], LoraSettings(epochs=1, max_length=16, seed=3))\n"
        f"open({str(out)!r}, 'wb').write(a.adapter_bytes)\n"
    )
    backend = str(Path(__file__).resolve().parent.parent / "backend")
    env = {**os.environ, "PYTHONPATH": backend + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert out.read_bytes() == here


@pytest.mark.slow
def test_a_local_folder_base_model_trains(tmp_path: Path) -> None:
    """Any base other than "minilm" is a hub id or a folder; here a tiny random BERT saved to disk."""
    from transformers import BertConfig, BertModel

    tokenizer = load_base_model("minilm").tokenizer
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    adapter = train_classifier(TRAIN[:24], LoraSettings(epochs=1, max_length=16), base_model=str(tmp_path))
    assert adapter.config["base_model"] == str(tmp_path)
    assert safetensors_load(adapter.adapter_bytes)["head.weight"].shape == (3, 32)


def test_unknown_base_model_fails_clearly_without_download() -> None:
    with pytest.raises(BaseModelError, match="without a download"):
        train_classifier(TRAIN[:6], LoraSettings(), base_model="nobody/no-such-model-xyz")


@pytest.mark.parametrize("bad", [{"rank": 0}, {"epochs": 0}, {"learning_rate": 0.0}, {"dropout": 1.0},
                                 {"batch_size": 0}, {"max_length": 1}, {"target_modules": ()}])
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="invalid LoRA settings"):
        LoraSettings(**bad)


def test_bad_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="zero examples"):
        train_classifier([], LoraSettings())
    one_label = [Example(text="a", label="x", contribution_id=1, row_index=i) for i in range(3)]
    with pytest.raises(ValueError, match="at least 2 distinct labels"):
        train_classifier(one_label, LoraSettings())
    unseen = [Example(text="a", label="cooking", contribution_id=1, row_index=0)]
    with pytest.raises(ValueError, match="absent from training"):
        train_classifier(TRAIN[:6], LoraSettings(), eval_examples=unseen)


def test_settings_dict_is_stable_json() -> None:
    assert json.dumps(LoraSettings().to_dict()) == (
        '{"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"], "learning_rate": 0.001, '
        '"epochs": 3, "batch_size": 16, "max_length": 64, "seed": 0}')

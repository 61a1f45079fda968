"""Where the Factory trains: data-parallel under torchrun (two real processes, Gloo on the CPU, train
the same adapters as one process does, step for step, up to float summation order), the device
choice, and QLoRA's refusal where it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors

from provenant.factory.base_models import load_base_model, load_causal_base_model
from provenant.factory.devices import DeviceError, module_on, resolve_device
from provenant.factory.qlora import QuantizationUnavailable
from provenant.factory.train import Example, LoraSettings, fit_classifier
from provenant.factory.train_lm import LmExample, build_lora_lm, fit_causal_lm

# 13 rows in batches of 4: the last batch has one row, so the second process gets an empty shard.
LM_ROWS = [LmExample(f"Q: {i} times 3? A:", f" {3 * i}", contribution_id=1, row_index=i) for i in range(13)]
LM_SETTINGS = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=2, batch_size=4, max_length=32,
                           learning_rate=5e-3, seed=7)
CLS_ROWS = [Example(f"{word} review number {i}", label, contribution_id=2, row_index=i)
            for i, (word, label) in enumerate([("great", "pos"), ("awful", "neg"), ("lovely", "pos")] * 5)]
CLS_SETTINGS = LoraSettings(epochs=2, batch_size=4, max_length=16, learning_rate=1e-2, seed=3)


@contextmanager
def without_base_dropout() -> Iterator[None]:
    """The tiny encoder's own dropout off, then back on: every process draws its own dropout masks,
    so only a dropout-free model can be compared step for step (the Llama base has none)."""
    dropouts = [m for m in load_base_model("tiny-encoder").encoder.modules() if isinstance(m, torch.nn.Dropout)]
    rates = [m.p for m in dropouts]
    for module in dropouts:
        module.p = 0.0
    try:
        yield
    finally:
        for module, rate in zip(dropouts, rates):
            module.p = rate


def _tensors(data: bytes) -> dict[str, torch.Tensor]:
    return load_safetensors(data)


def test_two_processes_train_the_same_adapters_as_one(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    worker = Path(__file__).with_name("factory_replicas_worker.py")
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(worker), str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "processes").read_text() == "2"

    lm, _ = fit_causal_lm(LM_ROWS, LM_SETTINGS, "tiny-llama", device="cpu")
    with without_base_dropout():
        cls, _ = fit_classifier(CLS_ROWS, CLS_SETTINGS, "tiny-encoder", device="cpu")
    for name, alone in (("lm", lm.adapter_bytes), ("cls", cls.adapter_bytes)):
        split, single = _tensors((tmp_path / f"{name}.safetensors").read_bytes()), _tensors(alone)
        assert split.keys() == single.keys()
        moved = max(float(t.abs().max()) for k, t in single.items() if "lora_B" in k)
        assert moved > 1e-3, f"{name}: training did not move the adapter, the comparison would prove nothing"
        worst = max(float((split[k] - single[k]).abs().max()) for k in single)
        assert worst < 1e-4, f"{name}: two processes differ from one by {worst}"


def test_device_choice_is_explicit_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROVENANT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("PROVENANT_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu9'"):
        resolve_device("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")


def test_moving_a_model_leaves_the_shared_base_where_it_was() -> None:
    base = load_causal_base_model("tiny-llama")
    model = build_lora_lm(base, LM_SETTINGS)
    assert module_on(model, torch.device("cpu")) is model
    moved = module_on(model, torch.device("meta"))  # any non-CPU device: "meta" holds no memory
    assert all(p.device.type == "meta" for p in moved.parameters())
    assert all(p.device.type == "cpu" for p in base.model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert [n for n, _ in moved.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_qlora_is_refused_where_it_cannot_run_and_recorded_where_it_can() -> None:
    nf4 = LoraSettings(**{**LM_SETTINGS.to_dict(), "quantize_base": "nf4"})
    assert "quantize_base" not in LM_SETTINGS.to_dict()  # configurations from before QLoRA keep their hash
    assert nf4.to_dict()["quantize_base"] == "nf4" and LoraSettings.from_dict(nf4.to_dict()) == nf4
    with pytest.raises(ValueError, match="quantize_base must be none or nf4"):
        LoraSettings(quantize_base="int3")
    with pytest.raises(QuantizationUnavailable, match="4-bit NF4 base.*needs a CUDA GPU; this training runs on cpu"):
        fit_causal_lm(LM_ROWS, nf4, "tiny-llama", device="cpu")
    with pytest.raises(ValueError, match="is for causal-LM bases"):
        fit_classifier(CLS_ROWS, LoraSettings(**{**CLS_SETTINGS.to_dict(), "quantize_base": "nf4"}), "tiny-encoder")

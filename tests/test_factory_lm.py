"""Causal-LM LoRA training: real fine-tuning of the config-built tiny Llama (and of a causal model
loaded from a local folder), in the adapter format serving loads."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from provenant.factory.base_models import load_causal_base_model
from provenant.factory.train import LoraSettings, TrainedAdapter, TrainingCancelled
from provenant.factory.train_lm import (IGNORE, LmExample, build_lora_lm, collate, fit_causal_lm, token_loss,
                                        tokenize, train_causal_lm)
from provenant.serving.lora import CAUSAL_TASK, parse_adapter

SETTINGS = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=2, batch_size=8, max_length=40,
                        learning_rate=5e-3, seed=1)
QA = [LmExample(f"Q: {i} plus {i}? A:", f" {2 * i}", contribution_id=1, row_index=i, datanet_id=1) for i in range(12)]
TEXT = [LmExample("", f"the cat sat on mat number {i}.", contribution_id=2, row_index=i, datanet_id=2)
        for i in range(4)]
ROWS = QA + TEXT


@pytest.fixture(scope="module")
def trained() -> tuple[TrainedAdapter, list[dict], torch.nn.Module]:
    events: list[dict] = []
    adapter, model = fit_causal_lm(ROWS, SETTINGS, "tiny-llama", eval_examples=QA[:3], progress=events.append)
    return adapter, events, model


def test_prompt_tokens_are_masked_and_text_rows_train_on_every_token() -> None:
    base = load_causal_base_model("tiny-llama")
    qa = tokenize(base, LmExample("ab", "cd", 1, 0), max_length=16)
    assert qa.input_ids == [256, ord("a"), ord("b"), ord("c"), ord("d"), 257]  # BOS prompt completion EOS
    assert qa.labels == [IGNORE, IGNORE, IGNORE, ord("c"), ord("d"), 257]
    text = tokenize(base, LmExample("", "xyz", 1, 0), max_length=16)
    assert text.labels == [IGNORE, ord("x"), ord("y"), ord("z"), 257]  # only BOS, never predicted, is out
    # Too long: the completion keeps at least half the budget; the prompt loses its start.
    long = tokenize(base, LmExample("p" * 50, "c" * 50, 1, 0), max_length=21)
    assert len(long.input_ids) == 21 and long.labels.count(IGNORE) == 11 and long.labels[-1] == ord("c")


def test_the_loss_is_the_mean_over_completion_tokens_only() -> None:
    base = load_causal_base_model("tiny-llama")
    rows = [tokenize(base, LmExample("hello ", "world", 1, 0), 32), tokenize(base, LmExample("", "hi", 1, 1), 32)]
    ids, mask, labels = collate(rows, pad=258)
    logits = torch.randn(ids.shape[0], ids.shape[1], 320, generator=torch.Generator().manual_seed(0))
    total, count = token_loss(logits, labels)
    expected, n = 0.0, 0
    for b in range(ids.shape[0]):
        for t in range(1, ids.shape[1]):
            if labels[b, t] != IGNORE:
                expected += float(torch.nn.functional.cross_entropy(logits[b, t - 1][None], labels[b, t][None]))
                n += 1
    assert count == n == len("world") + 1 + len("hi") + 1  # EOS is a target too
    assert total.item() == pytest.approx(expected, rel=1e-5)
    # Changing what the model predicts at prompt positions changes nothing.
    logits[0, :6] += 100.0
    assert token_loss(logits, labels)[0].item() == pytest.approx(expected, rel=1e-5)


def test_training_learns_and_reports_progress(trained: tuple[TrainedAdapter, list[dict], torch.nn.Module]) -> None:
    adapter, events, _ = trained
    losses = adapter.metrics["train_loss"]
    assert len(losses) == 2 and losses[1] < losses[0]
    steps = [e for e in events if e["stage"] == "train"]
    assert [(e["epoch"], e["step"]) for e in steps] == [(1, 1), (1, 2), (2, 1), (2, 2)]  # 16 rows, batch 8
    assert all(e["examples_per_second"] > 0 and e["loss"] > 0 for e in steps) and steps[-1]["eta_seconds"] == 0
    assert adapter.metrics["eval_examples"] == 3 and adapter.metrics["eval_loss"] > 0
    assert adapter.config["task"] == CAUSAL_TASK and adapter.config["lora"] == SETTINGS.to_dict()


def test_same_inputs_give_identical_bytes_and_another_seed_does_not(trained: tuple[TrainedAdapter, list[dict], torch.nn.Module]) -> None:
    again = train_causal_lm(ROWS, SETTINGS, "tiny-llama")
    assert again.adapter_bytes == trained[0].adapter_bytes
    other = train_causal_lm(ROWS, LoraSettings(**{**SETTINGS.to_dict(), "seed": 2, "epochs": 1}), "tiny-llama")
    assert other.adapter_bytes != trained[0].adapter_bytes


def test_the_adapter_is_servable_and_serving_computes_the_trained_model(trained: tuple[TrainedAdapter, list[dict], torch.nn.Module]) -> None:
    """Serving's per-row LoRA over the shared base gives the trained peft model's logits."""
    from provenant.serving.lm_engine import MultiLoraModel

    base = load_causal_base_model("tiny-llama")
    adapter, _, model = trained
    weights = parse_adapter(adapter.adapter_bytes, adapter.config, base.model)
    assert weights.rank == 8 and len(weights.modules) == 9 * 2  # 9 layers x (q_proj, v_proj)
    assert all(b.abs().sum() > 0 for _, b in weights.modules.values())  # B moved from its zero init
    ids = torch.tensor([base.tokenizer.encode("Q: 3 plus 3? A:")])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        served = MultiLoraModel(base)
        served.use_adapters([weights])
        got = served.model(input_ids=ids).logits
        plain = base.model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(plain, want, atol=1e-3)


class _MemoryCheckpoints:
    def __init__(self, cancel_after: int | None) -> None:
        self.state: dict | None = None
        self.saved, self.cancel_after = 0, cancel_after

    def load(self) -> dict | None:
        return self.state

    def save(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        self.state, self.saved = torch.load(buffer, weights_only=False), self.saved + 1

    def cancelled(self) -> bool:
        return self.cancel_after is not None and self.saved >= self.cancel_after


def test_cancelled_then_resumed_training_ends_with_the_uninterrupted_adapter() -> None:
    settings = LoraSettings(**{**SETTINGS.to_dict(), "epochs": 2, "dropout": 0.1, "seed": 4})  # dropout: RNG matters
    rows = QA[:8]
    straight = train_causal_lm(rows, settings, "tiny-llama")
    checkpoints = _MemoryCheckpoints(cancel_after=1)
    with pytest.raises(TrainingCancelled, match="epoch 2"):
        train_causal_lm(rows, settings, "tiny-llama", checkpoints=checkpoints)
    checkpoints.cancel_after = None
    resumed = train_causal_lm(rows, settings, "tiny-llama", checkpoints=checkpoints)
    assert resumed.adapter_bytes == straight.adapter_bytes
    assert resumed.metrics["train_loss"] == straight.metrics["train_loss"]


def test_a_causal_model_from_a_local_folder_trains(tmp_path: Path) -> None:
    """Any causal LM by local path: a small random Llama saved with a (WordPiece) tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from provenant.factory.base_models import default_target_modules, is_causal_base, load_base_model

    tokenizer = load_base_model("minilm").tokenizer
    tokenizer.bos_token, tokenizer.eos_token = "[CLS]", "[SEP]"
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert is_causal_base(str(tmp_path)) and default_target_modules(str(tmp_path)) == ("q_proj", "v_proj")
    settings = LoraSettings(target_modules=("q_proj", "v_proj"), epochs=1, batch_size=4, max_length=24)
    adapter = train_causal_lm(QA[:4], settings, str(tmp_path))
    weights = parse_adapter(adapter.adapter_bytes, adapter.config, load_causal_base_model(str(tmp_path)).model)
    assert len(weights.modules) == 2 * 2


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="zero examples"):
        train_causal_lm([], SETTINGS, "tiny-llama")
    with pytest.raises(ValueError, match="do not match the causal base model"):
        build_lora_lm(load_causal_base_model("tiny-llama"), LoraSettings(target_modules=("query",)))
    with pytest.raises(ValueError, match="exceeds the base's 512 positions"):
        train_causal_lm(QA[:2], LoraSettings(**{**SETTINGS.to_dict(), "max_length": 4096}), "tiny-llama")


def test_adapter_bytes_identical_in_a_fresh_process(tmp_path: Path) -> None:
    """Bit-identity across processes too (no per-process ordering or seeding leaks into the bytes)."""
    import os
    import subprocess
    import sys

    settings = LoraSettings(**{**SETTINGS.to_dict(), "epochs": 1})
    here = train_causal_lm(QA[:8], settings, "tiny-llama").adapter_bytes
    out = tmp_path / "adapter.safetensors"
    script = (
        f"import torch; torch.set_num_threads({torch.get_num_threads()})\n"
        "from provenant.factory.train import LoraSettings\n"
        "from provenant.factory.train_lm import LmExample, train_causal_lm\n"
        "rows = [LmExample(f'Q: {i} plus {i}? A:', f' {2 * i}', 1, i, 1) for i in range(8)]\n"
        f"a = train_causal_lm(rows, LoraSettings.from_dict({settings.to_dict()!r}), 'tiny-llama')\n"
        f"open({str(out)!r}, 'wb').write(a.adapter_bytes)\n"
    )
    backend = str(Path(__file__).resolve().parent.parent / "backend")
    env = {**os.environ, "PYTHONPATH": backend + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=300)
    assert out.read_bytes() == here

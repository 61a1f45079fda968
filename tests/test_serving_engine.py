"""Multi-LoRA causal-LM serving: mixed batches equal one-at-a-time, the LRU cache under load."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load as safetensors_load

from provenant.factory.base_models import TINY_LLAMA, build_tiny_llama, load_causal_base_model
from provenant.factory.lineage import sha256_0x
from provenant.serving.adapter_cache import AdapterBusy, AdapterCache, AdapterCacheFull
from provenant.serving.lm_engine import GenerationRequest, LmEngine, MultiLoraModel
from provenant.serving.lora import AdapterFormatError, adapter_config, parse_adapter, random_adapter
from provenant.store import LocalBlockstore

N_ADAPTERS = 6
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def base():  # type: ignore[no-untyped-def]
    return load_causal_base_model(TINY_LLAMA)


@pytest.fixture(scope="module")
def adapters(base):  # type: ignore[no-untyped-def]
    """Adapter bytes of mixed ranks (4 and 8), so padding ranks inside a batch is exercised too."""
    configs = [adapter_config(TINY_LLAMA, rank=8 if i % 2 else 4, alpha=16) for i in range(N_ADAPTERS)]
    return [(random_adapter(base.model, c, seed=100 + i), c) for i, c in enumerate(configs)]


def _prompts(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[256] + [rng.randrange(256) for _ in range(rng.randrange(3, 33))] for _ in range(n)]


def _generate(model: MultiLoraModel, prompts, weights, budgets):  # type: ignore[no-untyped-def]
    out: list[list[int]] = [[] for _ in prompts]
    model.generate(prompts, weights, budgets, lambda row, token: out[row].append(token))
    return out


def test_tiny_llama_is_deterministic_and_about_30m_parameters(base) -> None:  # type: ignore[no-untyped-def]
    params = sum(p.numel() for p in base.model.parameters())
    assert 25e6 < params < 35e6
    fresh = build_tiny_llama()
    assert all(torch.equal(a, b) for a, b in zip(base.model.state_dict().values(), fresh.state_dict().values()))


def test_mixed_batch_equals_one_at_a_time_per_adapter(base, adapters) -> None:  # type: ignore[no-untyped-def]
    model = MultiLoraModel(base)
    parsed = [parse_adapter(b, c, base.model) for b, c in adapters]
    prompts = _prompts(18, seed=1)
    weights = [None if i % 7 == 0 else parsed[i % N_ADAPTERS] for i in range(len(prompts))]  # base rows too
    budgets = [NEW_TOKENS - (i % 3) for i in range(len(prompts))]  # rows end at different steps
    mixed = _generate(model, prompts, weights, budgets)
    single = [_generate(model, [p], [w], [b])[0] for p, w, b in zip(prompts, weights, budgets)]
    assert [len(o) for o in mixed] == budgets
    assert mixed == single  # greedy, fp32: 100% of tokens equal
    # Adapters matter: the same prompt under two adapters and the base gives different tokens.
    probe = [prompts[0]] * 3
    outs = _generate(model, probe, [None, parsed[0], parsed[1]], [NEW_TOKENS] * 3)
    assert len({tuple(o) for o in outs}) == 3


def test_engine_matches_an_independent_peft_reference(base, adapters) -> None:  # type: ignore[no-untyped-def]
    """Our grouped LoRA matmul + KV cache == peft's LoRA layers with full recomputation per token."""
    model = MultiLoraModel(base)
    adapter_bytes, config = adapters[1]
    lora = config["lora"]
    reference = get_peft_model(build_tiny_llama(), LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                                              target_modules=lora["target_modules"]))
    result = set_peft_model_state_dict(reference, safetensors_load(adapter_bytes))
    assert not result.unexpected_keys
    reference.eval()
    weights = parse_adapter(adapter_bytes, config, base.model)
    for prompt in _prompts(3, seed=2):
        ours = _generate(model, [prompt], [weights], [NEW_TOKENS])[0]
        sequence = list(prompt)
        with torch.inference_mode():
            for _ in range(NEW_TOKENS):
                logits = reference(input_ids=torch.tensor([sequence])).logits[0, -1, : model.vocab]
                sequence.append(int(logits.argmax()))
        assert ours == sequence[len(prompt):]


def test_dynamic_batching_of_concurrent_requests(base, adapters) -> None:  # type: ignore[no-untyped-def]
    parsed = [parse_adapter(b, c, base.model) for b, c in adapters]
    engine = LmEngine(base, max_batch=16, max_wait_s=0.05)
    try:
        prompts = _prompts(12, seed=3)
        reference = _generate(engine.model, prompts, [parsed[i % N_ADAPTERS] for i in range(12)], [8] * 12)
        engine.batches.clear()
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda i: engine.submit(GenerationRequest(
                prompts[i], parsed[i % N_ADAPTERS], 8, ignore_eos=True)).result(), range(12)))
        assert results == reference
        assert max(engine.batches) > 1  # concurrent requests shared forward passes
    finally:
        engine.close()


def test_requests_join_a_running_batch_and_leave_when_done(base, adapters) -> None:  # type: ignore[no-untyped-def]
    """Continuous batching: late requests are merged into the batch being decoded (caches of other
    lengths, left-padded) and still get exactly their one-at-a-time answers."""
    parsed = [parse_adapter(b, c, base.model) for b, c in adapters]
    engine = LmEngine(base, max_batch=16, max_wait_s=0.001)
    try:
        prompts = _prompts(10, seed=5)
        budgets = [24, 24, 24, 24, 5, 7, 9, 11, 13, 3]
        weights = [parsed[i % N_ADAPTERS] if i != 6 else None for i in range(10)]
        reference = [_generate(engine.model, [p], [w], [n])[0] for p, w, n in zip(prompts, weights, budgets)]
        engine.batches.clear()
        first = [engine.submit(GenerationRequest(prompts[i], weights[i], budgets[i], ignore_eos=True))
                 for i in range(4)]
        while len(first[0].tokens) < 2:  # the first group is decoding
            threading.Event().wait(0.002)
        late = [engine.submit(GenerationRequest(prompts[i], weights[i], budgets[i], ignore_eos=True))
                for i in range(4, 10)]
        results = [g.result() for g in first + late]
        assert results == reference
        assert len(engine.batches) >= 2  # at least two prefills were merged into one running batch
        assert min(g.first_token_at for g in late) < min(g.finished_at for g in first)  # joined, did not wait
    finally:
        engine.close()


def test_adapter_parsing_refuses_what_does_not_fit(base, adapters) -> None:  # type: ignore[no-untyped-def]
    adapter_bytes, config = adapters[0]
    with pytest.raises(AdapterFormatError):
        parse_adapter(b"not safetensors", config, base.model)
    with pytest.raises(AdapterFormatError):
        parse_adapter(adapter_bytes, {**config, "lora": {**config["lora"], "rank": 8}}, base.model)
    with pytest.raises(AdapterFormatError):
        parse_adapter(adapter_bytes, {**config, "task": "classification"}, base.model)
    with pytest.raises(AdapterFormatError):
        parse_adapter(adapter_bytes, {**config, "lora": {**config["lora"], "target_modules": ["gate_proj"]}},
                      base.model)


def test_lru_cache_smaller_than_the_adapter_set_serves_concurrent_load(base, adapters, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Adapters fetched by CID from a real blockstore (hash checked); the budget holds 3 of 6."""
    store = LocalBlockstore(tmp_path / "blocks")
    cids = [store.put(b) for b, _ in adapters]
    hashes = [sha256_0x(b) for b, _ in adapters]

    def loader(i: int):  # type: ignore[no-untyped-def]
        data = store.get(cids[i])
        assert sha256_0x(data) == hashes[i]
        return parse_adapter(data, adapters[i][1], base.model)

    one = parse_adapter(*adapters[1], base.model).nbytes  # rank 8, the largest
    cache = AdapterCache(loader, budget_bytes=3 * one, wait_s=30)
    engine = LmEngine(base, max_batch=8, max_wait_s=0.01)
    prompts = _prompts(36, seed=4)
    expected = [_generate(engine.model, [p], [loader(i % N_ADAPTERS)], [6])[0] for i, p in enumerate(prompts)]
    in_use_violations: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> list[int]:
        adapter_id = i % N_ADAPTERS
        weights = cache.acquire(adapter_id)
        try:
            out = engine.submit(GenerationRequest(prompts[i], weights, 6, ignore_eos=True)).result()
            with lock:  # while in use, the adapter must still be resident in the cache
                if adapter_id not in {e["model_id"] for e in cache.snapshot()}:
                    in_use_violations.append(adapter_id)
            return out
        finally:
            cache.release(adapter_id)

    try:
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(call, range(len(prompts))))
    finally:
        engine.close()
    assert results == expected
    assert not in_use_violations
    assert cache.stats.evictions and all(in_use == 0 for _, in_use in cache.stats.evictions)
    assert cache.stats.peak_bytes <= cache.budget_bytes
    assert cache.stats.cold_loads > N_ADAPTERS  # evicted adapters were loaded again, just in time


def test_cache_pinning_unload_and_budget(base, adapters) -> None:  # type: ignore[no-untyped-def]
    parsed = [parse_adapter(b, c, base.model) for b, c in adapters]
    cache = AdapterCache(lambda i: parsed[i], budget_bytes=parsed[1].nbytes + parsed[3].nbytes, wait_s=0.2)
    cache.load(1, pin=True)
    cache.acquire(3)
    with pytest.raises(AdapterCacheFull):  # 1 is pinned, 3 is in use: no room for 5
        cache.acquire(5)
    with pytest.raises(AdapterBusy):
        cache.unload(3)
    cache.release(3)
    cache.acquire(5)  # now 3 is idle and evicted; 1 stays pinned
    assert {e["model_id"] for e in cache.snapshot()} == {1, 5}
    cache.release(5)
    assert cache.unload(1) and not cache.unload(1)

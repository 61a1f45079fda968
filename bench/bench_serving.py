"""Multi-LoRA serving benchmark (issue 8): naive vs preloaded-switching vs ours vs base-only.

    .venv/bin/python bench/bench_serving.py [--adapters 8 32] [--threads 2] [--device cpu] [--out FILE]

Tiny Llama (~29M params, built from a config), rank-8 LoRA on q/k/v/o (~1.2 MB per adapter, stored
by CID in a real LocalBlockstore), 32 requests of 32-token prompts (request i -> adapter i mod N),
16 new tokens each (EOS ignored, so every arm does the same work), greedy, fp32. All 32 requests
arrive at t=0; latency and TTFT are measured from then. Arms:
  (a) naive: per request fetch by CID + hash check + parse, merge W += s*B@A into a private base copy,
      decode at batch 1, restore the weights
  (b) peft PeftModel with every adapter preloaded, set_adapter per request, batch 1
  (c) ours: LmEngine (dynamic batching, per-row grouped LoRA in one forward pass), adapters held in
      the AdapterCache (loaded just in time by CID: cold on first use)
  (d) the base model alone through the same engine, batched (upper bound)
It measures and prints; it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backend"))

import torch  # noqa: E402

from provenant.factory.base_models import ByteTokenizer, CausalBaseModel, build_tiny_llama  # noqa: E402
from provenant.factory.lineage import sha256_0x  # noqa: E402
from provenant.serving.adapter_cache import AdapterCache  # noqa: E402
from provenant.serving.lm_engine import GenerationRequest, LmEngine  # noqa: E402
from provenant.serving.lora import adapter_config, parse_adapter, random_adapter  # noqa: E402
from provenant.store import LocalBlockstore  # noqa: E402

REQUESTS, PROMPT_TOKENS, NEW_TOKENS, RANK = 32, 32, 16, 8


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(name: str, wall: float, latencies: list[float], ttfts: list[float]) -> dict:
    return {"arm": name, "tokens_per_s": REQUESTS * NEW_TOKENS / wall, "wall_s": wall,
            "p50_latency_s": pct(latencies, 50), "p95_latency_s": pct(latencies, 95),
            "p50_ttft_s": pct(ttfts, 50), "p95_ttft_s": pct(ttfts, 95)}


@torch.inference_mode()
def greedy_batch1(model: torch.nn.Module, prompt: list[int], device: str) -> tuple[list[int], float]:
    """Greedy decoding with a KV cache at batch 1; returns tokens and the time of the first one."""
    from transformers import DynamicCache

    cache = DynamicCache()
    out = model(input_ids=torch.tensor([prompt], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    tokens: list[int] = []
    first = 0.0
    for _ in range(NEW_TOKENS):
        token = int(out.logits[0, -1, :ByteTokenizer.vocab_size].argmax())
        first = first or time.perf_counter()
        tokens.append(token)
        out = model(input_ids=torch.tensor([[token]], device=device), cache=cache, use_cache=True, logits_to_keep=1)
    return tokens, first


def arm_naive(store, cids, hashes, config, prompts, device) -> tuple[dict, list[list[int]]]:  # type: ignore[no-untyped-def]
    model = build_tiny_llama().to(device)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    t0 = time.perf_counter()
    lat, ttft, outs = [], [], []
    for i, prompt in enumerate(prompts):
        k = i % len(cids)
        data = store.get(cids[k])
        assert sha256_0x(data) == hashes[k]
        weights = parse_adapter(data, config, model, device)
        with torch.no_grad():
            for path, (a, b) in weights.modules.items():
                model.get_submodule(path).weight += weights.scale * (b @ a)
        tokens, first = greedy_batch1(model, prompt, device)
        with torch.no_grad():
            for path in weights.modules:
                model.get_submodule(path).weight.copy_(originals[f"{path}.weight"])
        outs.append(tokens)
        lat.append(time.perf_counter() - t0)
        ttft.append(first - t0)
    return summary("(a) naive load+merge per request", time.perf_counter() - t0, lat, ttft), outs


def arm_peft_switch(adapter_bytes, config, prompts, device) -> tuple[dict, list[list[int]], float, float]:  # type: ignore[no-untyped-def]
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load as safetensors_load

    lora = config["lora"]
    peft_config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], target_modules=lora["target_modules"])
    model = get_peft_model(build_tiny_llama(), peft_config, adapter_name="a0")
    for k in range(1, len(adapter_bytes)):
        model.add_adapter(f"a{k}", peft_config)
    for k, data in enumerate(adapter_bytes):
        set_peft_model_state_dict(model, safetensors_load(data), adapter_name=f"a{k}")
    model = model.to(device).eval()
    per_adapter = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)
    switches = []
    t0 = time.perf_counter()
    lat, ttft, outs = [], [], []
    for i, prompt in enumerate(prompts):
        s = time.perf_counter()
        model.set_adapter(f"a{i % len(adapter_bytes)}")
        switches.append(time.perf_counter() - s)
        tokens, first = greedy_batch1(model, prompt, device)
        outs.append(tokens)
        lat.append(time.perf_counter() - t0)
        ttft.append(first - t0)
    result = summary("(b) peft preloaded, set_adapter per request, batch 1", time.perf_counter() - t0, lat, ttft)
    return result, outs, statistics.median(switches), per_adapter / len(adapter_bytes)


def arm_engine(engine: LmEngine, name: str, prompts, acquire, release) -> tuple[dict, list[list[int]]]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    handles = []
    for i, prompt in enumerate(prompts):
        weights = acquire(i)
        handles.append((i, engine.submit(GenerationRequest(prompt, weights, NEW_TOKENS, ignore_eos=True))))
    outs = []
    for i, handle in handles:
        outs.append(handle.result())
        release(i)
    lat = [h.finished_at - t0 for _, h in handles]
    ttft = [h.first_token_at - t0 for _, h in handles]
    return summary(name, max(h.finished_at for _, h in handles) - t0, lat, ttft), outs


def run(n_adapters: int, device: str, workdir: Path, repeats: int) -> dict:
    load_before = list(os.getloadavg())
    rng = random.Random(n_adapters)
    tokenizer = ByteTokenizer()
    prompts = [[tokenizer.bos_token_id] + [rng.randrange(32, 127) for _ in range(PROMPT_TOKENS - 1)]
               for _ in range(REQUESTS)]
    shared = build_tiny_llama().to(device)
    base = CausalBaseModel(name="tiny-llama", path="tiny-llama", model=shared, tokenizer=tokenizer,
                           eos_token_id=tokenizer.eos_token_id, max_positions=512)
    config = adapter_config("tiny-llama", rank=RANK, alpha=2 * RANK)
    store = LocalBlockstore(workdir / f"blocks-{n_adapters}")
    adapter_bytes = [random_adapter(shared, config, seed=1000 + k) for k in range(n_adapters)]
    cids = [store.put(b) for b in adapter_bytes]
    hashes = [sha256_0x(b) for b in adapter_bytes]

    def load(k: int):  # type: ignore[no-untyped-def]
        data = store.get(cids[k])
        if sha256_0x(data) != hashes[k]:
            raise RuntimeError("adapter hash mismatch")
        return parse_adapter(data, config, shared, device)

    cold = []
    for k in range(n_adapters):  # cold load: fetch by CID (verified) + hash check + parse to tensors
        s = time.perf_counter()
        weights = load(k)
        cold.append(time.perf_counter() - s)
    engine = LmEngine(base, max_batch=REQUESTS, max_wait_s=0.02)
    runs: dict[str, list[dict]] = {"a": [], "b": [], "c": [], "d": []}
    try:
        engine.submit(GenerationRequest(prompts[0], weights, 2, ignore_eos=True)).result()  # warm-up
        for _ in range(repeats):  # arms interleaved, so noise from other processes hits all of them
            naive, naive_outs = arm_naive(store, cids, hashes, config, prompts, device)
            peft_result, peft_outs, peft_switch, peft_bytes = arm_peft_switch(adapter_bytes, config, prompts, device)
            cache = AdapterCache(load, budget_bytes=n_adapters * weights.nbytes)  # cold: adapters load JIT
            ours, our_outs = arm_engine(engine, "(c) ours: mixed batch, dynamic batching, JIT cache", prompts,
                                        lambda i: cache.acquire(i % n_adapters),
                                        lambda i: cache.release(i % n_adapters))
            base_only, _ = arm_engine(engine, "(d) base model alone, batched", prompts, lambda i: None,
                                      lambda i: None)
            for key, result in zip("abcd", (naive, peft_result, ours, base_only)):
                runs[key].append(result)
        # The run with the median throughput of each arm; every run is kept in the JSON.
        naive, peft_result, ours, base_only = (
            sorted(runs[k], key=lambda r: r["tokens_per_s"])[len(runs[k]) // 2] for k in "abcd")
        results = [naive, peft_result, ours, base_only]
        warm = []
        for k in range(n_adapters):  # warm switch in ours: a cache hit (acquire + release)
            s = time.perf_counter()
            cache.acquire(k)
            cache.release(k)
            warm.append(time.perf_counter() - s)
        gather = []
        for _ in range(5):  # per-batch cost of gathering 32 rows' A/B for every module
            s = time.perf_counter()
            engine.model._gather([cache.acquire(i % n_adapters) for i in range(REQUESTS)])
            gather.append(time.perf_counter() - s)
            for i in range(REQUESTS):
                cache.release(i % n_adapters)
        single = {}
        for label, w in (("adapter", weights), ("base", None)):  # TTFT of one lone request
            times = []
            for _ in range(5):
                h = engine.submit(GenerationRequest(prompts[1], w, 1, ignore_eos=True))
                h.result()
                times.append(h.first_token_at - h.submitted)
            single[label] = statistics.median(times)
    finally:
        engine.close()
    agree = sum(a == b == c for a, b, c in zip(peft_outs, our_outs, naive_outs))
    naive_tps, ours_tps, base_tps = results[0]["tokens_per_s"], ours["tokens_per_s"], base_only["tokens_per_s"]
    return {
        "adapters": n_adapters, "device": device, "threads": torch.get_num_threads(), "arms": results,
        "ours_vs_naive": ours_tps / naive_tps, "ours_vs_peft_switch": ours_tps / peft_result["tokens_per_s"],
        "ours_vs_base": ours_tps / base_tps,
        "ttft_ratio_batched_p50": ours["p50_ttft_s"] / base_only["p50_ttft_s"],
        "ttft_ratio_single": single["adapter"] / single["base"], "ttft_single_s": single,
        "cold_load_p50_s": statistics.median(cold), "cold_load_p95_s": pct(cold, 95),
        "warm_switch_ours_p50_s": statistics.median(warm), "warm_switch_peft_p50_s": peft_switch,
        "batch_gather_32_rows_p50_s": statistics.median(gather),
        "adapter_file_bytes": len(adapter_bytes[0]), "adapter_memory_bytes_ours": weights.nbytes,
        "adapter_memory_bytes_peft": peft_bytes,
        "answers_equal_across_a_b_c": f"{agree}/{REQUESTS}", "engine_batches": engine.batches,
        "all_runs_tokens_per_s": {k: [round(r["tokens_per_s"], 1) for r in v] for k, v in runs.items()},
        # Other processes share these cores: ratios taken within one repeat (arms run back to back)
        # are steadier than ratios of medians; both are reported.
        "per_repeat_median_ours_vs_naive": statistics.median(
            c["tokens_per_s"] / a["tokens_per_s"] for a, c in zip(runs["a"], runs["c"])),
        "per_repeat_median_ours_vs_base": statistics.median(
            c["tokens_per_s"] / d["tokens_per_s"] for c, d in zip(runs["c"], runs["d"])),
        "per_repeat_median_ttft_ratio": statistics.median(
            c["p50_ttft_s"] / d["p50_ttft_s"] for c, d in zip(runs["c"], runs["d"])),
        "load_average_before_after": load_before + list(os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (interleaved); the median is reported")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    reports = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.adapters:
            report = run(n, args.device, Path(tmp), args.repeats)
            reports.append(report)
            print(json.dumps(report, indent=1), flush=True)
    if args.out:
        args.out.write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()

"""Bounded load test of the serving API (issue 8): loopback only, paid calls, many adapters.

    .venv/bin/python bench/load_serving.py [--clients 200] [--adapters 32] [--seconds 60] [--threads 2]

Starts anvil, deploys, registers N causal-LM LoRA models over the tiny Llama, funds one fresh
consumer per client (escrow deposit by permit) and serves the API in this process. A child process
runs the clients (asyncio + httpx): client i calls model i mod N back to back, alternating
/v1/completions and streamed /v1/chat/completions, 16 new tokens, each call paid with a new
cumulative voucher in the X-Provenant-Voucher header, until the time is up (calls in flight then
finish). Reports calls, errors, p50/p99 latency, tokens/s; then charges every voucher on chain and
checks that the escrow charged exactly the calls that were answered. Measures; asserts no time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backend"))


def _clients(url: str, jobs: list[dict], seconds: float, conn) -> None:  # type: ignore[no-untyped-def]
    """Child process: run every client until the deadline; send back per-call records."""
    import httpx
    from eth_account import Account

    from provenant.payments.vouchers import Voucher, sign_voucher
    from provenant.serving.payment_header import payment_header

    async def client(job: dict, http: httpx.AsyncClient, deadline: float, out: list) -> None:
        account = Account.from_key(bytes.fromhex(job["key"]))
        cumulative, n = 0, 0
        while time.monotonic() < deadline:
            cumulative += job["price"]
            voucher = Voucher(account.address, job["model_id"], cumulative, job["voucher_deadline"])
            headers = payment_header(voucher, sign_voucher(account, job["chain_id"], job["escrow"], voucher))
            prompt = f"client {job['index']} call {n}: tell me about data ancestry"[:32]
            stream = n % 2 == 1
            started = time.perf_counter()
            ok, detail = False, ""
            try:
                if stream:
                    body = {"model": job["model"], "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}
                    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                        lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                    last = json.loads(lines[-2][6:]) if len(lines) >= 2 else {}
                    ok = r.status_code == 200 and lines[-1] == "data: [DONE]" and "provenance" in last
                    detail = "" if ok else f"{r.status_code} {lines[-2:]}"[:300]
                else:
                    r = await http.post("/v1/completions", json={"model": job["model"], "prompt": prompt,
                                                                  "max_tokens": 16}, headers=headers)
                    ok = r.status_code == 200 and "provenance" in r.json()
                    detail = "" if ok else f"{r.status_code} {r.text[:300]}"
            except Exception as exc:  # noqa: BLE001 - counted as an error and reported
                detail = f"{type(exc).__name__}: {exc}"[:300]
            if not ok:
                cumulative -= job["price"]  # the server accepted nothing for a failed call
            out.append((job["index"], ok, time.perf_counter() - started, stream, detail))
            n += 1

    async def main() -> list:
        out: list = []
        limits = httpx.Limits(max_connections=len(jobs) + 10, max_keepalive_connections=len(jobs) + 10)
        async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
            deadline = time.monotonic() + seconds
            await asyncio.gather(*(client(job, http, deadline, out) for job in jobs))
        return out

    started = time.perf_counter()
    records = asyncio.run(main())
    conn.send({"records": records, "wall_s": time.perf_counter() - started})
    conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--adapters", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--budget-adapters", type=int, default=0, help="LRU budget in adapters (0: all fit)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from provenant.chain.devnet import start_anvil
    from provenant.serving.devstack import PRICE, build_stack, fresh_consumer
    from provenant.serving.settings import ServingSettings

    torch.set_num_threads(args.threads)
    budget = (args.budget_adapters or args.adapters) * 1_179_648
    settings = ServingSettings(adapter_budget_bytes=budget, max_batch=args.max_batch, max_wait_s=0.01,
                               rate_per_s=1000, rate_burst=1000, max_new_tokens=64)
    with tempfile.TemporaryDirectory() as tmp, start_anvil(log_path=Path(tmp) / "anvil.log") as anvil:
        setup = time.perf_counter()
        stack = build_stack(anvil.rpc_url, Path(tmp), args.adapters, settings)
        consumers = [fresh_consumer() for _ in range(args.clients)]
        for i, consumer in enumerate(consumers):
            stack.fund(consumer, [stack.models[i % args.adapters].model_id], deposit=10**18)
        stack.start_http()
        stack.service.engine("tiny-llama")  # build the base before the clock starts
        print(f"setup: {args.adapters} models, {args.clients} funded consumers in {time.perf_counter() - setup:.1f} s",
              flush=True)
        now = stack.client.latest_timestamp()
        jobs = [{"index": i, "key": c.key.hex().removeprefix("0x"), "model": stack.models[i % args.adapters].name,
                 "model_id": stack.models[i % args.adapters].model_id, "price": PRICE,
                 "chain_id": stack.client.chain_id, "escrow": stack.contracts.escrow.address,
                 "voucher_deadline": now + 3600} for i, c in enumerate(consumers)]
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(target=_clients, args=(stack.url, jobs, args.seconds, child))
        proc.start()
        result = parent.recv()
        proc.join()
        records = result["records"]
        ok = [r for r in records if r[1]]
        errors = [r for r in records if not r[1]]
        for model in stack.models:
            stack.service.charge_pending(model.model_id)
        charged = sum(int(stack.client.call(stack.contracts.escrow.functions.spentOf(c.address, jobs[i]["model_id"])))
                      for i, c in enumerate(consumers))
        latencies = [r[2] for r in ok]
        report = {
            "clients": args.clients, "adapters": args.adapters, "seconds": args.seconds, "threads": args.threads,
            "max_batch": args.max_batch, "budget_adapters": args.budget_adapters or args.adapters,
            "calls": len(records), "ok": len(ok), "errors": len(errors), "error_samples": [e[4] for e in errors[:5]],
            "wall_s": round(result["wall_s"], 1), "calls_per_s": round(len(ok) / result["wall_s"], 2),
            "tokens_per_s": round(16 * len(ok) / result["wall_s"], 1),
            "p50_latency_s": round(pct(latencies, 50), 3), "p99_latency_s": round(pct(latencies, 99), 3),
            "p50_stream_s": round(pct([r[2] for r in ok if r[3]], 50), 3),
            "clients_with_no_answer": args.clients - len({r[0] for r in ok}),
            "engine_batches_mean": round(sum(stack.service._engines["tiny-llama"].batches) /
                                         max(1, len(stack.service._engines["tiny-llama"].batches)), 1),
            "adapter_evictions": len(stack.service.adapters.stats.evictions),
            "charged_on_chain_equals_answered": charged == PRICE * len(ok),
        }
        stack.stop()
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

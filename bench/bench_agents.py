"""Agent receipts: their overhead beside the model call they wrap, and `verify action` on 1,000 actions.

    nice -n 10 .venv/bin/python bench/bench_agents.py [--calls 40] [--actions 1000]

1. Overhead. A real serving stack on anvil (tiny Llama + LoRA, served over HTTP), called with the
   `openai` client; for each call, side by side in one loop: the call's wall time, then the time
   the SDK takes to turn its receipt into a signed action receipt (hash input and output, the
   model receipt's EIP-712 digest, the action's digest, the secp256k1 signature). Ratio of medians.
2. Verification. A DAG of N actions (each with the previous one as parent, half of them also one
   more among the 8 before it; plus a final result; half of
   them model calls, each listing its own model-call receipt), signed by the agent's registered
   operator. The first `--calls` model-call receipts come from real served calls; the others are
   signed the same way by the model's registered serving key (same attribution, fresh call ids),
   because the verifier's work per receipt does not depend on who produced it. Timed: the whole
   `verify_action` (parse, every signature, the chain reads, the ancestry), warm and cold caches.
Nothing is asserted; numbers go to bench/RESULTS.md by hand with the date and the load.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "indexer")]

from eth_account import Account  # noqa: E402

from provenant.agents.bundle import ActionBundle  # noqa: E402
from provenant.agents.registry import RegistrationFile, register_agent  # noqa: E402
from provenant.agents.sdk import AgentSession  # noqa: E402
from provenant.agents.verify import verify_action  # noqa: E402
from provenant.chain.devnet import start_anvil  # noqa: E402
from provenant.chain.keys import dev_accounts  # noqa: E402
from provenant.serving.devstack import PRICE, build_stack  # noqa: E402
from provenant.serving.receipts import Receipt  # noqa: E402
from provenant.serving.settings import ServingSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--actions", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one verification")
    args = parser.parse_args()
    import openai
    import torch

    torch.set_num_threads(int(os.environ.get("PROVENANT_TORCH_THREADS", "2")))
    print(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp, start_anvil(log_path=Path(tmp) / "anvil.log") as devnet:
        stack = build_stack(devnet.rpc_url, Path(tmp), 1, ServingSettings(rate_per_s=10_000, rate_burst=10_000))
        stack.start_http()
        keys = dev_accounts(12)
        owner, payer, operator = keys[10], keys[11], Account.create()
        model = stack.models[0]
        stack.fund(payer, [model.model_id], deposit=10**18)
        agent = register_agent(stack.client, stack.contracts, stack.store, owner,
                               RegistrationFile("bench-agent", "", operator.address))
        session = AgentSession.open(stack.client, stack.contracts, operator, agent.agent_id)
        oai = openai.OpenAI(base_url=stack.url + "/v1", api_key="voucher", max_retries=0, timeout=120)
        wallet = stack.wallet(payer)

        call_s, receipt_s, receipts = [], [], []
        for i in range(args.calls + 3):
            prompt = f"question {i}: where do rivers begin?"
            headers = wallet.pay(model.model_id, PRICE)
            t0 = time.perf_counter()
            response = oai.completions.create(model=model.name, prompt=prompt, max_tokens=args.max_tokens,
                                              extra_headers=headers)
            t1 = time.perf_counter()
            receipt = Receipt.from_json(response.model_extra["provenance"])
            session.record("model_call", prompt, response.choices[0].text, model_receipts=[receipt])
            t2 = time.perf_counter()
            if i >= 3:  # the first calls warm the adapter cache and the HTTP connection
                call_s.append(t1 - t0)
                receipt_s.append(t2 - t1)
            receipts.append(receipt)
        med_call, med_receipt = statistics.median(call_s), statistics.median(receipt_s)
        print(f"[overhead] {len(call_s)} calls, max_tokens={args.max_tokens}: model call median "
              f"{med_call * 1e3:.2f} ms, receipt (hash + sign) median {med_receipt * 1e3:.3f} ms, "
              f"ratio {med_receipt / med_call * 100:.2f}% (p90 call {quantile(call_s, 0.9) * 1e3:.2f} ms, "
              f"p90 receipt {quantile(receipt_s, 0.9) * 1e3:.3f} ms)")

        bundle = dag(stack, operator, agent.agent_id, receipts, args.actions)
        raw = bundle.to_json()
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            verdict = verify_action(stack.client, stack.contracts, stack.store, raw)
            timings.append(time.perf_counter() - t0)
            assert verdict.ok, verdict.reasons  # a benchmark of a failing verification would be meaningless
        calls = sum(len(a.model_call_ids) for a in verdict.actions)
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(verify_action, stack.client, stack.contracts, stack.store, raw)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        print(f"[verify] DAG of {len(verdict.actions)} actions, {calls} model-call receipts: "
              f"verify_action {timings[0]:.3f} s (first), {min(timings[1:]):.3f} s (best of the next 2)")
        print(f"load average at end: {os.getloadavg()}")
        stack.stop()


def dag(stack, operator, agent_id: int, real: list[Receipt], n: int) -> ActionBundle:  # type: ignore[no-untyped-def]
    """N actions signed by the operator; every other one a model call with its own receipt."""
    rng = random.Random(7)
    session = AgentSession.open(stack.client, stack.contracts, operator, agent_id, first_seq=10_000)
    template = real[0]
    pool = list(real)
    for i in range(n):
        # the previous action, and sometimes one more among the 8 before it (a DAG, all reachable)
        parents = [session.actions[i - 1].hash] if i else []
        if i >= 2 and rng.random() < 0.5:
            parents.append(session.actions[rng.randrange(max(0, i - 9), i - 1)].hash)
        if i % 2:
            receipt = pool.pop() if pool else replace(template, call_id="0x" + os.urandom(32).hex(),
                                                      signer="", signature="").signed_by(stack.server_key)
            session.record("model_call", f"p{i}", f"o{i}", model_receipts=[receipt], parents=parents)
        else:
            session.record("tool_call", {"i": i}, {"ok": True}, parents=parents)
    head = session.result("final", parents=[session.actions[-1].hash, session.actions[-2].hash],
                          value_earned=10**18, royalty_ppm=100_000)
    return ActionBundle.build(head, session.actions, session.model_calls.values())


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


if __name__ == "__main__":
    main()

"""Benchmark: closing a settlement epoch of 10,000 calls, and its gas.

    .venv/bin/python bench/bench_settlement.py [--calls 10000] [--contributors 50,10000]

For each contributor count it starts a fresh anvil, deploys, registers one model and pays the
epoch's fees into the escrow (one direct fee payment), then times what closing the epoch costs
the proposing attributor once per-call scores exist:

  assign     tie 10,000 logged calls to their charges (membership.assign; 100 consumers, synthetic)
  aggregate  quantise every call's scores and run the public rule (render(), Merkle root excluded)
  merkle     build the payout tree over every account
  store      canonical JSON of the full results, stored by CID
  sign       the EIP-712 attestation
  post       settle() on anvil: estimate, send, receipt
and separately what a co-signer spends re-rendering and comparing (its own scoring excluded).

Per-call attributions are synthetic: 8 contributions per call with random positive scores,
over N contributions owned by N contributors (one Datanet, one curator). Scoring itself (the
model's forward and backward passes) is not included: it happens when calls are served and is
benchmarked with the attribution index. Gas per settled contributor = settle() gas / accounts
in the root; claims are measured for a fresh recipient (no token balance) and a funded one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backend"))

from web3 import Web3  # noqa: E402

from provenant.attribution.aggregate import ContributionMeta  # noqa: E402
from provenant.chain.client import ChainClient  # noqa: E402
from provenant.chain.deploy import deploy_all  # noqa: E402
from provenant.chain.devnet import start_anvil  # noqa: E402
from provenant.chain.keys import dev_accounts  # noqa: E402
from provenant.chain.typed_data import settlement_domain  # noqa: E402
from provenant.datanets.service import DatanetService  # noqa: E402
from provenant.demo.thread import samples_dir  # noqa: E402
from provenant.serving.calllog import CallRecord  # noqa: E402
from provenant.settlement.attestation import Attestation, SignedProposal  # noqa: E402
from provenant.settlement.context import EpochContext  # noqa: E402
from provenant.settlement.epoch import Split, payout_leaves, payout_tree  # noqa: E402
from provenant.settlement.membership import VOUCHER, Charge, assign, read_charges  # noqa: E402
from provenant.settlement.quorum import post_settlement  # noqa: E402
from provenant.settlement.results import EpochCall, render  # noqa: E402
from provenant.settlement.scores import compare_scores  # noqa: E402
from provenant.store import open_store  # noqa: E402

PRICE = 1_234_567_890_123_456_789
CONSUMERS = 100
PER_CALL = 8


def synthetic_calls(n_calls: int, n_contrib: int, rng: random.Random) -> tuple[list[CallRecord], list[Charge]]:
    consumers = [f"0x{rng.getrandbits(160):040x}" for _ in range(CONSUMERS)]
    records, cumulative = [], {c: 0 for c in consumers}
    for n in range(n_calls):
        who = consumers[n % CONSUMERS]
        cumulative[who] += PRICE
        records.append(CallRecord(call_id=f"0x{n:064x}", model_id=1, consumer=who, fee=PRICE, prompt="", salt="0x",
                                  output="", timestamp=n, cumulative=cumulative[who]))
    charges = [Charge(1, Web3.to_checksum_address(c), v, v, VOUCHER, 1) for c, v in cumulative.items()]
    return records, charges


def bench_one(n_calls: int, n_contrib: int, workdir: Path) -> dict[str, float]:
    rng = random.Random(n_contrib)
    keys = dev_accounts()
    admin, attributor, funded_target = keys[0], keys[1], keys[2]
    with start_anvil(log_path=workdir / "anvil.log") as devnet:
        client = ChainClient(devnet.rpc_url)
        contracts = deploy_all(client, admin, workdir / "home", protocol_treasury=admin.address)
        store = open_store(str(workdir / "store"))
        s, t = contracts.settlement.functions, contracts.token.functions
        client.transact(admin, s.grantRole(client.call(s.ATTRIBUTOR_ROLE()), attributor.address))
        datanets = DatanetService(client, contracts, store)
        spec = json.loads((samples_dir() / "datanets.json").read_text())["datanets"][0]
        d = datanets.create(admin, {k: v for k, v in spec.items() if k not in ("contributors", "curator_rejects")})
        c = datanets.contribute(admin, d, samples_dir() / "alice_1.jsonl")
        datanets.approve(admin, d, [c.contribution_id])
        client.transact(admin, contracts.models.functions.registerModel((
            "bench-model", "minilm", [d], [c.contribution_id], b"\x01" * 32, b"\x02" * 32, "bafy", b"\x03" * 32,
            "bafy", 0, PRICE, admin.address)))
        fee = n_calls * PRICE
        client.transact(admin, t.approve(contracts.escrow.address, fee))
        client.transact(admin, contracts.escrow.functions.payFees(1, fee))

        records, synthetic_charges = synthetic_calls(n_calls, n_contrib, rng)
        meta = {i: ContributionMeta(Web3.to_checksum_address(f"0x{rng.getrandbits(160):040x}"), 1)
                for i in range(1, n_contrib + 1)}
        scores = [{k: rng.random() for k in rng.sample(range(1, n_contrib + 1), min(PER_CALL, n_contrib))}
                  for _ in range(n_calls)]
        real_charges = tuple(read_charges(contracts, 1, 0, 1, contracts.manifest.block_number))
        ctx = EpochContext(model_id=1, epoch=1, from_seq=0, upto_seq=1, carried_in=0, fee_total=fee,
                           split=Split(*[int(x) for x in client.call(s.split())]), lineage_root="0x" + "01" * 32,
                           manifest_cid="bafy", adapter_hash="0x" + "03" * 32, snapshot_block=real_charges[0].block,
                           contributions=meta, curators={1: (admin.address,)}, charges=real_charges)
        timings: dict[str, float] = {}

        def timed(name: str, fn):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            value = fn()
            timings[name] = time.perf_counter() - started
            return value

        members = timed("assign", lambda: assign(records, synthetic_charges).members)
        calls = [EpochCall(call_id=p.record.call_id, consumer=p.consumer, fee=p.record.fee, charge_seq=1,
                           cumulative=p.cumulative, prompt_hash="0x" + "00" * 32, output_hash="0x" + "00" * 32,
                           scores=sc) for p, sc in zip(members, scores)]
        rendered = timed("render", lambda: render(ctx, calls))
        timed("merkle", lambda: payout_tree(rendered.result.allocations))
        timings["aggregate"] = timings["render"] - timings["merkle"]  # render builds the tree once inside
        cid = timed("store", lambda: store.put(rendered.data))
        deadline = client.latest_timestamp() + 3600
        attestation = Attestation.from_document(rendered.document, cid, deadline)
        domain = settlement_domain(client.chain_id, contracts.settlement.address)
        signature = timed("sign", lambda: attestation.sign(attributor, domain))
        proposal = SignedProposal(attestation, attributor.address, signature)
        tx = timed("post", lambda: post_settlement(client, contracts, attributor, proposal,
                                                   {attributor.address: signature}))
        receipt = client.w3.eth.get_transaction_receipt(tx)
        timings["total"] = sum(timings[k] for k in ("assign", "render", "store", "sign", "post"))

        def cosign_check() -> None:
            again = render(ctx, [replace(c, scores=dict(c.scores)) for c in calls])
            assert again.data == rendered.data
            assert all(compare_scores(c.scores, c.scores) is None for c in calls)

        timed("cosign", cosign_check)
        allocations = rendered.result.allocations
        accounts = sorted(allocations)
        tree = payout_tree(allocations)

        leaves = {leaf.account: leaf for leaf in payout_leaves(allocations)}

        def claim(account: str) -> int:
            leaf = leaves[account]
            proof = [bytes.fromhex(p[2:]) for p in tree.get_proof(leaf.value())]
            return client.transact(admin, s.claim((1, 1, leaf.index, account, leaf.amount, proof))).gas_used

        claim(accounts[2])  # the first claim of a bitmap word turns its slot from zero: not counted
        fresh = claim(accounts[0])
        client.transact(admin, t.transfer(accounts[1], 1))  # the recipient already holds tokens
        funded = claim(accounts[1])
        return {**timings, "accounts": len(accounts), "settle_gas": int(receipt["gasUsed"]),
                "claim_fresh": fresh, "claim_funded": funded,
                "proof_len": len(tree.get_proof(leaves[accounts[0]].value())),
                "results_kib": len(rendered.data) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--contributors", default="50,10000")
    args = parser.parse_args()
    rows = []
    for n in [int(x) for x in args.contributors.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-settlement-") as tmp:
            rows.append((n, bench_one(args.calls, n, Path(tmp))))
    load = os.getloadavg()[0]
    print(f"\nclosing an epoch of {args.calls:,} calls; {os.cpu_count()} cores, load average {load:.1f}\n")
    head = ("contributors", "accounts", "assign s", "aggregate s", "merkle s", "store s", "sign s", "post s",
            "total s", "cosign s", "results KiB", "settle gas", "gas/contributor", "claim fresh", "claim funded",
            "proof len")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for n, r in rows:
        cells = [f"{n:,}", f"{r['accounts']:,}", *(f"{r[k]:.3f}" for k in ("assign", "aggregate", "merkle", "store",
                                                                          "sign", "post", "total", "cosign")),
                 f"{r['results_kib']:,.0f}", f"{r['settle_gas']:,}", f"{r['settle_gas'] / r['accounts']:,.1f}",
                 f"{r['claim_fresh']:,}", f"{r['claim_funded']:,}", str(r["proof_len"])]
        print(" | ".join(cells))


if __name__ == "__main__":
    main()

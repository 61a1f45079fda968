"""The claims index and the read-only claims API, on a real anvil with real settled epochs; and
the settlement loop's handling of a model whose quorum fails.

The world is the soak's (tiny-encoder models, 50 contributors), with a few calls settled in this
process by three attributors (2-of-3). A reorg replaces an epoch by one with other results: the
index must serve the new CID's leaves, and the calldata the API hands out must claim them.
"""

from __future__ import annotations

import json
import shutil
from typing import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from provenant.serving.calllog import CallLog
from provenant.settlement.api import create_claims_router
from provenant.settlement.attributor import Attributor
from provenant.settlement.claims import claimable
from provenant.settlement.claims_index import ClaimsIndex
from provenant.settlement.loop import SettlementLoop
from provenant.settlement.membership import EpochPolicy
from provenant.settlement.quorum import LocalPeer, settle_with_quorum
from test_settlement_soak_support import SoakWorld, build_soak_world

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoakWorld]:
    w = build_soak_world(tmp_path_factory.mktemp("claims"), calls_per_consumer_model=8)
    yield w
    w.close()


def _peers(world: SoakWorld) -> list[LocalPeer]:
    return [LocalPeer(Attributor(world.client, world.contracts, world.store, key, CallLog(world.server_log)))
            for key in world.cast.attributors]


def _settle(world: SoakWorld, peers: list[LocalPeer], model_id: int, upto: int | None = None) -> str:
    settled = settle_with_quorum(world.client, world.contracts, peers[0], peers[1:], model_id, upto_seq=upto)
    return settled.proposal.attestation.results_cid


def _send(world: SoakWorld, account, to: str, data: str) -> int:  # type: ignore[no-untyped-def]
    """What the user's wallet does with the API's calldata: sign and send it, as is."""
    w3 = world.client.w3
    tx = {"to": to, "data": data, "from": account.address, "nonce": w3.eth.get_transaction_count(account.address),
          "chainId": world.client.chain_id, "gas": 2_000_000, "maxFeePerGas": 2 * w3.eth.gas_price + 10**9,
          "maxPriorityFeePerGas": 10**9}
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction))
    return int(receipt["status"])


def test_index_follows_the_cid_on_chain_through_a_reorg_and_the_api_calldata_claims(world: SoakWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m1, m2 = list(world.models.values())[:2]
    for model_id in (m1, m2):
        for consumer in range(2):
            world.serve(model_id, consumer, 2, offset=consumer)
        world.charge(model_id)
    world.serve(m1, 2, 3, offset=5)
    world.charge(m1)
    first_seq = 1
    peers = _peers(world)
    _settle(world, peers, m2)
    rpc = world.client.w3.provider.make_request
    snapshot = rpc("evm_snapshot", [])["result"]
    cid_a = _settle(world, peers, m1, upto=first_seq)

    index = ClaimsIndex.in_home(tmp_path, world.client, world.contracts, world.store)
    doc_a = json.loads(world.store.get(cid_a))
    account = next(a for a in doc_a["allocations"])
    before = {(i.model_id, i.epoch): i.amount for i in claimable(world.client, world.contracts, world.store, account,
                                                                  index)}
    assert before[(m1, 1)] == int(doc_a["allocations"][account])

    rpc("evm_revert", [snapshot])  # the settlement of epoch 1 (results A) is gone
    for peer in peers:
        peer.attributor.client.resync_nonce(peer.address)
    cid_b = _settle(world, peers, m1)  # epoch 1 again, now with every charge: other results
    assert cid_b != cid_a
    doc_b = json.loads(world.store.get(cid_b))
    after = {(i.model_id, i.epoch): i for i in claimable(world.client, world.contracts, world.store, account, index)}
    assert after[(m1, 1)].amount == int(doc_b["allocations"][account]) != before[(m1, 1)]
    assert index.prune() == 1  # A's rows were kept, never served, and can go

    app = FastAPI()
    app.include_router(create_claims_router(world.client, world.contracts, world.store, index))
    http = TestClient(app)
    body = http.get(f"/settlement/accounts/{account.lower()}/claimable").json()
    assert body["account"] == account and int(body["total"]) == sum(i.amount for i in after.values())
    assert {(i["model_id"], i["epoch"]) for i in body["items"]} == set(after)
    signer = next(k for k in world.cast.contributors + world.cast.curators if k.address == account)
    token = world.contracts.token.functions
    balance = int(world.client.call(token.balanceOf(account)))
    call = body["claim_many"]
    assert call["to"] == world.contracts.settlement.address and call["chain_id"] == world.client.chain_id
    assert _send(world, signer, call["to"], call["data"]) == 1
    assert int(world.client.call(token.balanceOf(account))) - balance == int(body["total"])

    again = http.get(f"/settlement/accounts/{account}/claimable").json()
    assert again["items"] == [] and again["claim_many"] is None and again["total"] == "0"
    history = http.get(f"/settlement/accounts/{account}/claims").json()
    assert {(c["model_id"], c["epoch"]) for c in history["claims"]} == set(after)
    assert int(history["total"]) == int(body["total"]) and history["claims"][0]["tx_hash"].startswith("0x")

    results = http.get(f"/settlement/models/{m1}/epochs/1/results")
    assert results.status_code == 200 and results.json()["results_cid"] == cid_b
    assert results.json()["results"]["allocations"] == doc_b["allocations"]
    assert http.get(f"/settlement/models/{m1}/epochs/2/results").status_code == 404
    assert http.get(f"/settlement/models/{m1}/epochs/0/results").status_code == 422


@pytest.mark.parametrize("bad, why", [("0x1234", "not a 0x-prefixed 20-byte hex address"),
                                      ("0x" + "zz" * 20, "not a 0x-prefixed 20-byte hex address"),
                                      ("hello", "not a 0x-prefixed 20-byte hex address")])
def test_bad_addresses_are_422_with_a_clear_message(world: SoakWorld, tmp_path, bad: str, why: str) -> None:  # type: ignore[no-untyped-def]
    app = FastAPI()
    index = ClaimsIndex(None, world.client, world.contracts, world.store)
    app.include_router(create_claims_router(world.client, world.contracts, world.store, index))
    http = TestClient(app)
    for path in (f"/settlement/accounts/{bad}/claimable", f"/settlement/accounts/{bad}/claims"):
        answer = http.get(path)
        assert answer.status_code == 422 and why in answer.json()["detail"], answer.text
    good = world.cast.contributors[0].address
    flipped = good[:2] + "".join(c.swapcase() if c.isalpha() else c for c in good[2:4]) + good[4:]
    if flipped != good:  # a mistyped mixed-case address fails its checksum
        answer = http.get(f"/settlement/accounts/{flipped}/claimable")
        assert answer.status_code == 422 and "checksum" in answer.json()["detail"]


def test_a_model_whose_quorum_fails_waits_without_holding_up_the_others(world: SoakWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m3, m4 = list(world.models.values())[2:4]
    for model_id in (m3, m4):
        world.serve(model_id, 0, 2, offset=11)
        world.charge(model_id)
    tampered = tmp_path / "calls"
    shutil.copytree(world.server_log, tampered)
    path = tampered / f"model-{m3}.jsonl"
    lines = path.read_text().splitlines()
    victim = json.loads(lines[-1])
    lines[-1] = json.dumps({**victim, "prompt": victim["prompt"] + "!"}, sort_keys=True)
    path.write_text("\n".join(lines) + "\n")
    honest = _peers(world)
    misled = [LocalPeer(Attributor(world.client, world.contracts, world.store, key, CallLog(tampered)))
              for key in world.cast.attributors[1:]]
    loop = SettlementLoop(world.client, world.contracts, world.store, proposer=honest[0], peers=misled,
                          call_log=CallLog(world.server_log), policy=EpochPolicy(), retry_after_s=3600)
    done = loop.tick([m3, m4])
    assert [s.proposal.attestation.model_id for s in done] == [m4]  # m3's refusal did not stop m4
    assert world.last_epoch(m3) == 0 and "refused" in loop.failed[m3][1] and victim["call_id"] in loop.failed[m3][1]
    assert loop.tick([m3]) == []  # waiting out retry_after_s, not re-proposing every pass
    loop.retry_after_s, loop.peers = 0.0, honest[1:]
    [again] = loop.tick([m3])
    assert again.proposal.attestation.model_id == m3 and world.last_epoch(m3) == 1 and m3 not in loop.failed


class CountingStore:
    """The real content store, counting reads (to show the index reads each document once)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.reads = inner, 0

    def get(self, cid: str) -> bytes:
        self.reads += 1
        return self.inner.get(cid)


def test_the_index_reads_each_results_document_once_across_queries_and_restarts(world: SoakWorld, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = CountingStore(world.store)
    path = tmp_path / "index.sqlite"
    index = ClaimsIndex(path, world.client, world.contracts, store)  # type: ignore[arg-type]
    accounts = [a.address for a in world.cast.contributors[:10]]
    first = [index.leaves_of(a) for a in accounts]
    epochs = int(index._db.execute("SELECT COUNT(*) FROM indexed_epochs").fetchone()[0])  # noqa: SLF001
    assert store.reads == epochs > 0 and any(first)
    assert [index.leaves_of(a) for a in accounts] == first and store.reads == epochs
    index.close()
    reopened = ClaimsIndex(path, world.client, world.contracts, store)  # type: ignore[arg-type]
    assert [reopened.leaves_of(a) for a in accounts] == first and store.reads == epochs

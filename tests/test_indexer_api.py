"""The query API over a real index: pages, filters, lineage, derived fees, earnings, health."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from web3 import Web3

from provenant.chain.devnet import Devnet
from provenant.store import LocalBlockstore
from provenant_indexer import Indexer
from provenant_indexer.api import create_app
from provenant_indexer.workload import World
from test_indexer_support import Databases, act, config_for, dbs, rpc, world  # noqa: F401 - fixtures


def _all(client: TestClient, path: str, **params: object) -> list[dict]:
    items, offset = [], 0
    while True:
        page = client.get(path, params={**params, "limit": 7, "offset": offset}).json()
        items += page["items"]
        offset += 7
        if offset >= page["total"]:
            return items


def test_api_answers_from_the_index(world: World, anvil: Devnet, dbs: Databases) -> None:
    act(world, 120)
    engine = dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url))
    indexer.run_until_head()
    client = TestClient(create_app(engine, status=indexer.status, rpc_url=anvil.rpc_url))
    st = world.state

    datanets = _all(client, "/datanets")
    assert [d["datanet_id"] for d in datanets] == sorted(st.datanets)
    detail = client.get("/datanets/1").json()
    assert detail["curators"] == sorted(a.lower() for a in st.datanets[1]["curators"])
    assert client.get("/datanets/999").status_code == 404

    contributions = _all(client, "/contributions")
    assert {c["contribution_id"]: c["status"] for c in contributions} == {i: c["status"] for i, c in st.contributions.items()}
    approved = _all(client, "/contributions", status="approved", datanet_id=1)
    assert {c["contribution_id"] for c in approved} == {
        i for i, c in st.contributions.items() if c["status"] == "approved" and c["datanet"] == 1}
    assert client.get("/contributions", params={"status": "bogus"}).status_code == 422
    history = client.get("/contributions/1").json()["history"]
    assert history[0]["status"] == "pending"

    models = _all(client, "/models")
    assert [m["model_id"] for m in models] == sorted(st.models)
    for model_id, m in st.models.items():
        body = client.get(f"/models/{model_id}").json()
        assert [c["contribution_id"] for c in body["lineage"]["contributions"]] == m["contributions"]
        fees = {k: int(v) for k, v in body["fees"].items()}
        escrow = world.c.escrow.functions
        assert fees["fees_in"] == m["cum"][-1]
        assert fees["still_escrowed"] == escrow.unsettledFees(model_id).call()
        assert fees["carried_dust"] == world.c.settlement.functions.carriedDust(model_id).call()
        # epochs(model, e) = (root prefix, unclaimed)
        claimable_on_chain = sum(world.c.settlement.functions.epochs(model_id, e).call()[1]
                                 for e in range(1, m["epoch"] + 1))
        assert fees["claimable"] == claimable_on_chain
        assert fees["fees_in"] == fees["still_escrowed"] + fees["released"]
        deposits = sum(escrow.depositOf(Web3.to_checksum_address(c), model_id).call() for c in m["deposit"])
        assert fees["deposits_unspent"] == deposits

    claimers = {a for (_, _, a) in st.claimed}
    for account in claimers:
        body = client.get(f"/accounts/{account}/earnings").json()
        expected = sum(st.allocations[(m, e)][a] for (m, e, a) in st.claimed if a == account)
        assert sum(int(x["claimed"]) for x in body["models"]) == expected
    assert client.get("/accounts/nonsense/earnings").status_code == 422

    health = client.get("/health").json()
    assert health["indexed_head"] == health["chain_head"] and health["lag"] == 0 and health["ok"]
    act(world, 3)
    assert client.get("/health").json()["lag"] == 3
    assert "/models/{model_id}" in client.get("/openapi.json").json()["paths"]


def test_earnings_per_datanet_come_from_the_results_documents(world: World, anvil: Devnet, dbs: Databases,
                                                              tmp_path: Path) -> None:
    world.store = LocalBlockstore(tmp_path / "blocks")  # settle() stores each epoch's results there
    act(world, 90)
    assert world.state.allocations, "the random sequence settled no epoch: pick another seed"
    engine = dbs.engine()
    Indexer(engine, config_for(world.c, anvil.rpc_url)).run_until_head()
    client = TestClient(create_app(engine, results=world.store.get))
    expected: dict[str, int] = {}
    for allocations in world.state.allocations.values():
        for account, amount in allocations.items():
            expected[account] = expected.get(account, 0) + amount
    for account, total in expected.items():
        body = client.get(f"/accounts/{account}/earnings").json()["per_datanet"]
        assert body["available"] and not body["unavailable_epochs"]
        # Contributor shares plus curator shares, over every (model, Datanet), are the account's
        # allocations to the wei (the Merkle leaves the chain pays out).
        assert sum(int(r["as_contributor"]) + int(r["as_curator"]) for r in body["rows"]) == total
        assert sum(int(d["as_contributor"]) + int(d["as_curator"]) for d in body["datanets"]) == total
        contributed = {c["datanet"] for c in world.state.contributions.values() if c["who"] == account}
        for row in body["rows"]:  # (curators change over time: only contributor rows are checked so)
            assert int(row["as_contributor"]) == 0 or row["datanet_id"] in contributed
    # Without a content store the API says where the figure would come from, and still answers.
    plain = TestClient(create_app(engine)).get(f"/accounts/{next(iter(expected))}/earnings").json()
    assert plain["per_datanet"]["available"] is False and "results documents" in plain["per_datanet"]["reason"]

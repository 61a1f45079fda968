"""The agent contracts in the index, against a real anvil, on SQLite and on PostgreSQL.

AgentRegistry (ERC-8004 agents: registration, URI, metadata, operator rotation, transfer),
X402Vaults (an EIP-3009 payment signed by the payer and settled by the model's server; a vault
sweep) and RoyaltyRouter (one routing over two models) are driven directly through their
contracts with the project's ChainClient; then the rows, the money view (each payment counted
once in fees_in) and the API answers are checked, a reorg that removes a routing removes its
rows, and the incremental index equals a fresh one.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.devnet import Devnet
from provenant.chain.keys import dev_accounts
from provenant_indexer import Indexer, IndexerConfig, WrongDatabase, dump_tables
from provenant_indexer import queries as q
from provenant_indexer.abi import EventTable
from provenant_indexer import schema as s
from provenant_indexer.api import create_app
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload import World
from test_indexer_support import (  # noqa: F401 - fixtures
    Databases, assert_equals_fresh, config_for, dbs, mine, rpc, world,
)

ZERO = "0x" + "0" * 40
TRANSFER_WITH_AUTHORIZATION = [
    {"name": "from", "type": "address"}, {"name": "to", "type": "address"}, {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"}, {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


full_config = config_for  # the whole manifest, agent contracts included


def index(engine: Any, contracts: Contracts, rpc_url: str) -> Indexer:
    indexer = Indexer(engine, full_config(contracts, rpc_url))
    indexer.run_until_head()
    return indexer


class Actors:
    """Accounts the World workload does not send from (its nonce cache stays right)."""

    def __init__(self) -> None:
        keys = list(dev_accounts(20))
        self.admin: LocalAccount = keys[0]
        self.owner: LocalAccount = keys[1]
        self.new_owner: LocalAccount = keys[2]
        self.operator, self.operator2 = keys[3].address, keys[4].address
        self.server: LocalAccount = keys[14]  # World's model server
        self.payer: LocalAccount = keys[16]  # a World consumer: funded by World.setup


def first_model(world: World) -> int:
    for _ in range(300):
        if world.state.counts["model"]:
            return 1
        world.random_action()
    raise AssertionError("the workload registered no model in 300 actions")


def pay_x402(client: ChainClient, c: Contracts, payer: LocalAccount, server: LocalAccount, model_id: int,
             value: int, nonce: bytes) -> None:
    """An EIP-3009 authorization to the model's vault, signed by the payer, settled by the server."""
    assert c.x402 is not None
    vault = client.call(c.x402.functions.vaultOf(model_id))
    domain = client.call(c.token.functions.eip712Domain())
    typed = {
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}],
                  "TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION},
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": domain[1], "version": domain[2], "chainId": client.chain_id,
                   "verifyingContract": c.token.address},
        "message": {"from": payer.address, "to": vault, "value": value, "validAfter": 0,
                    "validBefore": 2**48, "nonce": nonce},
    }
    sig = Account.sign_message(encode_typed_data(full_message=typed), payer.key)
    auth = (payer.address, value, 0, 2**48, nonce, sig.v, sig.r.to_bytes(32, "big"), sig.s.to_bytes(32, "big"))
    client.transact(server, c.x402.functions.chargeX402(model_id, auth))


def route(client: ChainClient, c: Contracts, payer: LocalAccount, agent_id: int, amounts: dict[int, int],
          action: bytes) -> None:
    assert c.royalties is not None
    client.transact(payer, c.token.functions.approve(c.royalties.address, sum(amounts.values())))
    client.transact(payer, c.royalties.functions.routeRoyalty(agent_id, list(amounts), list(amounts.values()), action))


def agent_story(client: ChainClient, c: Contracts, who: Actors, model_id: int) -> dict[str, Any]:
    """Two agents, an operator rotation, a URI and metadata change, a transfer, two x402 payments,
    a sweep and a royalty routing. Returns what the index must show."""
    assert c.agents is not None and c.x402 is not None
    reg = c.agents.functions
    client.transact(who.admin, c.token.functions.transfer(who.owner.address, 10**21))
    client.transact(who.owner, reg.registerAgent("ipfs://bafkreiagentone", who.operator))  # agent 1
    client.transact(who.owner, reg.register("https://example.org/agent2.json"))  # agent 2, no operator
    client.transact(who.owner, reg.setOperator(1, who.operator2))  # rotation
    client.transact(who.owner, reg.setAgentURI(1, "ipfs://bafkreiagentonev2"))
    client.transact(who.owner, reg.setMetadata(1, "model", b"\x01\x02"))
    client.transact(who.owner, reg.transferFrom(who.owner.address, who.new_owner.address, 2))
    pay_x402(client, c, who.payer, who.server, model_id, 7 * 10**15, b"\x11" * 32)
    pay_x402(client, c, who.payer, who.server, model_id, 5 * 10**15, b"\x22" * 32)
    vault = client.call(c.x402.functions.vaultOf(model_id))
    client.transact(who.admin, c.token.functions.transfer(vault, 3 * 10**15))  # paid outside x402
    client.transact(who.admin, c.x402.functions.sweep(model_id))
    route(client, c, who.owner, 1, {model_id: 4 * 10**15}, b"\xaa" * 32)
    return {"x402": 12 * 10**15, "swept": 3 * 10**15, "royalty": 4 * 10**15}


def _rows(engine: Any, table: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.block_number, table.c.log_index)))


def last_seq(engine: Any, model_id: int) -> int:
    """The model's last charge sequence number in the index (vouchers' Charged and FeesPaid share it)."""
    with engine.connect() as conn:
        seqs = [*conn.execute(select(s.charges.c.seq).where(s.charges.c.model_id == model_id)).scalars(),
                *conn.execute(select(s.fee_payments.c.seq).where(s.fee_payments.c.model_id == model_id)).scalars()]
    return max(seqs, default=0)


def test_agents_x402_and_royalties_are_indexed_and_served(world: World, anvil: Devnet,
                                                          rpc: JsonRpc, dbs: Databases) -> None:
    c, who = world.c, Actors()
    model_id = first_model(world)
    chain = ChainClient(anvil.rpc_url)  # a fresh nonce cache: World sent from the deployer too
    engine = dbs.engine()
    indexer = index(engine, c, anvil.rpc_url)  # part-way: the agent story lands in a later batch
    with engine.connect() as conn:
        fees_before = q.model_fees(conn, model_id)
    expected = agent_story(chain, c, who, model_id)
    indexer.run_until_head()

    # every log of the three contracts is in the raw mirror
    extras = list(c.manifest.extras().values())
    assert len(extras) == 3
    chain_logs = rpc.get_logs(c.manifest.block_number, rpc.block_number(), extras)
    with engine.connect() as conn:
        mirrored = conn.execute(select(s.events.c.contract, s.events.c.event)
                                .where(s.events.c.address.in_([a.lower() for a in extras]))).all()
    assert len(mirrored) == len(chain_logs) > 20
    table = EventTable.from_artifacts(full_config(c, anvil.rpc_url).addresses)
    for entry in chain_logs:  # the generated fast decoders equal eth_abi on every new event
        event = table.lookup(entry["address"], entry["topics"][0])
        assert event.decode(entry["topics"], entry["data"]) == event.decode_with_eth_abi(entry["topics"], entry["data"])
    assert {("RoyaltyRouter", "RoyaltyRouted"), ("X402Vaults", "X402Charged"), ("X402Vaults", "VaultSwept"),
            ("X402Vaults", "VaultCreated"), ("AgentRegistry", "OperatorSet"), ("AgentRegistry", "Transfer")} \
        <= set(map(tuple, mirrored))

    # agents: current state and histories, as the contract answers
    reg = c.agents.functions  # type: ignore[union-attr]
    agents = {r.agent_id: r for r in _rows(engine, s.agents)}
    assert set(agents) == {1, 2}
    for agent_id, row in agents.items():
        assert row.owner == chain.call(reg.ownerOf(agent_id)).lower()
        assert row.operator == chain.call(reg.operatorOf(agent_id)).lower()
        assert row.agent_uri == chain.call(reg.tokenURI(agent_id))
    assert agents[1].operator == who.operator2.lower() and agents[1].registration_cid == "bafkreiagentonev2"
    assert agents[2].owner == who.new_owner.address.lower() and agents[2].registered_by == who.owner.address.lower()
    assert agents[2].registration_cid is None
    ops = [(r.previous_operator, r.new_operator) for r in _rows(engine, s.agent_operators) if r.agent_id == 1]
    assert ops == [(ZERO, who.operator.lower()), (who.operator.lower(), who.operator2.lower())]

    # payments: one row each, and each is the FeesPaid with the same (model, seq), counted once
    x402 = _rows(engine, s.x402_charges)
    assert [(r.model_id, r.payer, r.amount, r.nonce) for r in x402] == [
        (model_id, who.payer.address.lower(), 7 * 10**15, "0x" + "11" * 32),
        (model_id, who.payer.address.lower(), 5 * 10**15, "0x" + "22" * 32)]
    sweeps, routings = _rows(engine, s.vault_sweeps), _rows(engine, s.royalty_routings)
    assert [(r.model_id, r.amount) for r in sweeps] == [(model_id, expected["swept"])]
    assert [(r.agent_id, r.model_id, r.amount, r.action_hash) for r in routings] == [
        (1, model_id, expected["royalty"], "0x" + "aa" * 32)]
    paid = {(r.model_id, r.seq): r for r in _rows(engine, s.fee_payments)}
    for row, contract in [*((r, c.x402) for r in x402), *((r, c.x402) for r in sweeps),
                          *((r, c.royalties) for r in routings)]:
        fee = paid[(row.model_id, row.seq)]
        assert fee.amount == row.amount and fee.payer == contract.address.lower()  # type: ignore[union-attr]
    with engine.connect() as conn:
        fees = q.model_fees(conn, model_id)
    new_in = expected["x402"] + expected["swept"] + expected["royalty"]
    assert int(fees["fees_in"]) - int(fees_before["fees_in"]) == new_in  # once, not twice
    assert int(fees["paid_via_x402"]) == expected["x402"] and int(fees["paid_via_sweeps"]) == expected["swept"]
    assert int(fees["paid_via_royalties"]) == expected["royalty"]
    assert int(fees["paid_directly_other"]) == int(fees_before["paid_directly"])
    assert last_seq(engine, model_id) == chain.call(c.escrow.functions.chargeSeq(model_id))

    # the API
    api = TestClient(create_app(engine))
    body = api.get("/agents", params={"owner": who.owner.address}).json()
    assert [a["agent_id"] for a in body["items"]] == [1] and body["total"] == 1
    one = api.get("/agents/1").json()
    assert [h["new_operator"] for h in one["operator_history"]] == [who.operator.lower(), who.operator2.lower()]
    assert [h["uri"] for h in one["uri_history"]] == ["ipfs://bafkreiagentone", "ipfs://bafkreiagentonev2"]
    assert one["metadata"]["model"] == "0x0102" and one["metadata"]["operator"] == who.operator2.lower()
    assert one["royalties"] == {"total": str(expected["royalty"]), "routings": 1,
                                "per_model": [{"model_id": model_id, "amount": str(expected["royalty"]),
                                               "routings": 1}]}
    assert api.get("/agents/2").json()["metadata"]["agentWallet"] == "0x"  # cleared by the transfer
    assert api.get("/agents/3").status_code == 404
    assert api.get("/agents/99999999999999999999").status_code == 422
    assert api.get("/royalties", params={"agent_id": 1, "model_id": model_id}).json()["total"] == 1
    assert api.get("/royalties", params={"agent_id": 2}).json()["total"] == 0
    assert api.get("/royalties", params={"action_hash": "0x" + "AA" * 32}).json()["total"] == 1
    assert api.get("/royalties", params={"action_hash": "0x12"}).status_code == 422
    page = api.get("/x402/charges", params={"model_id": model_id, "limit": 1, "offset": 1}).json()
    assert page["total"] == 2 and [i["nonce"] for i in page["items"]] == ["0x" + "22" * 32]
    assert api.get("/x402/charges", params={"payer": who.admin.address}).json()["total"] == 0
    assert api.get("/x402/sweeps", params={"model_id": model_id}).json()["total"] == 1
    assert api.get(f"/models/{model_id}").json()["fees"]["paid_via_royalties"] == str(expected["royalty"])
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/agents", "/agents/{agent_id}", "/royalties", "/x402/charges", "/x402/sweeps"} <= set(paths)

    assert_equals_fresh(engine, dbs, c, anvil.rpc_url)  # vs a fresh index, with the same full manifest
    indexer.close()


def test_a_reorg_that_removes_a_routing_removes_its_rows(world: World, anvil: Devnet,
                                                          rpc: JsonRpc, dbs: Databases) -> None:
    c, who = world.c, Actors()
    model_id = first_model(world)
    chain = ChainClient(anvil.rpc_url)  # a fresh nonce cache: World sent from the deployer too
    agent_story(chain, c, who, model_id)
    engine = dbs.engine()
    indexer = index(engine, c, anvil.rpc_url)
    before = dump_tables(engine)
    snapshot = rpc.call("evm_snapshot")
    route(chain, c, who.owner, 1, {model_id: 10**15}, b"\xbb" * 32)  # a second routing, and:
    chain.transact(who.owner, c.agents.functions.setOperator(1, ZERO))  # type: ignore[union-attr]
    chain.transact(who.new_owner, c.agents.functions.transferFrom(  # type: ignore[union-attr]
        who.new_owner.address, who.owner.address, 2))
    indexer.run_until_head()
    with engine.connect() as conn:
        assert len(conn.execute(select(s.royalty_routings)).all()) == 2
        assert conn.scalar(select(s.agents.c.operator).where(s.agents.c.agent_id == 1)) == ZERO
    rpc.call("evm_revert", [snapshot])
    mine(rpc, 6)  # a longer fork without them
    result = indexer.step()
    assert result.rolled_back is not None
    indexer.run_until_head()
    with engine.connect() as conn:
        routings = conn.execute(select(s.royalty_routings.c.action_hash)).scalars().all()
        agent1 = conn.execute(select(s.agents).where(s.agents.c.agent_id == 1)).one()
        agent2 = conn.execute(select(s.agents).where(s.agents.c.agent_id == 2)).one()
    assert routings == ["0x" + "aa" * 32]
    assert agent1.operator == who.operator2.lower() and agent2.owner == who.new_owner.address.lower()
    assert last_seq(engine, model_id) == chain.call(c.escrow.functions.chargeSeq(model_id))
    after = dump_tables(engine)
    # nothing but the new blocks' hashes and the checkpoint differs from before the fork
    assert {k: v for k, v in after.items() if k not in ("block_hashes", "checkpoint")} == \
        {k: v for k, v in before.items() if k not in ("block_hashes", "checkpoint")}
    assert_equals_fresh(engine, dbs, c, anvil.rpc_url)
    indexer.close()


def test_old_manifests_keep_working_and_a_database_must_match_its_contracts(deployed: Contracts, anvil: Devnet,
                                                                            dbs: Databases) -> None:
    legacy = {"addresses": deployed.manifest.addresses, "block_number": deployed.manifest.block_number}
    old = IndexerConfig.from_manifest(anvil.rpc_url, legacy)
    assert set(old.addresses) == set(deployed.manifest.addresses)  # no agent contracts, no error
    new = full_config(deployed, anvil.rpc_url)
    assert set(new.addresses) - set(old.addresses) == {"AgentRegistry", "X402Vaults", "RoyaltyRouter"}
    engine = dbs.engine()
    Indexer(engine, old).run_until_head()
    with pytest.raises(WrongDatabase, match="not"):  # it lacks the agent contracts' past events
        Indexer(engine, new)
    with engine.begin() as conn:  # a database made before the checkpoint recorded its contracts
        conn.execute(update(s.checkpoint).values(contracts=None))
    with pytest.raises(WrongDatabase, match="made before AgentRegistry, RoyaltyRouter, X402Vaults"):
        Indexer(engine, new)
    Indexer(engine, old).run_until_head()  # the five core contracts: accepted, and recorded
    with engine.connect() as conn:
        assert conn.scalar(select(s.checkpoint.c.contracts)) == old.contracts_key()
    fresh = dbs.engine()
    Indexer(fresh, new).run_until_head()
    with pytest.raises(WrongDatabase):
        Indexer(fresh, old)
    with pytest.raises(ValueError, match="twice"):
        IndexerConfig.from_manifest(anvil.rpc_url, {**legacy, "addresses": {**legacy["addresses"],
                                                    "AgentRegistry": deployed.manifest.x402_vaults},
                                                    "agent_registry": deployed.manifest.agent_registry})
    assert os.environ.get("PROVENANT_INDEXER_FAULT") is None

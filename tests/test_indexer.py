"""The indexer against a real anvil, on SQLite and on PostgreSQL: backfill, following, reorgs."""

from __future__ import annotations

import pytest
from web3 import Web3
from sqlalchemy import func, select

from provenant.chain.devnet import Devnet
from provenant_indexer import DeepReorgError, Indexer, WrongDatabase, dump_tables
from provenant_indexer import schema as s
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload import World
from test_indexer_support import (  # noqa: F401 - fixtures
    Databases, act, assert_equals_fresh, config_for, dbs, mine, pg_dbs, rpc, sqlite_dbs, world,
)


def _count(engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)))


def test_backfill_mirrors_every_event_and_the_contracts_state(world: World, rpc: JsonRpc, anvil: Devnet,
                                                              dbs: Databases) -> None:
    act(world, 120)
    engine = dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url))
    indexer.run_until_head()
    addresses = list(world.c.manifest.addresses.values())
    chain_logs = rpc.get_logs(world.c.manifest.block_number, rpc.block_number(), addresses)
    assert _count(engine, s.events) == len(chain_logs) > 200
    d = world.c.datanets.functions
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(s.contributions.c.contribution_id, s.contributions.c.status)).all())
        reputation = {r.account: r for r in conn.execute(select(s.reputation))}
        claims = conn.execute(select(func.count()).select_from(s.claims)).scalar()
        models = conn.execute(select(s.models.c.model_id, s.models.c.price_per_call)).all()
        curators = {(r.datanet_id, r.account) for r in conn.execute(select(s.curators).where(s.curators.c.enabled))}
    names = ["none", "pending", "approved", "rejected", "withdrawn"]
    assert statuses == {i: names[d.statusOf(i).call()] for i in range(1, d.contributionCount().call() + 1)}
    for account, rep in reputation.items():
        account = Web3.to_checksum_address(account)
        assert rep.approved == d.approvedCount(account).call() and rep.rejected == d.rejectedCount(account).call()
    assert claims == len(world.state.claimed)
    assert {m: p for m, p in models} == {m: st["price"] for m, st in world.state.models.items()}
    for datanet_id, state in world.state.datanets.items():
        assert {a for (dn, a) in curators if dn == datanet_id} == {a.lower() for a in state["curators"]}


def test_following_in_small_steps_equals_a_fresh_index(world: World, anvil: Devnet, dbs: Databases) -> None:
    engine = dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, range_start=3, range_max=7))
    for _ in range(4):
        act(world, 15)
        for _ in range(3):
            indexer.step()  # partly caught up: later batches start mid-way
    indexer.run_until_head()
    assert_equals_fresh(engine, dbs, world.c, anvil.rpc_url)


def test_snapshot_revert_and_a_different_fork(world: World, rpc: JsonRpc, anvil: Devnet, dbs: Databases) -> None:
    act(world, 20)
    engine = dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, finality_depth=64))
    indexer.run_until_head()
    snapshot, saved = rpc.call("evm_snapshot"), world.snapshot()
    act(world, 25)
    indexer.run_until_head()
    rpc.call("evm_revert", [snapshot])
    world.restore(saved)
    world.rng.seed(99)  # a different fork: other transactions, at first fewer blocks
    act(world, 10)
    result = indexer.step()
    assert result.rolled_back is not None and result.rolled_back.depth >= 15
    act(world, 30)  # the new fork grows past the old head
    indexer.run_until_head()
    assert_equals_fresh(engine, dbs, world.c, anvil.rpc_url)
    with engine.connect() as conn:
        assert conn.execute(select(s.reorgs)).all()


@pytest.mark.parametrize("depth", [1, 5])
def test_anvil_reorg_replaces_the_last_blocks(world: World, rpc: JsonRpc, anvil: Devnet, sqlite_dbs: Databases,
                                              depth: int) -> None:
    act(world, 12)
    states = {}
    for _ in range(8):
        world.random_action()
        states[rpc.block_number()] = world.snapshot()
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, finality_depth=8))
    indexer.run_until_head()
    head = rpc.block_number()
    rpc.call("anvil_reorg", [depth, []])  # the last `depth` blocks become empty ones
    world.restore(states[head - depth])
    assert indexer.step().rolled_back is not None
    act(world, 6)
    indexer.run_until_head()
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url, finality_depth=8)


def test_chain_getting_shorter_is_rolled_back(world: World, rpc: JsonRpc, anvil: Devnet, sqlite_dbs: Databases) -> None:
    act(world, 15)
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url))
    indexer.run_until_head()
    rpc.call("anvil_rollback", [4])
    indexer.run_until_head()
    assert indexer.head()[0] == rpc.block_number()
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url)


def test_reorg_deeper_than_finality_halts_and_changes_nothing(world: World, rpc: JsonRpc, anvil: Devnet,
                                                              dbs: Databases) -> None:
    act(world, 12)
    engine = dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, finality_depth=3))
    indexer.run_until_head()
    before = dump_tables(engine, include_history=True)
    rpc.call("anvil_reorg", [5, []])
    with pytest.raises(DeepReorgError, match="deeper than the finality depth \\(3 blocks\\)"):
        indexer.step()
    with pytest.raises(DeepReorgError):
        Indexer(engine, config_for(world.c, anvil.rpc_url, finality_depth=3)).run_until_head()  # after a restart too
    assert dump_tables(engine, include_history=True) == before


def test_reorg_of_exactly_the_finality_depth_is_rolled_back(world: World, rpc: JsonRpc, anvil: Devnet,
                                                            sqlite_dbs: Databases) -> None:
    act(world, 12)
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, finality_depth=4))
    indexer.run_until_head()
    rpc.call("anvil_reorg", [4, []])
    world.sender.forget_nonces()
    mine(rpc, 2)
    rolled = indexer.step().rolled_back
    assert rolled is not None and rolled.depth == 4
    indexer.run_until_head()
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url, finality_depth=4)


def test_a_database_of_another_deployment_is_refused(world: World, anvil: Devnet, sqlite_dbs: Databases) -> None:
    engine = sqlite_dbs.engine()
    Indexer(engine, config_for(world.c, anvil.rpc_url)).run_until_head()
    other = config_for(world.c, anvil.rpc_url)
    other = type(other)(**{**other.__dict__, "start_block": other.start_block + 1})
    with pytest.raises(WrongDatabase, match="use another database"):
        Indexer(engine, other)


def test_sqlite_and_postgresql_hold_the_same_rows(world: World, anvil: Devnet, sqlite_dbs: Databases,
                                                  pg_dbs: Databases) -> None:
    act(world, 60)
    lite, pg = sqlite_dbs.engine(), pg_dbs.engine()
    for engine in (lite, pg):
        Indexer(engine, config_for(world.c, anvil.rpc_url)).run_until_head()
    assert dump_tables(lite) == dump_tables(pg)


def test_migrations_build_exactly_the_schema(dbs: Databases) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = dbs.engine()  # migrated by open_index
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), s.metadata) == []

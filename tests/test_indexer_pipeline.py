"""The fetch process (pipeline.py): batches fetched and decoded in a second process give the
same index as in-line ones, through a snapshot/revert fork and a replaced tip, on SQLite and
PostgreSQL; its ChainMoved reaches the loop; a dead fetch process falls back to in-line fetches."""

from __future__ import annotations

import pickle

from provenant.chain.devnet import Devnet
from provenant_indexer import Indexer
from provenant_indexer.fetch import ChainMoved
from provenant_indexer.rpc import JsonRpc, RangeTooLarge
from provenant_indexer.workload import World
from test_indexer_support import (  # noqa: F401 - fixtures
    Databases, act, assert_equals_fresh, config_for, dbs, mine, rpc, sqlite_dbs, world,
)


def test_errors_cross_the_process_boundary() -> None:
    moved = pickle.loads(pickle.dumps(ChainMoved("block 7 changed", at_block=7)))
    assert isinstance(moved, ChainMoved) and moved.at_block == 7 and str(moved) == "block 7 changed"
    refused = pickle.loads(pickle.dumps(RangeTooLarge("429", rate_limited=True)))
    assert isinstance(refused, RangeTooLarge) and refused.rate_limited


def test_fetch_process_through_a_fork_equals_a_fresh_index(world: World, rpc: JsonRpc, anvil: Devnet,
                                                           dbs: Databases) -> None:
    act(world, 40)
    engine = dbs.engine()
    # Every batch counts as large: the next one is fetched and decoded in the fetch process.
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, range_start=3, range_max=5, finality_depth=64,
                                         large_batch_events=1, fetch_process=True))
    try:
        indexer.run_until_head()
        assert indexer._ahead.process_batches >= 3
        snapshot, saved = rpc.call("evm_snapshot"), world.snapshot()
        act(world, 20)
        for _ in range(3):
            indexer.step()  # a batch in flight in the fetch process when the chain forks
        rpc.call("evm_revert", [snapshot])
        world.restore(saved)
        world.rng.seed(5)  # a different fork, longer than the old one
        act(world, 30)
        rolled_back = [indexer.step().rolled_back for _ in range(3)]
        assert any(r is not None for r in rolled_back)
        indexer.run_until_head()
    finally:
        indexer.close()
    assert_equals_fresh(engine, dbs, world.c, anvil.rpc_url)  # fresh: the in-line path (small batches)


def test_a_dead_fetch_process_falls_back_to_in_line_fetches(world: World, anvil: Devnet,
                                                            sqlite_dbs: Databases) -> None:
    act(world, 30)
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, range_start=3, range_max=3, large_batch_events=1,
                                         fetch_process=True))
    try:
        for _ in range(3):
            indexer.step()
        fetch_process = indexer._ahead._process
        assert fetch_process is not None
        fetch_process.process.kill()
        indexer.run_until_head()
    finally:
        indexer.close()
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url)


def test_a_prefetched_tip_replaced_on_the_same_parent_is_caught_before_caught_up(world: World, rpc: JsonRpc,
                                                                                   anvil: Devnet,
                                                                                   sqlite_dbs: Databases) -> None:
    """Found by the property test: the last batch, prefetched before a reorg that replaced it on
    the same parent (so no parent check can see it), was written and reported as caught up."""
    act(world, 6)
    fork_at = rpc.block_number()
    snapshot, saved = rpc.call("evm_snapshot"), world.snapshot()
    act(world, 3)
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, range_start=1, range_max=1))
    try:
        while indexer.head()[0] < fork_at:
            indexer.step()  # one block per batch; the next block is fetched ahead in a thread
        pending = indexer._ahead._pending
        assert pending is not None and pending.result().from_block == fork_at + 1
        rpc.call("evm_revert", [snapshot])
        world.restore(saved)
        mine(rpc)  # block fork_at + 1 again, on the same parent, without the old transaction
        indexer.run_until_head()
        assert indexer.status.last_rollback is not None
    finally:
        indexer.close()
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url)

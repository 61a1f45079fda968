"""Property: after any sequence of transactions, partial indexing, indexer crashes and reorgs
(anvil_reorg, evm_snapshot/evm_revert to a different fork, a chain getting shorter), all within the
finality depth, the index equals a fresh index of the final chain, table by table.

Sequences per run: $PROVENANT_INDEXER_SEQUENCES (the issue asks 200 in CI; the default here keeps
the indexer suite within its time budget on 2 cores; see the note in the report for timings).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provenant.chain.devnet import Devnet
from sqlalchemy import Engine

from provenant_indexer import Indexer, diff_tables, dump_tables, make_engine, open_index
from provenant_indexer.abi import EventTable
from provenant_indexer.rpc import JsonRpc, RpcError
from provenant_indexer.workload import World
from test_indexer_support import config_for, rpc, world  # noqa: F401 - fixtures

SEQUENCES = int(os.environ.get("PROVENANT_INDEXER_SEQUENCES", "200"))
FINALITY = 6


class SimulatedCrash(Exception):
    """Raised inside a batch's transaction: the process 'dies' before commit."""


_tx = st.tuples(st.just("tx"), st.integers(1, 8))
_index = st.tuples(st.just("index"), st.integers(0, 3))  # 0: all the way to the head
step = st.one_of(
    _tx, _tx, _tx,
    _index, _index, _index,
    st.tuples(st.just("crash"), st.sampled_from(["mid_batch", "before_commit"])),
    st.tuples(st.just("snapshot"), st.just(0)),
    st.tuples(st.just("revert"), st.just(0)),
    st.tuples(st.just("reorg"), st.integers(1, FINALITY)),
    st.tuples(st.just("reorg"), st.integers(1, FINALITY)),
    st.tuples(st.just("rollback"), st.integers(1, FINALITY)),
)


class Harness:
    """One sequence: the chain (rewound to the base state), the world's model of it, an index."""

    def __init__(self, world: World, rpc: JsonRpc, rpc_url: str, db_dir: Path, seed: int) -> None:
        self.world, self.rpc, self.rpc_url, self.db_dir = world, rpc, rpc_url, db_dir
        self.config = config_for(world.c, rpc_url, finality_depth=FINALITY, range_start=4, range_max=8)
        self.base = rpc.block_number()
        self.states = {self.base: world.snapshot()}  # block -> the world's model at that block
        self.snapshots: list[tuple[str, dict]] = []
        self.unseen_cut = 2**62  # the lowest block the chain was cut back to since the indexer last looked
        world.rng.seed(seed)
        self.table = EventTable.from_artifacts(self.config.addresses)
        self.engine = self._fresh_engine()
        self.indexer = Indexer(self.engine, self.config, rpc=rpc, table=self.table)

    def _fresh_engine(self) -> Engine:
        """A new SQLite index: a copy of one migrated template (migrating costs ~0.1 s each time)."""
        template = self.db_dir / "template.sqlite"
        if not template.exists():
            open_index(str(template)).dispose()
        path = self.db_dir / f"{uuid.uuid4().hex}.sqlite"
        shutil.copyfile(template, path)
        return make_engine(str(path))

    def _record(self) -> None:
        self.states[self.rpc.block_number()] = self.world.snapshot()

    def _rewind_to(self, block: int) -> None:
        """The world's model after the chain was cut back to `block` (later blocks are gone)."""
        self.world.restore(self.states[max(b for b in self.states if b <= block)])
        self.states = {b: s for b, s in self.states.items() if b <= block}

    def _indexed_head(self) -> int:
        return self.indexer.head()[0]

    def _may_cut(self, cut: int) -> bool:
        """Whether cutting the chain back to `cut` keeps every reorg the indexer will see within
        the finality depth (cuts since its last step add up: it sees them as one reorg)."""
        lowest = min(cut, self.unseen_cut)
        if self._indexed_head() - lowest > FINALITY:
            return False
        self.unseen_cut = lowest
        return True

    def run(self, kind: str, arg: object) -> None:
        head = self.rpc.block_number()
        if kind in ("index", "crash"):
            self.unseen_cut = 2**62  # after a step the index holds only blocks of the current chain
        if kind == "tx":
            for _ in range(int(arg)):  # type: ignore[call-overload]
                self.world.random_action()
                self._record()
        elif kind == "index":
            if arg == 0:
                self.indexer.run_until_head()
            for _ in range(int(arg)):  # type: ignore[call-overload]
                self.indexer.step()
        elif kind == "crash":
            def die(point: str) -> None:
                if point == arg:
                    raise SimulatedCrash(point)

            with mock.patch("provenant_indexer.writer.fault_point", side_effect=die):
                try:
                    self.indexer.step()
                except SimulatedCrash:
                    pass
            self.indexer = Indexer(self.engine, self.config, rpc=self.rpc, table=self.table)  # a restart
        elif kind == "snapshot":
            self.snapshots.append((self.rpc.call("evm_snapshot"), dict(self.states)))
        elif kind == "revert" and self.snapshots and self._may_cut(max(self.snapshots[-1][1])):
            snap, states = self.snapshots.pop()
            self.rpc.call("evm_revert", [snap])
            self.states = states
            self._rewind_to(self.rpc.block_number())
        elif kind in ("reorg", "rollback"):
            depth = min(int(arg), head - self.base)  # type: ignore[call-overload]
            if depth <= 0 or not self._may_cut(head - depth):
                return
            if kind == "reorg":
                try:
                    self.rpc.call("anvil_reorg", [depth, []])  # same height, the last blocks now empty
                except RpcError as exc:
                    # anvil keeps no state for some blocks once snapshots were reverted across them,
                    # and refuses the reorg ("Required data unavailable"), changing nothing: a
                    # step this node cannot take, not an indexer failure.
                    if "Required data unavailable" not in str(exc):
                        raise
                    assert self.rpc.block_number() == head
                    return
            else:
                self.rpc.call("anvil_rollback", [depth])
            self._rewind_to(head - depth)
            # Snapshots taken above the cut would revert into a chain that no longer exists here.
            self.snapshots = [(s, m) for s, m in self.snapshots if max(m) <= head - depth]
            if kind == "reorg":
                for b in range(head - depth + 1, head + 1):
                    self.states[b] = self.world.snapshot()

    def check(self) -> None:
        self.indexer.run_until_head()
        fresh_engine = self._fresh_engine()
        Indexer(fresh_engine, self.config, rpc=self.rpc, table=self.table).run_until_head()
        mine, fresh = dump_tables(self.engine), dump_tables(fresh_engine)
        fresh_engine.dispose()
        self.engine.dispose()
        assert mine == fresh, diff_tables(mine, fresh)


def test_index_equals_fresh_index_after_random_transactions_reorgs_and_crashes(
        world: World, rpc: JsonRpc, anvil: Devnet, tmp_path: Path) -> None:
    act_base = rpc.call("evm_snapshot")
    base_state = world.snapshot()
    holder = {"snapshot": act_base}
    checked = [0]  # sequences run to the end and compared with a fresh index

    @settings(max_examples=SEQUENCES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(first=st.integers(3, 10), steps=st.lists(step, min_size=4, max_size=18), seed=st.integers(0, 2**16))
    def sequence(first: int, steps: list[tuple[str, object]], seed: int) -> None:
        rpc.call("evm_revert", [holder["snapshot"]])  # every sequence starts from the same chain
        holder["snapshot"] = rpc.call("evm_snapshot")
        world.restore(base_state)
        harness = Harness(world, rpc, anvil.rpc_url, tmp_path, seed)
        # Every sequence starts with an indexed chain of project transactions, so that what follows
        # (reorgs above all) has indexed rows to undo.
        for kind, arg in [("tx", first), ("index", 0), *steps]:
            harness.run(kind, arg)
        harness.check()
        checked[0] += 1

    sequence()
    # Hypothesis runs max_examples valid sequences unless one fails; say so if it ever ran fewer.
    assert checked[0] >= SEQUENCES, f"only {checked[0]} of {SEQUENCES} sequences ran"
    print(f"{checked[0]} random sequences, each equal to a fresh index")

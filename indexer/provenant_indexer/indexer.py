"""The indexer loop: backfill from the deployment block, then follow the head, surviving reorgs.

Each step either indexes one batch (one database transaction with its checkpoint and block
hashes) or, when the chain moved under us, checks ancestry and rolls back to the common ancestor
(one transaction too). A restart resumes at the checkpoint; nothing else is kept in memory
that the database does not also hold.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from provenant_indexer import schema as s
from provenant_indexer.abi import EventTable
from provenant_indexer.config import IndexerConfig
from provenant_indexer.fetch import ChainMoved, Fetcher
from provenant_indexer.handlers import fold
from provenant_indexer.pipeline import Prefetcher, Ready
from provenant_indexer.ranges import AdaptiveRange
from provenant_indexer.reorg import DeepReorgError, Rollback, find_ancestor, rollback
from provenant_indexer.rpc import JsonRpc, RpcError
from provenant_indexer.writer import lookup_contributors, write_batch

log = logging.getLogger("provenant_indexer")


# What every index made before the checkpoint recorded its contracts (revision 0002) indexed.
LEGACY_CONTRACTS = frozenset({"ProvenantToken", "DatanetRegistry", "ModelRegistry", "UsageEscrow",
                              "AttributionSettlement"})


class WrongDatabase(RuntimeError):
    """The database indexes another chain or another deployment."""


@dataclass
class IndexerStatus:
    """What /health reports; updated by the loop, read by the API thread."""

    indexed_head: int | None = None
    chain_head: int | None = None
    events_indexed: int = 0
    polls_without_progress: int = 0
    stalled: bool = False
    halted: str | None = None  # the error that stopped the loop (a deep reorg)
    last_error: str | None = None
    last_rollback: Rollback | None = None
    range_size: int = 0
    updated_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class StepResult:
    blocks: int = 0
    events: int = 0
    caught_up: bool = False
    rolled_back: Rollback | None = None


class Indexer:
    def __init__(self, engine: Engine, config: IndexerConfig, *, rpc: JsonRpc | None = None,
                 table: EventTable | None = None) -> None:
        self.engine = engine
        self.config = config
        own_rpc = rpc is None  # a client of our own: another process can open the same one
        self.rpc = rpc or JsonRpc(config.rpc_url)
        self.table = table or EventTable.from_artifacts(config.addresses)
        self.keep = config.finality_depth + 1  # the ancestor of a depth-N reorg must be stored too
        self.ranges = AdaptiveRange(start=config.range_start, maximum=config.range_max)
        self.fetcher = Fetcher(self.rpc, self.table.addresses, self.ranges, self.keep)
        self.status = IndexerStatus()
        self._ahead = Prefetcher(self.fetcher, self.table, config.rpc_url if own_rpc else None, self.keep,
                                 config.large_batch_events, config.fetch_process)
        self._init_checkpoint()

    # -- state ---------------------------------------------------------------------------------
    def _init_checkpoint(self) -> None:
        chain_id = self.rpc.chain_id()
        with self.engine.begin() as conn:
            row = conn.execute(select(s.checkpoint)).one_or_none()
            if row is None:
                before = self.config.start_block - 1
                header = self.rpc.headers([before])[before] if before >= 0 else None
                conn.execute(insert(s.checkpoint).values(
                    id=1, chain_id=chain_id, start_block=self.config.start_block, head_block=before,
                    head_hash=header.hash if header else None, contracts=self.config.contracts_key()))
                if header is not None:
                    conn.execute(insert(s.block_hashes).values(
                        block_number=before, block_hash=header.hash, parent_hash=header.parent_hash))
                self.status.indexed_head = before
                return
            if row.chain_id != chain_id or row.start_block != self.config.start_block:
                raise WrongDatabase(
                    f"this database indexes chain {row.chain_id} from block {row.start_block}, not chain "
                    f"{chain_id} from block {self.config.start_block}: use another database")
            self._check_contracts(conn, row.contracts)
            self.status.indexed_head = row.head_block

    def _check_contracts(self, conn: Connection, stored: str | None) -> None:
        """The database must have indexed exactly these contracts from the start: one indexed for
        fewer (say, made before the agent contracts were indexed) lacks their past events."""
        wanted = self.config.contracts_key()
        if stored is None:  # made before revision 0002, which always indexed the five core contracts
            extra = sorted(set(self.config.addresses) - LEGACY_CONTRACTS)
            if extra:
                raise WrongDatabase(
                    f"this database was made before {', '.join(extra)} were indexed and lacks their past events: "
                    f"re-index into a fresh database")
            conn.execute(update(s.checkpoint).where(s.checkpoint.c.id == 1).values(contracts=wanted))
        elif stored != wanted:
            raise WrongDatabase(f"this database indexes the contracts {stored}, not {wanted}: use another database "
                                f"(a fresh index of these contracts)")

    def close(self) -> None:
        """Wait for a prefetch in flight, stop the fetch process, release the RPC connection."""
        self._ahead.close()
        self.rpc.close()

    def head(self) -> tuple[int, str | None]:
        with self.engine.connect() as conn:
            row = conn.execute(select(s.checkpoint.c.head_block, s.checkpoint.c.head_hash)).one()
        return int(row.head_block), row.head_hash

    # -- one step ----------------------------------------------------------------------------------
    def step(self) -> StepResult:
        """Index the next batch, or roll back a reorg, or (caught up) check the head is still ours."""
        head, head_hash = self.head()
        chain_head = self.rpc.block_number()
        self.status.chain_head = chain_head
        target = chain_head - self.config.confirmations
        try:
            if head >= target:
                self._ahead.discard()
                self._ahead.idle()
                self._check_head(head, head_hash)
                return StepResult(caught_up=True)
            batch = self._take(head) or self._ahead.fetch_now(head + 1, target, head_hash)
        except ChainMoved as moved:
            log.info("chain moved (%s): checking ancestry", moved)
            return StepResult(rolled_back=self.handle_reorg())
        if batch.to_block < target and self.config.prefetch:
            # Fetch and decode the next range while this one is written: the node's transfer, our
            # JSON parsing and ABI decoding overlap the database's work. Its parent is this
            # batch's last block.
            self._ahead.submit(batch.to_block + 1, target, batch.headers[-1].hash, batch.events)
        events = self._write(batch)
        blocks = batch.to_block - batch.from_block + 1
        if batch.to_block < target:
            return StepResult(blocks=blocks, events=events)
        self._checkpoint_wal()  # part of the backfill's time: it ends with the database up to date
        # A prefetched batch was read before this write; a reorg since then can have replaced its
        # blocks on top of the same parent, which the parent check cannot see. The next batch's
        # parent check covers every other batch; the last one is checked here, so that "caught up"
        # always means "holding the chain as it is now".
        try:
            self._check_head(batch.to_block, batch.headers[-1].hash)
        except ChainMoved as moved:
            log.info("chain moved while indexing (%s): checking ancestry", moved)
            return StepResult(blocks=blocks, events=events, rolled_back=self.handle_reorg())
        return StepResult(blocks=blocks, events=events, caught_up=True)

    def _take(self, head: int) -> Ready | None:
        """The prefetched batch, if it still starts right after our head (else it is dropped)."""
        batch = self._ahead.take()  # ChainMoved from the fetch surfaces here, on the loop's thread
        return batch if batch is not None and batch.from_block == head + 1 else None

    def _checkpoint_wal(self) -> None:
        """SQLite: copy the WAL into the database now that we are at the head (db.py lets it grow
        during a backfill). PASSIVE: never waits for the API's readers."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def _check_head(self, head: int, head_hash: str | None) -> None:
        if head < 0 or head_hash is None:
            return
        current = self.rpc.headers([head])[head]
        if current is None or current.hash != head_hash:
            raise ChainMoved(f"indexed head {head} is no longer on the chain", at_block=head)

    def _write(self, batch: Ready) -> int:
        with self.engine.begin() as conn:
            changes = fold(batch.decoded, lambda ids: lookup_contributors(conn, ids))
            write_batch(conn, changes, batch, self.keep)
        self.status.indexed_head = batch.to_block
        self.status.events_indexed += changes.event_count
        return changes.event_count

    def handle_reorg(self) -> Rollback | None:
        """Roll back to the common ancestor in one transaction; None when nothing we hold changed."""
        try:
            with self.engine.begin() as conn:
                ancestor = find_ancestor(conn, self.rpc, self.config.finality_depth)
                if ancestor is None:
                    return None
                done = rollback(conn, ancestor, self.rpc, self.keep)
        except ChainMoved as moved:  # the chain moved again mid-rollback: nothing was written; retry
            log.info("chain moved during the rollback (%s); will retry", moved)
            return None
        self.status.indexed_head = ancestor
        self.status.last_rollback = done
        return done

    # -- loops -------------------------------------------------------------------------------------
    def run_until_head(self, max_steps: int | None = None) -> int:
        """Index up to the chain head as it is now (backfill); returns the events indexed."""
        total, steps = 0, 0
        while max_steps is None or steps < max_steps:
            result = self.step()
            total += result.events
            steps += 1
            if result.caught_up:
                break
        return total

    def follow(self, stop: threading.Event, poll_interval: float | None = None) -> None:
        """Index forever (until `stop`), polling the head; a deep reorg halts the loop loudly."""
        interval = self.config.poll_interval if poll_interval is None else poll_interval
        while not stop.is_set():
            try:
                result = self.step()
                self.status.last_error = None
            except DeepReorgError as exc:
                self.status.halted = str(exc)
                log.critical("indexer halted: %s", exc)
                raise
            except (RpcError, OSError, SQLAlchemyError) as exc:  # node or database down: keep polling, report it
                result = StepResult()
                self.status.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("indexer step failed: %s", self.status.last_error)
            self._track_progress(result)
            if result.caught_up or result.blocks == 0:
                stop.wait(interval)

    def _track_progress(self, result: StepResult) -> None:
        """A stall is N polls without progress while the chain is ahead of us."""
        st = self.status
        st.range_size = self.ranges.size
        st.updated_at = time.time()
        behind = st.chain_head is not None and st.indexed_head is not None and st.chain_head > st.indexed_head
        if result.blocks or result.rolled_back or not behind:
            st.polls_without_progress = 0
        else:
            st.polls_without_progress += 1
        was = st.stalled
        st.stalled = st.polls_without_progress >= self.config.stall_polls
        if st.stalled and not was:
            log.error("indexer stalled: no progress for %d polls while the chain head is %s and ours %s",
                      st.polls_without_progress, st.chain_head, st.indexed_head)

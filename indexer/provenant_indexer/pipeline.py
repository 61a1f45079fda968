"""The next batch, fetched ahead while the current one is written.

After a small batch (a follower at the head, a remote node's latency) the next range is fetched
and parsed in a thread; it is decoded (handlers.decode_logs) on the loop's thread when taken.
After a large batch (a backfill) it is fetched in-line by default: on a local node fetching is
CPU work, and any busy thread of ours beside the writes slows them 2-3x (sqlite3 gives up the GIL
for every row it steps, and the other thread then holds it for up to 5 ms). With
`fetch_process`, it is fetched and decoded in a second process instead (no GIL shared; its
answer is read on the loop's thread): the better choice where the node is remote or cores are
idle. On the shared 2-core bench machine in-line won (see the report of issue 13).

Nothing here writes: a batch fetched ahead is only used when it still starts right after the
checkpoint, and the loop re-checks ancestry on `ChainMoved` exactly as for a batch fetched
in-line, so the reorg and crash guarantees are those of indexer.py and writer.py.
"""
from __future__ import annotations

import logging
import multiprocessing
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Mapping, Sequence

from provenant_indexer.abi import EventTable
from provenant_indexer.fetch import Batch, Fetcher
from provenant_indexer.handlers import Decoded, decode_logs
from provenant_indexer.ranges import AdaptiveRange
from provenant_indexer.rpc import Header, JsonRpc, RpcError

log = logging.getLogger("provenant_indexer.pipeline")


@dataclass
class Ready:
    """One batch of blocks, fetched, checked and decoded: what the loop folds and writes."""

    from_block: int
    to_block: int
    headers: list[Header]  # the last blocks of the range, ascending; the last one is to_block
    decoded: Decoded
    ranges: AdaptiveRange | None = None  # the range state after this fetch (from the fetch process)
    refusals: int = 0  # range refusals met by this fetch (in the fetch process)

    @property
    def events(self) -> int:
        return len(self.decoded.event_rows)


def fetch_decode(fetcher: Fetcher, table: EventTable, start: int, target: int, parent: str | None) -> Ready:
    batch = fetcher.fetch(start, target, parent)
    return Ready(batch.from_block, batch.to_block, batch.headers, decode_logs(batch.logs, table))


# -- the fetch process ---------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _fetch_in_worker(start: int, target: int, parent: str | None, ranges: AdaptiveRange) -> Ready:
    fetcher: Fetcher = _worker["fetcher"]
    fetcher.ranges, before = ranges, fetcher.refusals
    ready = fetch_decode(fetcher, _worker["table"], start, target, parent)
    ready.ranges, ready.refusals = fetcher.ranges, fetcher.refusals - before
    return ready


def _serve(conn: Connection, rpc_url: str, abis: Mapping[str, Sequence[Mapping[str, Any]]],
           addresses: Mapping[str, str], keep: int) -> None:
    """The fetch process: one job at a time from the pipe, its Ready (or error) back, pickled."""
    table = EventTable(abis, addresses)
    _worker["table"] = table
    _worker["fetcher"] = Fetcher(JsonRpc(rpc_url), table.addresses, AdaptiveRange(), keep)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the indexer is gone (even by kill -9): so are we
            return
        if job is None:
            return
        try:
            answer: tuple[str, Any] = ("ok", _fetch_in_worker(*job))
        except Exception as exc:  # noqa: BLE001 - every error is the indexer's to handle
            answer = ("error", exc)
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - an error that does not pickle: its text does
            payload = pickle.dumps(("error", RpcError(f"{type(answer[1]).__name__}: {answer[1]}")))
        conn.send_bytes(payload)


class FetchProcess:
    """A second process that fetches and decodes, spoken to over a pipe. Its answer is read and
    unpickled by the loop's own thread when it asks for it: no other thread of ours runs while
    the loop writes (sqlite3 gives up the GIL for every row it steps, and a busy thread beside
    it would take it for 5 ms each time)."""

    def __init__(self, rpc_url: str, table: EventTable, keep: int) -> None:
        abis, addresses = table.sources
        # spawn, not fork: the indexer may run in a threaded server (fork copies held locks).
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, rpc_url, abis, addresses, keep),
                                   name="provenant-indexer-fetch", daemon=True)
        self.process.start()
        child.close()

    def submit(self, start: int, target: int, parent: str | None, ranges: AdaptiveRange) -> None:
        self.conn.send((start, target, parent, ranges))

    def result(self) -> Ready:
        try:
            kind, value = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError) as exc:
            raise FetchProcessDied(f"the fetch process died ({type(exc).__name__})") from None
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def close(self, wait: float = 5.0) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(wait)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class FetchProcessDied(RuntimeError):
    """The fetch process exited (killed, out of memory): the loop fetches in-line instead."""


class Prefetcher:
    """At most one batch fetched ahead: in a thread, or for large batches in a second process
    (or not at all: see IndexerConfig.large_batch_events)."""

    def __init__(self, fetcher: Fetcher, table: EventTable, rpc_url: str | None, keep: int,
                 large_batch_events: int, use_process: bool) -> None:
        self.fetcher, self.table, self.keep = fetcher, table, keep
        self.rpc_url = rpc_url  # None: the RPC client is the caller's own (tests' proxies): no process
        self.large_batch_events = large_batch_events
        self.use_process = use_process and rpc_url is not None
        self._threads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._process: FetchProcess | None = None
        self._pending: Future[Batch] | None = None  # in the thread: fetched and parsed, not decoded
        self._in_process = False  # a job is pending in the fetch process
        self.process_batches = 0  # batches the fetch process delivered (for tests and the bench)

    def fetch_now(self, start: int, target: int, parent: str | None) -> Ready:
        return fetch_decode(self.fetcher, self.table, start, target, parent)

    def submit(self, start: int, target: int, parent: str | None, last_events: int) -> None:
        """Fetch start..(a range) ahead; `last_events`, the batch just fetched, picks the place:
        a thread after a small batch; after a large one the fetch process, or nothing (the loop
        fetches in-line)."""
        if last_events >= self.large_batch_events:
            if not self.use_process:
                return
            try:
                if self._process is None:
                    self._process = FetchProcess(self.rpc_url, self.table, self.keep)  # type: ignore[arg-type]
                self._process.submit(start, target, parent, self.fetcher.ranges)
                self._in_process = True
                return
            except (OSError, RuntimeError) as exc:
                log.warning("fetch process unavailable (%s): fetching in a thread", exc)
                self._drop_process()
        # In a thread, only the fetch (mostly waiting on the node): decoding there would hold
        # the GIL that sqlite3 gives up for every row it steps, slowing the writes ~3x.
        self._pending = self._threads.submit(self.fetcher.fetch, start, target, parent)

    def take(self) -> Ready | None:
        """The batch fetched ahead (its ChainMoved surfaces here), or None when none is pending or
        the fetch process died (the caller then fetches in-line)."""
        if self._in_process:
            self._in_process = False
            try:
                ready = self._process.result()  # type: ignore[union-attr]
            except FetchProcessDied as exc:
                log.warning("%s: fetching in-line", exc)
                self._drop_process()
                return None
            self.process_batches += 1
            if ready.ranges is not None:  # the range adapted over there: carry it on here
                self.fetcher.ranges = ready.ranges
                self.fetcher.refusals += ready.refusals
            return ready
        if self._pending is None:
            return None
        future, self._pending = self._pending, None
        batch = future.result()
        return Ready(batch.from_block, batch.to_block, batch.headers, decode_logs(batch.logs, self.table))

    def discard(self) -> None:
        """Forget a pending batch (its result, or error, is not wanted any more)."""
        if self._in_process:  # its answer would come first on the pipe: start afresh next time
            self._in_process = False
            self._drop_process()
        if self._pending is not None:
            self._pending.cancel()  # a fetch under way in the thread finishes on its own; dropped
            self._pending = None

    def idle(self) -> None:
        """Caught up: a follower's batches are small, give the fetch process back."""
        if self._process is not None and not self._in_process:
            self._drop_process()

    def close(self) -> None:
        self.discard()
        self._threads.shutdown(wait=True, cancel_futures=True)
        self._drop_process()

    def _drop_process(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            process.close()

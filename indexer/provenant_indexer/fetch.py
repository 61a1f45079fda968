"""Fetching one batch of blocks: their logs, and the hashes of the last blocks of the range.

Consistency across a reorg that happens *while* we fetch: the headers are read first (the block
before the range, to prove it still is the block we indexed last, and the last `keep` blocks of
the range, whose parent links must chain), then the logs, then the range's last header again.
A log whose block hash disagrees with the header of its block, or a last header that changed,
means the chain moved under us: `ChainMoved` is raised and nothing is written, and the caller
re-checks ancestry and tries again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

from provenant_indexer.ranges import AdaptiveRange
from provenant_indexer.rpc import Header, JsonRpc, RangeTooLarge, RpcError

log = logging.getLogger("provenant_indexer.fetch")


class ChainMoved(RuntimeError):
    """The chain changed during a fetch, or no longer extends the last indexed block."""

    def __init__(self, message: str, *, at_block: int) -> None:
        super().__init__(message)
        self.at_block = at_block

    def __reduce__(self) -> Any:  # raised in the fetch process, re-raised in the indexer's
        return _chain_moved, (str(self), self.at_block)


def _chain_moved(message: str, at_block: int) -> ChainMoved:
    return ChainMoved(message, at_block=at_block)


@dataclass(frozen=True)
class Batch:
    from_block: int
    to_block: int
    logs: list[dict[str, Any]]  # raw JSON-RPC logs, as the node returned them (handlers.py orders them)
    headers: list[Header]  # the last blocks of the range, ascending; the last one is to_block


class Fetcher:
    def __init__(self, rpc: JsonRpc, addresses: Sequence[str], ranges: AdaptiveRange, keep: int,
                 rate_limit_pause_s: float = 0.2) -> None:
        self.rpc = rpc
        self.addresses = list(addresses)
        self.ranges = ranges
        self.keep = keep
        self.rate_limit_pause_s = rate_limit_pause_s
        self.refusals = 0  # how many times the node refused a range (for /health and tests)

    def fetch(self, start: int, target: int, expected_parent: str | None) -> Batch:
        """Blocks start..min(target, start + range - 1); `expected_parent` is our hash of start - 1."""
        pauses = 0
        while True:
            end = min(target, start + self.ranges.size - 1)
            first_kept = max(start, end - self.keep + 1)
            wanted = ([start - 1] if start > 0 else []) + list(range(first_kept, end + 1))
            headers = self.rpc.headers(wanted)
            self._check_headers(start, end, first_kept, headers, expected_parent)
            try:
                logs = self.rpc.get_logs(start, end, self.addresses)
            except RangeTooLarge as exc:
                self.refusals += 1
                if exc.rate_limited:
                    # Back off in time as well as in size: a rate limit is about load, not range.
                    time.sleep(min(5.0, self.rate_limit_pause_s * (2**min(pauses, 5))))
                    pauses += 1
                    self.ranges.refused()
                    continue
                if not self.ranges.refused():
                    raise RpcError(f"eth_getLogs refused even a {self.ranges.size}-block range: {exc}") from None
                log.info("eth_getLogs refused %d blocks (%s); now %d", end - start + 1, exc, self.ranges.size)
                continue
            kept = {n: headers[n] for n in range(first_kept, end + 1)}
            for entry in logs:
                n = int(entry["blockNumber"], 16)
                header = kept.get(n)
                if header is not None and entry["blockHash"] != header.hash:
                    raise ChainMoved(f"log of block {n} is from block {entry['blockHash']}, header says {header.hash}",
                                     at_block=n)
            again = self.rpc.headers([end])[end]
            if again is None or again.hash != kept[end].hash:  # type: ignore[union-attr]
                raise ChainMoved(f"block {end} changed while its logs were read", at_block=end)
            self.ranges.succeeded()
            return Batch(start, end, logs, [kept[n] for n in range(first_kept, end + 1)])  # type: ignore[misc]

    @staticmethod
    def _check_headers(start: int, end: int, first_kept: int, headers: dict[int, Header | None],
                       expected_parent: str | None) -> None:
        if start > 0 and expected_parent is not None:
            parent = headers.get(start - 1)
            if parent is None or parent.hash != expected_parent:
                raise ChainMoved(f"block {start - 1} is no longer the block indexed last", at_block=start - 1)
        previous = headers.get(start - 1) if first_kept == start else None
        for n in range(first_kept, end + 1):
            header = headers[n]
            if header is None:
                raise ChainMoved(f"block {n} is not on the chain (it got shorter)", at_block=n)
            if previous is not None and header.parent_hash != previous.hash:
                raise ChainMoved(f"block {n} does not extend block {n - 1}", at_block=n)
            previous = header

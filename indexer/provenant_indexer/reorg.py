"""Finding the common ancestor with the chain, and rolling the index back to it.

The index keeps the hashes of its last `finality_depth + 1` blocks: enough to prove an ancestor
for any reorg that replaces up to `finality_depth` blocks. When none of them is still on the
chain the reorg is deeper than the index can undo, and `DeepReorgError` halts the indexer with
the evidence; nothing is deleted, so an operator can look before re-indexing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from provenant_indexer import schema as s
from provenant_indexer.caches import recompute_after_rollback
from provenant_indexer.fetch import ChainMoved
from provenant_indexer.rpc import JsonRpc

log = logging.getLogger("provenant_indexer.reorg")


class DeepReorgError(RuntimeError):
    """The chain replaced more blocks than the finality depth: the index halts, unchanged."""


@dataclass(frozen=True)
class Rollback:
    old_head: int
    old_head_hash: str | None
    ancestor: int

    @property
    def depth(self) -> int:
        return self.old_head - self.ancestor


def find_ancestor(conn: Connection, rpc: JsonRpc, finality_depth: int) -> int | None:
    """The highest stored block whose hash the chain still has; None when the stored head is
    still on the chain (no reorg). Raises DeepReorgError when no stored block is."""
    stored = {r.block_number: r.block_hash for r in conn.execute(select(s.block_hashes))}
    head = conn.execute(select(s.checkpoint.c.head_block, s.checkpoint.c.start_block)).one()
    if not stored:
        return None
    numbers = sorted(stored, reverse=True)
    chain = rpc.headers(numbers)
    if chain[numbers[0]] is not None and chain[numbers[0]].hash == stored[numbers[0]]:  # type: ignore[union-attr]
        return None
    for n in numbers:
        header = chain[n]
        if header is not None and header.hash == stored[n]:
            return n
    lowest = numbers[-1]
    if lowest < head.start_block:
        # Our window reaches below the deployment: the whole indexed range was replaced.
        raise DeepReorgError(
            f"the chain no longer holds block {lowest} (hash {stored[lowest]}), the block before the indexed "
            f"contracts' deployment: the deployment itself was reorganised away. Re-deploy and re-index.")
    raise DeepReorgError(
        f"chain reorganisation deeper than the finality depth ({finality_depth} blocks): none of the "
        f"{len(numbers)} stored block hashes {lowest}..{numbers[0]} is still on the chain (indexed head "
        f"{head.head_block}, stored hash {stored[numbers[0]]}). The index was left unchanged and the indexer "
        f"halts: re-index from block {head.start_block} into a fresh database, or raise --finality-depth.")


def _refill_window(conn: Connection, rpc: JsonRpc, ancestor: int, ancestor_hash: str, keep: int,
                   start_block: int) -> None:
    """Store the hashes of the `keep` blocks ending at the ancestor again, as a fresh index at the
    ancestor would hold them: without them a second reorg soon after the first could reach below
    the shortened window and be taken for a deep one. They must chain up to the ancestor."""
    lowest = max(0, start_block - 1, ancestor - keep + 1)
    have = set(conn.scalars(select(s.block_hashes.c.block_number).where(s.block_hashes.c.block_number >= lowest)))
    missing = [n for n in range(lowest, ancestor) if n not in have]
    if not missing:
        return
    headers = rpc.headers(list(range(missing[0], ancestor + 1)))
    for n in range(ancestor, missing[0], -1):
        child, parent = headers[n], headers[n - 1]
        if child is None or parent is None or child.parent_hash != parent.hash or (
                n == ancestor and child.hash != ancestor_hash):
            raise ChainMoved(f"blocks below the common ancestor {ancestor} changed while rolling back",
                             at_block=n)
    conn.execute(insert(s.block_hashes), [
        {"block_number": n, "block_hash": headers[n].hash, "parent_hash": headers[n].parent_hash}  # type: ignore[union-attr]
        for n in missing])


def rollback(conn: Connection, ancestor: int, rpc: JsonRpc, keep: int) -> Rollback:
    """Delete everything above `ancestor` and recompute the caches, in the caller's transaction."""
    cp = conn.execute(select(s.checkpoint)).one()
    for table in s.CHAIN_TABLES:
        conn.execute(delete(table).where(table.c.block_number > ancestor))
    recompute_after_rollback(conn, ancestor)
    conn.execute(delete(s.block_hashes).where(s.block_hashes.c.block_number > ancestor))
    ancestor_hash = conn.scalar(select(s.block_hashes.c.block_hash).where(s.block_hashes.c.block_number == ancestor))
    _refill_window(conn, rpc, ancestor, ancestor_hash, keep, cp.start_block)
    conn.execute(update(s.checkpoint).where(s.checkpoint.c.id == 1)
                 .values(head_block=ancestor, head_hash=ancestor_hash))
    done = Rollback(old_head=cp.head_block, old_head_hash=cp.head_hash, ancestor=ancestor)
    conn.execute(insert(s.reorgs).values(detected_at=int(time.time()), old_head=done.old_head,
                                         old_head_hash=done.old_head_hash, ancestor=ancestor, depth=done.depth))
    log.warning("reorg: rolled back from block %d to common ancestor %d (depth %d)", done.old_head, ancestor,
                done.depth)
    return done

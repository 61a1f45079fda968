"""An index of settled epochs' payout leaves, so that "what may this account claim" does not fetch
and parse every results document on every question.

A small SQLite table in the provenant home, filled lazily: each query first reads the chain's
EpochSettled events (one eth_getLogs), and any (model, epoch, results CID) not yet indexed is
fetched from the content store once, checked against the root on chain, and stored as one row
per payout leaf (index, account, amount, proof).

Reorgs: the CID on chain is the key. Rows are never trusted by (model, epoch) alone: every query
joins on the (model, epoch, CID) triples the chain holds *now*, so an epoch that a reorg dropped
or replaced simply stops matching (its rows stay, harmless, until `prune()`), and a replacement
is indexed under its own CID. Whether a leaf is claimed is always asked of the contract.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from web3 import Web3

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.settlement.context import ChainReader
from provenant.settlement.epoch import payout_leaves, payout_tree
from provenant.settlement.results import parse
from provenant.store.blockstore import ContentStore

log = logging.getLogger("provenant.settlement")

SCHEMA = """
CREATE TABLE IF NOT EXISTS indexed_epochs (
    settlement TEXT NOT NULL, model_id INTEGER NOT NULL, epoch INTEGER NOT NULL, results_cid TEXT NOT NULL,
    payout_root TEXT NOT NULL, valid INTEGER NOT NULL,
    PRIMARY KEY (settlement, model_id, epoch, results_cid));
CREATE TABLE IF NOT EXISTS payout_leaves (
    settlement TEXT NOT NULL, model_id INTEGER NOT NULL, epoch INTEGER NOT NULL, results_cid TEXT NOT NULL,
    leaf_index INTEGER NOT NULL, account TEXT NOT NULL, amount TEXT NOT NULL, proof TEXT NOT NULL,
    PRIMARY KEY (settlement, model_id, epoch, results_cid, leaf_index));
CREATE INDEX IF NOT EXISTS payout_leaves_account ON payout_leaves (settlement, account);
"""


@dataclass(frozen=True)
class SettledEpoch:
    model_id: int
    epoch: int
    results_cid: str
    payout_root: str


@dataclass(frozen=True)
class IndexedLeaf:
    model_id: int
    epoch: int
    index: int
    account: str  # checksum address
    amount: int
    proof: tuple[str, ...]


def settled_epochs(client: ChainClient, contracts: Contracts, store: ContentStore,
                   model_id: int | None = None) -> list[SettledEpoch]:
    """The epochs the chain holds now (a reorg changes this list, never the index's keys)."""
    reader = ChainReader(client, contracts, store)
    filters = {"modelId": model_id} if model_id is not None else {}
    events = reader.logs(contracts.settlement.events.EpochSettled, "reading EpochSettled events", **filters)
    return [SettledEpoch(int(e["args"]["modelId"]), int(e["args"]["epoch"]), str(e["args"]["resultsCid"]),
                         "0x" + bytes(e["args"]["payoutRoot"]).hex()) for e in events]


class ClaimsIndex:
    """`path` None keeps the index in memory (one process, e.g. a one-shot `provenant claim`)."""

    def __init__(self, path: Path | None, client: ChainClient, contracts: Contracts, store: ContentStore) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.client, self.contracts, self.store = client, contracts, store
        # Which settlement contract, on which chain: a devnet restarted from scratch redeploys at
        # the same address. (Rows are a pure function of their CID anyway; the key keeps them apart.)
        self.settlement = f"{client.chain_id}:{contracts.settlement.address.lower()}"
        # One connection, used under a lock: the API serves from a thread pool, and the index is
        # small and read-mostly, so serialising its queries costs nothing that matters.
        self._db = sqlite3.connect(":memory:" if path is None else str(path), timeout=30, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(SCHEMA)

    @classmethod
    def in_home(cls, home: Path, client: ChainClient, contracts: Contracts, store: ContentStore) -> "ClaimsIndex":
        return cls(Path(home) / "settlement-index.sqlite", client, contracts, store)

    def close(self) -> None:
        self._db.close()

    # -- filling ---------------------------------------------------------------------------
    def refresh(self) -> list[SettledEpoch]:
        """Index every epoch on chain not yet indexed under its CID; the on-chain list."""
        current = settled_epochs(self.client, self.contracts, self.store)
        with self._lock, self._db as db:  # one transaction: a crash leaves nothing half-indexed
            known = set(db.execute("SELECT model_id, epoch, results_cid, payout_root FROM indexed_epochs "
                                   "WHERE settlement = ?", (self.settlement,)))
            for epoch in current:
                if (epoch.model_id, epoch.epoch, epoch.results_cid, epoch.payout_root) not in known:
                    self._index(db, epoch)
        return current

    def _index(self, db: sqlite3.Connection, settled: SettledEpoch) -> None:
        try:
            document = parse(self.store.get(settled.results_cid))
            allocations = {a: int(v) for a, v in document["allocations"].items()}
        except (LookupError, ValueError, RuntimeError, TypeError) as exc:  # missing or bad content
            log.warning("model %s epoch %s: results %s cannot be indexed: %s", settled.model_id, settled.epoch,
                        settled.results_cid, exc)
            return  # not recorded: retried on the next refresh (the content may arrive later)
        tree = payout_tree(allocations) if allocations else None
        valid = tree is not None and tree.root == settled.payout_root
        if not valid:  # proofs from it would only be rejected by the contract: record, serve nothing
            log.warning("model %s epoch %s: results %s do not produce the root on chain", settled.model_id,
                        settled.epoch, settled.results_cid)
        rows = [(self.settlement, settled.model_id, settled.epoch, settled.results_cid, leaf.index,
                 leaf.account.lower(), str(leaf.amount), json.dumps(tree.get_proof(leaf.index)))
                for leaf in payout_leaves(allocations)] if tree is not None and valid else []
        key = (self.settlement, settled.model_id, settled.epoch, settled.results_cid)
        db.execute("DELETE FROM payout_leaves WHERE settlement = ? AND model_id = ? AND epoch = ? AND results_cid = ?",
                   key)  # the same CID under another signed root (a bent attestation) is indexed afresh
        db.executemany("INSERT INTO payout_leaves VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("INSERT OR REPLACE INTO indexed_epochs VALUES (?, ?, ?, ?, ?, ?)",
                   (self.settlement, settled.model_id, settled.epoch, settled.results_cid, settled.payout_root,
                    int(valid)))

    # -- reading ---------------------------------------------------------------------------
    def leaves_of(self, account: str, current: Iterable[SettledEpoch] | None = None) -> list[IndexedLeaf]:
        """Every payout leaf of `account` in the epochs on chain now (claimed or not)."""
        on_chain = {(e.model_id, e.epoch, e.results_cid, e.payout_root)
                    for e in (current if current is not None else self.refresh())}
        with self._lock:
            rows = self._db.execute(
                "SELECT l.model_id, l.epoch, l.results_cid, i.payout_root, l.leaf_index, l.account, l.amount, l.proof "
                "FROM payout_leaves l JOIN indexed_epochs i USING (settlement, model_id, epoch, results_cid) "
                "WHERE l.settlement = ? AND l.account = ? ORDER BY l.model_id, l.epoch",
                (self.settlement, account.lower())).fetchall()
        return [IndexedLeaf(m, e, i, Web3.to_checksum_address(a), int(amount), tuple(json.loads(proof)))
                for m, e, cid, root, i, a, amount, proof in rows if (m, e, cid, root) in on_chain]

    def prune(self) -> int:
        """Forget rows of epochs the chain no longer holds under that CID; how many epochs went."""
        current = {(e.model_id, e.epoch, e.results_cid) for e in self.refresh()}
        with self._lock, self._db as db:
            stale = [k for k in db.execute("SELECT model_id, epoch, results_cid FROM indexed_epochs "
                                           "WHERE settlement = ?", (self.settlement,)) if tuple(k) not in current]
            for m, e, cid in stale:
                for table in ("payout_leaves", "indexed_epochs"):
                    db.execute(f"DELETE FROM {table} WHERE settlement = ? AND model_id = ? AND epoch = ? "  # noqa: S608
                               "AND results_cid = ?", (self.settlement, m, e, cid))
        return len(stale)

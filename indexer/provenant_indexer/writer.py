"""Writing one fetched batch: its rows, its caches, its block hashes and the checkpoint, in the
caller's transaction (so a crash leaves either all of it or none of it)."""

from __future__ import annotations

import os
import signal
from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, Table, bindparam, delete, select, update

from provenant_indexer import schema as s
from provenant_indexer.bulk import insert_rows, insert_tuples
from provenant_indexer.pipeline import Ready
from provenant_indexer.handlers import Changes

CHUNK = 500  # keys per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
FAULT_ENV = "PROVENANT_INDEXER_FAULT"  # tests: "<point>:<n>" kills the process at the n-th pass


def _chunks(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


_fault_counts: dict[str, int] = {}


def fault_point(point: str) -> None:
    """Crash-injection hook for the crash tests: SIGKILL ourselves at a named point."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _fault_counts[point] = _fault_counts.get(point, 0) + 1
    if _fault_counts[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def lookup_contributors(conn: Connection, ids: list[int]) -> dict[int, tuple[int, str]]:
    c = s.contributions.c
    found: dict[int, tuple[int, str]] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(select(c.contribution_id, c.datanet_id, c.contributor)
                                .where(c.contribution_id.in_(chunk))):
            found[row.contribution_id] = (row.datanet_id, row.contributor)
    missing = set(ids) - set(found)
    if missing:
        raise LookupError(f"status events for contributions never submitted: {sorted(missing)[:5]}")
    return found


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, table, rows)


def _update_by_id(conn: Connection, table: Table, id_column: str, updates: dict[int, dict[str, Any]]) -> None:
    if not updates:
        return
    columns = sorted(next(iter(updates.values())))
    stmt = (update(table).where(table.c[id_column] == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}") for c in columns}))
    conn.execute(stmt, [{"b_id": k, **{f"b_{c}": v[c] for c in columns}} for k, v in updates.items()])


def _update_varying(conn: Connection, table: Table, id_column: str, updates: dict[int, dict[str, Any]]) -> None:
    """Like _update_by_id for updates whose column sets differ (an agent's owner, operator or URI
    changes alone): one executemany per column set."""
    groups: dict[tuple[str, ...], dict[int, dict[str, Any]]] = {}
    for key, values in updates.items():
        groups.setdefault(tuple(sorted(values)), {})[key] = values
    for group in groups.values():
        _update_by_id(conn, table, id_column, group)


def replace_keyed(conn: Connection, table: Table, rows: dict[tuple[int, str], dict[str, Any]]) -> None:
    """Write latest-wins cache rows keyed by (datanet_id, account): delete, then insert."""
    if not rows:
        return
    stmt = delete(table).where(table.c.datanet_id == bindparam("b_d"), table.c.account == bindparam("b_a"))
    conn.execute(stmt, [{"b_d": d, "b_a": a} for d, a in rows])
    conn.execute(table.insert(), list(rows.values()))


def _reputation(conn: Connection, changes: Changes) -> None:
    deltas = changes.reputation
    if not deltas:
        return
    r = s.reputation.c
    accounts = sorted(deltas)
    current: dict[str, Any] = {}
    for chunk in _chunks(accounts):
        current.update({row.account: row for row in conn.execute(select(s.reputation).where(r.account.in_(chunk)))})
    rows = []
    for account in accounts:
        d, old = deltas[account], current.get(account)
        rows.append({
            "account": account,
            "submitted": d.submitted + (old.submitted if old else 0),
            "approved": d.approved + (old.approved if old else 0),
            "rejected": d.rejected + (old.rejected if old else 0),
            "withdrawn": d.withdrawn + (old.withdrawn if old else 0),
            "updated_block": max(d.block, old.updated_block if old else 0),
        })
    if current:
        conn.execute(delete(s.reputation).where(r.account == bindparam("b_a")), [{"b_a": a} for a in current])
    conn.execute(s.reputation.insert(), rows)


def write_batch(conn: Connection, changes: Changes, batch: Ready, keep: int) -> None:
    insert_tuples(conn, s.events, changes.event_rows)
    for table, tuples in changes.inserts.items():
        insert_tuples(conn, table, tuples)
    _insert(conn, s.datanets, list(changes.new_datanets.values()))
    _insert(conn, s.contributions, list(changes.new_contributions.values()))
    _insert(conn, s.models, list(changes.new_models.values()))
    _insert(conn, s.agents, list(changes.new_agents.values()))
    fault_point("mid_batch")
    _update_by_id(conn, s.datanets, "datanet_id", changes.datanet_updates)
    _update_by_id(conn, s.contributions, "contribution_id", changes.contribution_updates)
    _update_by_id(conn, s.models, "model_id", changes.model_updates)
    _update_varying(conn, s.agents, "agent_id", changes.agent_updates)
    replace_keyed(conn, s.curators, changes.curators)
    replace_keyed(conn, s.allowlist, changes.allowlist)
    _reputation(conn, changes)
    store_headers(conn, batch, keep)
    fault_point("before_commit")


def store_headers(conn: Connection, batch: Ready, keep: int) -> None:
    """Remember the batch's last block hashes, forget those older than `keep` blocks, move the
    checkpoint to the batch's last block."""
    rows = [{"block_number": h.number, "block_hash": h.hash, "parent_hash": h.parent_hash} for h in batch.headers]
    conn.execute(s.block_hashes.insert(), rows)
    conn.execute(delete(s.block_hashes).where(s.block_hashes.c.block_number <= batch.to_block - keep))
    conn.execute(update(s.checkpoint).where(s.checkpoint.c.id == 1)
                 .values(head_block=batch.to_block, head_hash=batch.headers[-1].hash))

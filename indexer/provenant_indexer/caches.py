"""Recomputing the cache columns from their history after a rollback.

Forward, handlers.py folds each batch into the caches incrementally. After a rollback has deleted
every history row above the common ancestor, each cache row whose `updated_block` is above the
ancestor is recomputed here from the history that is left: exactly what a fresh index of the
chain up to the ancestor would hold (the reorg tests compare the two table by table).
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import Connection, Table, delete, func, select, update

from provenant_indexer import schema as s
from provenant_indexer.writer import _chunks, replace_keyed


def _stale(conn: Connection, table: Table, key: str, ancestor: int) -> list[Any]:
    return list(conn.scalars(select(table.c[key]).where(table.c.updated_block > ancestor)))


def _latest(conn: Connection, history: Table, key: str, ids: Sequence[Any]) -> dict[Any, Any]:
    """The latest history row per value of `key`, for the given values."""
    if not ids:
        return {}
    rank = func.row_number().over(partition_by=history.c[key],
                                  order_by=(history.c.block_number.desc(), history.c.log_index.desc()))
    found: dict[Any, Any] = {}
    for chunk in _chunks(list(ids)):
        ranked = select(history, rank.label("rn")).where(history.c[key].in_(chunk)).subquery()
        for row in conn.execute(select(ranked).where(ranked.c.rn == 1)):
            found[row._mapping[key]] = row
    return found


def _contributions(conn: Connection, ancestor: int) -> None:
    ids = _stale(conn, s.contributions, "contribution_id", ancestor)
    latest = _latest(conn, s.contribution_status, "contribution_id", ids)
    for cid in ids:
        h = latest[cid]  # the submission's own 'pending' row is at the row's creation block
        conn.execute(update(s.contributions).where(s.contributions.c.contribution_id == cid).values(
            status=h.status, status_actor=h.actor, reject_reason=h.reason, slashed=h.slashed,
            updated_block=h.block_number))


def _datanets(conn: Connection, ancestor: int) -> None:
    ids = _stale(conn, s.datanets, "datanet_id", ancestor)
    latest = _latest(conn, s.datanet_versions, "datanet_id", ids)
    d = s.datanets.c
    for datanet_id in ids:
        h = latest.get(datanet_id)
        created = conn.scalar(select(d.block_number).where(d.datanet_id == datanet_id))
        conn.execute(update(s.datanets).where(d.datanet_id == datanet_id).values(
            version=h.version if h else 0, updated_block=max(h.block_number, created) if h else created))


def _models(conn: Connection, ancestor: int) -> None:
    ids = _stale(conn, s.models, "model_id", ancestor)
    latest = _latest(conn, s.model_terms, "model_id", ids)
    for model_id in ids:
        h = latest[model_id]  # registration emits the first terms in the same transaction
        conn.execute(update(s.models).where(s.models.c.model_id == model_id).values(
            price_per_call=h.price_per_call, server=h.server, updated_block=h.block_number))


def _keyed(conn: Connection, cache: Table, history: Table, value: str, ancestor: int) -> None:
    """Caches keyed by (datanet_id, account): latest history row, or no row at all."""
    stale = [(r.datanet_id, r.account) for r in conn.execute(
        select(cache.c.datanet_id, cache.c.account).where(cache.c.updated_block > ancestor))]
    if not stale:
        return
    h = history.c
    rank = func.row_number().over(partition_by=(h.datanet_id, h.account),
                                  order_by=(h.block_number.desc(), h.log_index.desc()))
    wanted = set(stale)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for chunk in _chunks(sorted({d for d, _ in stale})):
        ranked = select(history, rank.label("rn")).where(h.datanet_id.in_(chunk)).subquery()
        for row in conn.execute(select(ranked).where(ranked.c.rn == 1)):
            if (row.datanet_id, row.account) in wanted:
                rows[(row.datanet_id, row.account)] = {
                    "datanet_id": row.datanet_id, "account": row.account, value: row._mapping[value],
                    "updated_block": row.block_number}
    gone = [k for k in stale if k not in rows]
    for d, a in gone:
        conn.execute(delete(cache).where(cache.c.datanet_id == d, cache.c.account == a))
    replace_keyed(conn, cache, rows)


def _reputation(conn: Connection, ancestor: int) -> None:
    accounts = _stale(conn, s.reputation, "account", ancestor)
    if not accounts:
        return
    h = s.contribution_status.c
    counts: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(accounts):
        query = (select(h.contributor, h.status, func.count(), func.max(h.block_number))
                 .where(h.contributor.in_(chunk)).group_by(h.contributor, h.status))
        for contributor, status, count, last in conn.execute(query):
            row = counts.setdefault(contributor, {"account": contributor, "submitted": 0, "approved": 0,
                                                  "rejected": 0, "withdrawn": 0, "updated_block": 0})
            row["submitted" if status == "pending" else status] = int(count)
            row["updated_block"] = max(row["updated_block"], int(last))
    for chunk in _chunks(accounts):
        conn.execute(delete(s.reputation).where(s.reputation.c.account.in_(chunk)))
    if counts:
        conn.execute(s.reputation.insert(), list(counts.values()))


def _agents(conn: Connection, ancestor: int) -> None:
    """Owner, operator and URI from the latest transfer, OperatorSet and URI rows that are left."""
    from provenant_indexer.handlers_agents import ZERO_ADDRESS

    ids = _stale(conn, s.agents, "agent_id", ancestor)
    if not ids:
        return
    owners = _latest(conn, s.agent_transfers, "agent_id", ids)
    operators = _latest(conn, s.agent_operators, "agent_id", ids)
    uris = _latest(conn, s.agent_uris, "agent_id", ids)
    a = s.agents.c
    for agent_id in ids:
        created = conn.execute(select(a.block_number, a.registered_by).where(a.agent_id == agent_id)).one()
        owner, operator, uri = owners.get(agent_id), operators.get(agent_id), uris[agent_id]  # Registered's URI row
        # The mint's Transfer precedes Registered in its transaction and is not a cache change.
        moved = owner is not None and owner.from_address != ZERO_ADDRESS
        blocks = [created.block_number, uri.block_number]
        blocks += [owner.block_number] if moved else []
        blocks += [operator.block_number] if operator is not None else []
        conn.execute(update(s.agents).where(a.agent_id == agent_id).values(
            owner=owner.to_address if moved else created.registered_by,
            operator=operator.new_operator if operator is not None else ZERO_ADDRESS,
            agent_uri=uri.uri, registration_cid=uri.cid, updated_block=max(blocks)))


def recompute_after_rollback(conn: Connection, ancestor: int) -> None:
    _contributions(conn, ancestor)
    _datanets(conn, ancestor)
    _models(conn, ancestor)
    _keyed(conn, s.curators, s.curator_changes, "enabled", ancestor)
    _keyed(conn, s.allowlist, s.allowlist_changes, "allowed", ancestor)
    _reputation(conn, ancestor)
    _agents(conn, ancestor)

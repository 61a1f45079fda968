"""Read-side queries over the index: pages of rows, and the derived money views.

Sums of token amounts are done in Python: uint256 values overflow SQLite's integers, and the
same code must give the same exact answer on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from sqlalchemy import Connection, Select, Table, func, select

from provenant_indexer import schema as s


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    """Amounts and other big integers as decimal strings (a browser's JSON numbers lose them)."""
    return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**53 else v)
            for k, v in row.items()}


def page(conn: Connection, query: Select[Any], order: Iterable[Any], limit: int, offset: int) -> Page:
    total = conn.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = conn.execute(query.order_by(*order).limit(limit).offset(offset)).mappings()
    return Page([jsonable(r) for r in rows], int(total), limit, offset)


def _sum(conn: Connection, column: Any, *where: Any) -> int:
    return sum(int(v) for v in conn.scalars(select(column).where(*where)))


def _by(conn: Connection, table: Table, key: str, value: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(select(table).where(table.c[key] == value)).mappings()]


def datanet_detail(conn: Connection, datanet_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(s.datanets).where(s.datanets.c.datanet_id == datanet_id)).mappings().one_or_none()
    if row is None:
        return None
    c = s.contributions.c
    statuses = dict(conn.execute(select(c.status, func.count()).where(c.datanet_id == datanet_id)
                                 .group_by(c.status)).all())
    curators = sorted(r.account for r in conn.execute(
        select(s.curators.c.account).where(s.curators.c.datanet_id == datanet_id, s.curators.c.enabled)))
    used_by = sorted(set(conn.scalars(select(s.model_datanets.c.model_id)
                                      .where(s.model_datanets.c.datanet_id == datanet_id))))
    return {**jsonable(row), "curators": curators, "contributions_by_status": statuses, "used_by_models": used_by}


def model_fees(conn: Connection, model_id: int) -> dict[str, str]:
    """Where a model's fees are: in, released to settlement, paid out, claimable, still escrowed."""
    charged = _sum(conn, s.charges.c.amount, s.charges.c.model_id == model_id)
    paid_directly = _sum(conn, s.fee_payments.c.amount, s.fee_payments.c.model_id == model_id)
    released = _sum(conn, s.fee_releases.c.amount, s.fee_releases.c.model_id == model_id)
    splits = _by(conn, s.epoch_splits, "model_id", model_id)
    protocol = sum(int(x["protocol_amount"]) for x in splits)
    owner = sum(int(x["owner_amount"]) for x in splits)
    allocated = _sum(conn, s.epochs.c.claim_cap, s.epochs.c.model_id == model_id)
    claimed = _sum(conn, s.claims.c.amount, s.claims.c.model_id == model_id)
    last = max(splits, key=lambda x: x["epoch"]) if splits else None
    deposits = conn.execute(select(s.escrow_movements.c.kind, s.escrow_movements.c.amount)
                            .where(s.escrow_movements.c.model_id == model_id)).all()
    deposited = sum(int(a) for k, a in deposits if k == "deposit")
    withdrawn = sum(int(a) for k, a in deposits if k == "withdrawal")
    fees_in = charged + paid_directly
    # x402 charges, sweeps and royalty routings each credit the fees through UsageEscrow.payFees,
    # so each is already one FeesPaid row in paid_directly (same model and seq): they break
    # paid_directly down by where it came from and are never added to fees_in again.
    x402 = _sum(conn, s.x402_charges.c.amount, s.x402_charges.c.model_id == model_id)
    swept = _sum(conn, s.vault_sweeps.c.amount, s.vault_sweeps.c.model_id == model_id)
    royalties = _sum(conn, s.royalty_routings.c.amount, s.royalty_routings.c.model_id == model_id)
    figures = {
        "fees_in": fees_in, "charged": charged, "paid_directly": paid_directly,
        "paid_via_x402": x402, "paid_via_sweeps": swept, "paid_via_royalties": royalties,
        "paid_directly_other": paid_directly - x402 - swept - royalties, "released": released,
        "paid_out": protocol + owner + claimed, "protocol_paid": protocol, "owner_paid": owner,
        "claimed": claimed, "claimable": allocated - claimed, "still_escrowed": fees_in - released,
        "carried_dust": int(last["carried_dust"]) if last else 0,
        "deposits_unspent": deposited - withdrawn - charged,
    }
    return {k: str(v) for k, v in figures.items()}


def model_detail(conn: Connection, model_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(s.models).where(s.models.c.model_id == model_id)).mappings().one_or_none()
    if row is None:
        return None
    md, mc, c = s.model_datanets.c, s.model_contributions.c, s.contributions.c
    datanet_ids = list(conn.scalars(select(md.datanet_id).where(md.model_id == model_id).order_by(md.position)))
    contribs = conn.execute(select(c.contribution_id, c.datanet_id, c.contributor, c.content_hash, c.cid, c.status)
                            .join(s.model_contributions, mc.contribution_id == c.contribution_id)
                            .where(mc.model_id == model_id).order_by(c.contribution_id)).mappings()
    epochs = conn.execute(
        select(s.epochs.c.epoch, s.epochs.c.upto_seq, s.epochs.c.payout_root, s.epochs.c.claim_cap,
               s.epochs.c.results_cid, s.epoch_splits.c.fee_total, s.epoch_splits.c.carried_dust)
        .join(s.epoch_splits, (s.epoch_splits.c.model_id == s.epochs.c.model_id)
              & (s.epoch_splits.c.epoch == s.epochs.c.epoch))
        .where(s.epochs.c.model_id == model_id).order_by(s.epochs.c.epoch)).mappings()
    children = list(conn.scalars(select(s.models.c.model_id).where(s.models.c.parent_id == model_id)))
    return {
        **jsonable(row),
        "lineage": {"parent_id": row["parent_id"] or None, "children": children, "datanet_ids": datanet_ids,
                    "contributions": [dict(x) for x in contribs]},
        "fees": model_fees(conn, model_id),
        "epochs": [jsonable(e) for e in epochs],
    }


def account_earnings(conn: Connection, address: str) -> dict[str, Any]:
    """What an account earned on chain: claims per model and epoch, owner shares of its models,
    and the contributions it has in models' lineages."""
    a = address.lower()
    per_model: dict[int, dict[str, int]] = {}

    def slot(model_id: int) -> dict[str, int]:
        return per_model.setdefault(model_id, {"claimed": 0, "owner_share": 0, "epochs_claimed": 0})

    for row in conn.execute(select(s.claims.c.model_id, s.claims.c.amount).where(s.claims.c.account == a)):
        slot(row.model_id)["claimed"] += int(row.amount)
        slot(row.model_id)["epochs_claimed"] += 1
    owned = list(conn.scalars(select(s.models.c.model_id).where(s.models.c.owner == a)))
    for model_id in owned:
        for split in _by(conn, s.epoch_splits, "model_id", model_id):
            slot(model_id)["owner_share"] += int(split["owner_amount"])
    mc, c = s.model_contributions.c, s.contributions.c
    lineage = conn.execute(select(mc.model_id, func.count()).join(s.contributions, mc.contribution_id == c.contribution_id)
                           .where(c.contributor == a).group_by(mc.model_id)).all()
    rep = conn.execute(select(s.reputation).where(s.reputation.c.account == a)).mappings().one_or_none()
    total = sum(v["claimed"] + v["owner_share"] for v in per_model.values())
    return {
        "account": a,
        "total_received": str(total),
        "models": [{"model_id": m, **{k: str(v) for k, v in vals.items()}} for m, vals in sorted(per_model.items())],
        "contributions_in_lineages": {int(m): int(n) for m, n in lineage},
        "owned_models": owned,
        "reputation": dict(rep) if rep else None,
    }


def agent_detail(conn: Connection, agent_id: int) -> dict[str, Any] | None:
    """One agent: its row, operator/URI/owner histories, latest metadata per key, royalty totals."""
    row = conn.execute(select(s.agents).where(s.agents.c.agent_id == agent_id)).mappings().one_or_none()
    if row is None:
        return None

    def history(table: Table, *columns: str) -> list[dict[str, Any]]:
        cols = [table.c.block_number, table.c.log_index, *(table.c[c] for c in columns), table.c.tx_hash]
        query = select(*cols).where(table.c.agent_id == agent_id).order_by(table.c.block_number, table.c.log_index)
        return [dict(r) for r in conn.execute(query).mappings()]

    metadata: dict[str, str] = {}
    for entry in history(s.agent_metadata, "key", "value"):
        metadata[entry["key"]] = entry["value"]  # in log order: the last write wins
    r = s.royalty_routings.c
    per_model: dict[int, dict[str, int]] = {}
    for model_id, amount in conn.execute(select(r.model_id, r.amount).where(r.agent_id == agent_id)):
        slot = per_model.setdefault(model_id, {"amount": 0, "routings": 0})
        slot["amount"] += int(amount)
        slot["routings"] += 1
    return {
        **jsonable(row),
        "operator_history": history(s.agent_operators, "previous_operator", "new_operator"),
        "uri_history": history(s.agent_uris, "uri", "cid", "updated_by"),
        "owner_history": history(s.agent_transfers, "from_address", "to_address"),
        "metadata": metadata,
        "royalties": {
            "total": str(sum(v["amount"] for v in per_model.values())),
            "routings": sum(v["routings"] for v in per_model.values()),
            "per_model": [{"model_id": m, "amount": str(v["amount"]), "routings": v["routings"]}
                          for m, v in sorted(per_model.items())],
        },
    }

"""The query API: an APIRouter the backend mounts, or a whole app (`create_app`) run alone."""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, FastAPI, HTTPException, Query
from sqlalchemy import Engine, select

from provenant_indexer import queries as q
from provenant_indexer import schema as s
from provenant_indexer.indexer import IndexerStatus
from provenant_indexer.rpc import JsonRpc, RpcError

Limit = Query(50, ge=1, le=500, description="rows per page")
Offset = Query(0, ge=0, description="rows to skip")


def _page(p: q.Page) -> dict[str, Any]:
    return {"items": p.items, "total": p.total, "limit": p.limit, "offset": p.offset}


def create_router(engine: Engine, *, status: IndexerStatus | None = None,
                  chain_head: Callable[[], int] | None = None) -> APIRouter:
    """Endpoints over the index in `engine`; `status` (the running indexer's) and `chain_head`
    feed /health when the indexer runs in the same process."""
    router = APIRouter(tags=["index"])

    @router.get("/datanets")
    def datanets(owner: str | None = None, limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
        query = select(s.datanets)
        if owner:
            query = query.where(s.datanets.c.owner == owner.lower())
        with engine.connect() as conn:
            return _page(q.page(conn, query, [s.datanets.c.datanet_id], limit, offset))

    @router.get("/datanets/{datanet_id}")
    def datanet(datanet_id: int) -> dict[str, Any]:
        with engine.connect() as conn:
            found = q.datanet_detail(conn, datanet_id)
        if found is None:
            raise HTTPException(404, f"no Datanet {datanet_id} in the index")
        return found

    @router.get("/contributions")
    def contributions(datanet_id: int | None = None, contributor: str | None = None,
                      status: str | None = Query(None, pattern="^(pending|approved|rejected|withdrawn)$"),
                      model_id: int | None = None, limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
        c = s.contributions.c
        query = select(s.contributions)
        if datanet_id is not None:
            query = query.where(c.datanet_id == datanet_id)
        if contributor:
            query = query.where(c.contributor == contributor.lower())
        if status:
            query = query.where(c.status == status)
        if model_id is not None:
            query = query.join(s.model_contributions, s.model_contributions.c.contribution_id == c.contribution_id
                               ).where(s.model_contributions.c.model_id == model_id)
        with engine.connect() as conn:
            return _page(q.page(conn, query, [c.contribution_id], limit, offset))

    @router.get("/contributions/{contribution_id}")
    def contribution(contribution_id: int) -> dict[str, Any]:
        c, h = s.contributions.c, s.contribution_status.c
        with engine.connect() as conn:
            row = conn.execute(select(s.contributions).where(c.contribution_id == contribution_id)).mappings().first()
            if row is None:
                raise HTTPException(404, f"no contribution {contribution_id} in the index")
            history = conn.execute(select(h.block_number, h.log_index, h.status, h.actor, h.reason, h.slashed)
                                   .where(h.contribution_id == contribution_id)
                                   .order_by(h.block_number, h.log_index)).mappings()
            return {**q.jsonable(row), "history": [dict(x) for x in history]}

    @router.get("/models")
    def models(owner: str | None = None, datanet_id: int | None = None, name: str | None = None,
               limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
        m = s.models.c
        query = select(s.models)
        if owner:
            query = query.where(m.owner == owner.lower())
        if name:
            query = query.where(m.name == name)
        if datanet_id is not None:
            query = query.where(m.model_id.in_(select(s.model_datanets.c.model_id)
                                               .where(s.model_datanets.c.datanet_id == datanet_id)))
        with engine.connect() as conn:
            return _page(q.page(conn, query, [m.model_id], limit, offset))

    @router.get("/models/{model_id}")
    def model(model_id: int) -> dict[str, Any]:
        with engine.connect() as conn:
            found = q.model_detail(conn, model_id)
        if found is None:
            raise HTTPException(404, f"no model {model_id} in the index")
        return found

    @router.get("/accounts/{address}/earnings")
    def earnings(address: str) -> dict[str, Any]:
        if not (address.startswith("0x") and len(address) == 42):
            raise HTTPException(422, "address must be 0x followed by 40 hex digits")
        with engine.connect() as conn:
            return q.account_earnings(conn, address)

    @router.get("/health")
    def health() -> dict[str, Any]:
        with engine.connect() as conn:
            cp = conn.execute(select(s.checkpoint)).mappings().one_or_none()
            last = conn.execute(select(s.reorgs).order_by(s.reorgs.c.id.desc()).limit(1)).mappings().first()
        indexed = int(cp["head_block"]) if cp else None
        head, head_error = None, None
        if chain_head is not None:
            try:
                head = chain_head()
            except (RpcError, OSError) as exc:
                head_error = str(exc)
        elif status is not None:
            head = status.chain_head
        body: dict[str, Any] = {
            "indexed_head": indexed, "chain_head": head,
            "lag": head - indexed if head is not None and indexed is not None else None,
            "last_reorg": dict(last) if last else None,
            "chain_error": head_error,
        }
        if status is not None:
            body.update(stalled=status.stalled, halted=status.halted, last_error=status.last_error,
                        polls_without_progress=status.polls_without_progress, range_size=status.range_size,
                        status_age_s=round(time.time() - status.updated_at, 3))
        body["ok"] = bool(cp) and not body.get("halted") and not body.get("stalled")
        return body

    return router


def create_app(engine: Engine, *, status: IndexerStatus | None = None, rpc_url: str | None = None) -> FastAPI:
    app = FastAPI(title="Provenant index", version="1")
    head = None
    if rpc_url:
        rpc = JsonRpc(rpc_url, timeout=5.0)
        head = rpc.block_number
    app.include_router(create_router(engine, status=status, chain_head=head))
    return app

"""The query API: an APIRouter the backend mounts, or a whole app (`create_app`) run alone.

Mounting it in another FastAPI app (the backend's):

    from provenant_indexer import open_index
    from provenant_indexer.api import create_router

    engine = open_index("postgresql://...")            # or a SQLite path; migrates to the newest schema
    app.include_router(create_router(engine, results=store.get), prefix="/index")

Every endpoint only reads the index database (plain sync handlers: FastAPI runs them in its
thread pool), so the router can be mounted in as many processes as needed beside one running
indexer. Where each figure comes from:

- datanets, contributions (with their status history), reputation, models and lineage, charges,
  epochs, claims, and every per-model money figure: the contracts' events, as indexed;
- agents (with operator history), royalty routings, x402 charges and sweeps: api_agents.py;
- earnings per Datanet (`/accounts/{address}/earnings` -> `per_datanet`): the epochs' public
  results documents, read by the CID each `EpochSettled` event names through `results` (a
  content store's `get`), joined with the indexed contributions; see earnings.py. Without
  `results` that part says it is unavailable; everything else still answers.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import APIRouter, FastAPI, HTTPException, Path, Query
from sqlalchemy import Engine, select

from provenant_indexer import queries as q
from provenant_indexer.api_agents import add_agent_routes
from provenant_indexer import schema as s
from provenant_indexer.earnings import ResultsDocuments, ResultsLoader, per_datanet
from provenant_indexer.indexer import IndexerStatus
from provenant_indexer.rpc import JsonRpc, RpcError

def _limit() -> Any:
    return Query(50, ge=1, le=500, description="rows per page")


def _offset() -> Any:
    return Query(0, ge=0, le=2**63 - 1, description="rows to skip")


Limit = _limit()
# Ids are uint256 on chain but never near 2^63 in practice; the bound keeps a hostile id from
# overflowing SQLite's INTEGER (a 500) and answers 422 instead.
MAX_ID = 2**63 - 1


def _id_path() -> Any:  # a new Param per use: FastAPI binds a Param object to one parameter name
    return Path(ge=0, le=MAX_ID)


def _id_query() -> Any:
    return Query(None, ge=0, le=MAX_ID)
Offset = Query(0, ge=0, le=2**63 - 1, description="rows to skip")


def _page(p: q.Page) -> dict[str, Any]:
    return {"items": p.items, "total": p.total, "limit": p.limit, "offset": p.offset}


def create_router(engine: Engine, *, status: IndexerStatus | None = None,
                  chain_head: Callable[[], int] | None = None, results: ResultsLoader | None = None) -> APIRouter:
    """The index's read endpoints over `engine` (open it with `open_index`, which migrates).

    - `status`: the running indexer's IndexerStatus, when it runs in the same process; /health
      then adds stall, halt and last-error reports.
    - `chain_head`: a callable giving the chain's head block (e.g. `JsonRpc(url).block_number`),
      for /health's lag; without it /health uses `status.chain_head`.
    - `results`: CID -> bytes (e.g. `provenant.store.open_store(...).get`), to read the epochs'
      results documents for earnings per Datanet; documents are cached (they never change).
    """
    router = APIRouter(tags=["index"])
    documents = ResultsDocuments(results) if results is not None else None

    @router.get("/datanets")
    def datanets(owner: str | None = None, limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
        query = select(s.datanets)
        if owner:
            query = query.where(s.datanets.c.owner == owner.lower())
        with engine.connect() as conn:
            return _page(q.page(conn, query, [s.datanets.c.datanet_id], limit, offset))

    @router.get("/datanets/{datanet_id}")
    def datanet(datanet_id: int = _id_path()) -> dict[str, Any]:
        with engine.connect() as conn:
            found = q.datanet_detail(conn, datanet_id)
        if found is None:
            raise HTTPException(404, f"no Datanet {datanet_id} in the index")
        return found

    @router.get("/contributions")
    def contributions(datanet_id: int | None = _id_query(), contributor: str | None = None,
                      status: str | None = Query(None, pattern="^(pending|approved|rejected|withdrawn)$"),
                      model_id: int | None = _id_query(), limit: int = Limit, offset: int = Offset) -> dict[str, Any]:
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
    def contribution(contribution_id: int = _id_path()) -> dict[str, Any]:
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
    def models(owner: str | None = None, datanet_id: int | None = _id_query(), name: str | None = None,
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
    def model(model_id: int = _id_path()) -> dict[str, Any]:
        with engine.connect() as conn:
            found = q.model_detail(conn, model_id)
        if found is None:
            raise HTTPException(404, f"no model {model_id} in the index")
        return found

    @router.get("/accounts/{address}/earnings", description=(
        "An account's earnings. `models` (claimed per model, owner shares) and `contributions_in_lineages` come "
        "from the contracts' events. `per_datanet` (as contributor and as curator, per model and Datanet) comes "
        "from each settled epoch's public results document, read by the CID its EpochSettled event names from "
        "the content store the API was given; `available` is false, with the reason, when that store is not "
        "configured or lacks an epoch's document (listed in `unavailable_epochs`)."))
    def earnings(address: str = Path(pattern=r"^0x[0-9a-fA-F]{40}$",
                                      description="0x followed by 40 hex digits")) -> dict[str, Any]:
        with engine.connect() as conn:
            body = q.account_earnings(conn, address)
            body["per_datanet"] = per_datanet(conn, address, documents)
        return body

    add_agent_routes(router, engine, id_path=_id_path, id_query=_id_query, limit=_limit, offset=_offset)

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


def create_app(engine: Engine, *, status: IndexerStatus | None = None, rpc_url: str | None = None,
               results: ResultsLoader | None = None) -> FastAPI:
    """The router as a whole app (`python -m provenant_indexer serve`)."""
    app = FastAPI(title="Provenant index", version="1")
    head = None
    if rpc_url:
        rpc = JsonRpc(rpc_url, timeout=5.0)
        head = rpc.block_number
    app.include_router(create_router(engine, status=status, chain_head=head, results=results))
    return app

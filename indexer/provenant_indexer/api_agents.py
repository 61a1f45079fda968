"""The agent and payment-path endpoints of the query API: ERC-8004 agents (with their operator
history), royalty routings and x402 charges and sweeps, per model and per agent.

Mounted by api.create_router on the same router as the rest; same conventions: `limit`/`offset`
pages with `total`, ids bounded to 0..2^63-1 (422 beyond), addresses matched lowercase.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import Engine, select

from provenant_indexer import queries as q
from provenant_indexer import schema as s

HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


def _address() -> Any:  # an address filter: anything else is a 422, never a query (NUL bytes: a 500 on PostgreSQL)
    return Query(None, pattern=ADDRESS_PATTERN, description="0x followed by 40 hex digits (any case)")


def add_agent_routes(router: APIRouter, engine: Engine, *, id_path: Any, id_query: Any, limit: Any,
                     offset: Any) -> None:
    """Register the routes on `router`. The Param factories come from api.py so every id and page
    parameter is bounded the same way."""

    def page(query: Any, order: list[Any], lim: int, off: int) -> dict[str, Any]:
        with engine.connect() as conn:
            p = q.page(conn, query, order, lim, off)
        return {"items": p.items, "total": p.total, "limit": p.limit, "offset": p.offset}

    @router.get("/agents", description="ERC-8004 agents (AgentRegistry), by id; owner and operator are current.")
    def agents(owner: str | None = _address(), operator: str | None = _address(), limit: int = limit(),
               offset: int = offset()) -> dict[str, Any]:
        a = s.agents.c
        query = select(s.agents)
        if owner:
            query = query.where(a.owner == owner.lower())
        if operator:
            query = query.where(a.operator == operator.lower())
        return page(query, [a.agent_id], limit, offset)

    @router.get("/agents/{agent_id}", description=(
        "One agent: owner, operator, registration URI and CID, its operator, URI and owner histories, its "
        "latest on-chain metadata per key (0x-hex values), and the royalties it routed per model."))
    def agent(agent_id: int = id_path()) -> dict[str, Any]:
        with engine.connect() as conn:
            found = q.agent_detail(conn, agent_id)
        if found is None:
            raise HTTPException(404, f"no agent {agent_id} in the index")
        return found

    @router.get("/royalties", description=(
        "Royalty routings (RoyaltyRouter.RoyaltyRouted): one row per (action, model); each is also the "
        "model's FeesPaid with the same seq, counted once in the model's fees_in."))
    def royalties(agent_id: int | None = id_query(), model_id: int | None = id_query(),
                  action_hash: str | None = Query(None, pattern=HASH_PATTERN), limit: int = limit(),
                  offset: int = offset()) -> dict[str, Any]:
        r = s.royalty_routings.c
        query = select(s.royalty_routings)
        if agent_id is not None:
            query = query.where(r.agent_id == agent_id)
        if model_id is not None:
            query = query.where(r.model_id == model_id)
        if action_hash:
            query = query.where(r.action_hash == action_hash.lower())
        return page(query, [r.block_number, r.log_index], limit, offset)

    @router.get("/x402/charges", description=(
        "x402 payments settled into models' fees (X402Vaults.X402Charged); each is also the model's FeesPaid "
        "with the same seq, counted once in fees_in."))
    def x402_charges(model_id: int | None = id_query(), payer: str | None = _address(), limit: int = limit(),
                     offset: int = offset()) -> dict[str, Any]:
        x = s.x402_charges.c
        query = select(s.x402_charges)
        if model_id is not None:
            query = query.where(x.model_id == model_id)
        if payer:
            query = query.where(x.payer == payer.lower())
        return page(query, [x.block_number, x.log_index], limit, offset)

    @router.get("/x402/sweeps", description="Vault sweeps (X402Vaults.VaultSwept): tokens sent to a model's vault "
                "outside chargeX402, credited to its fees (also a FeesPaid, counted once).")
    def x402_sweeps(model_id: int | None = id_query(), limit: int = limit(), offset: int = offset()) -> dict[str, Any]:
        v = s.vault_sweeps.c
        query = select(s.vault_sweeps)
        if model_id is not None:
            query = query.where(v.model_id == model_id)
        return page(query, [v.block_number, v.log_index], limit, offset)

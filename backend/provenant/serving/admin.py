"""Admin endpoints: load, unload and pin adapters. Every call needs the admin bearer token.

The token comes from ServingSettings (env PROVENANT_ADMIN_TOKEN); it is compared in constant time
and never logged or echoed. Without a configured token the admin API answers 403 to everyone.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from provenant.serving.lora import CAUSAL_TASK
from provenant.serving.service import ServingService, WrongTask


def create_admin_router(service: ServingService) -> APIRouter:
    def authorize(request: Request) -> None:
        token = service.settings.admin_token
        if not token:
            raise HTTPException(403, "admin API disabled: start the server with PROVENANT_ADMIN_TOKEN set")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise HTTPException(401, "admin bearer token required", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix="/v1/admin", dependencies=[Depends(authorize)])

    def _causal(model: str) -> int:
        served = service.model(model)
        if served.task != CAUSAL_TASK:
            raise WrongTask(f"model {served.record.name!r} is a {served.task} model; only LoRA LM adapters are cached")
        return served.model_id

    @router.get("/adapters")
    def adapters() -> dict[str, Any]:
        stats = service.adapters.stats
        return {"budget_bytes": service.adapters.budget_bytes, "resident_bytes": service.adapters.resident_bytes,
                "adapters": service.adapters.snapshot(), "cold_loads": stats.cold_loads, "hits": stats.hits,
                "evictions": len(stats.evictions)}

    @router.post("/adapters/{model}/load")
    async def load(model: str, pin: bool = False) -> dict[str, Any]:
        model_id = await run_in_threadpool(_causal, model)
        weights = await run_in_threadpool(service.adapters.load, model_id, pin)
        return {"model_id": model_id, "loaded": True, "pinned": pin, "bytes": weights.nbytes}

    @router.post("/adapters/{model}/unload")
    async def unload(model: str) -> dict[str, Any]:
        model_id = await run_in_threadpool(_causal, model)
        return {"model_id": model_id, "unloaded": service.adapters.unload(model_id)}

    @router.post("/adapters/{model}/pin")
    async def pin(model: str) -> dict[str, Any]:
        model_id = await run_in_threadpool(_causal, model)
        await run_in_threadpool(service.adapters.load, model_id, True)
        return {"model_id": model_id, "pinned": True}

    @router.post("/adapters/{model}/unpin")
    async def unpin(model: str) -> dict[str, Any]:
        model_id = await run_in_threadpool(_causal, model)
        try:
            service.adapters.pin(model_id, False)
        except KeyError:
            raise HTTPException(404, f"adapter of model {model_id} is not loaded") from None
        return {"model_id": model_id, "pinned": False}

    return router

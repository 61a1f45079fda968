"""HTTP API of the serving layer (FastAPI): OpenAI-compatible, every answer with a signed receipt.

Consumer calls are authenticated by their payment (an EIP-712 voucher signed by the consumer);
admin calls by the admin bearer token. Routes: /v1/models (vLLM style), /v1/completions,
/v1/chat/completions (SSE when stream=true), /v1/classifications (classifier models),
/v1/receipts/{call_id}, /v1/admin/adapters/... (see admin.py).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from provenant.api.auth import SiweSessions, create_auth_router
from provenant.factory.base_models import TINY_LLAMA
from provenant.serving.admin import create_admin_router
from provenant.serving.api_keys import bearer_key
from provenant.serving.errors import install_error_handlers
from provenant.serving.models import ModelRecord
from provenant.payments.vouchers import PaymentRequired
from provenant.serving import x402 as x402_http
from provenant.serving.openai_api import create_router, payment_required_or_raise
from provenant.serving.payment_header import PaymentBody
from provenant.serving.service import ServingService

MAX_INPUT_CHARS = 4_000
BASE_MODELS = {TINY_LLAMA: "causal-lm", "minilm": "classification"}


class ClassificationRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    payment: PaymentBody | None = None  # a voucher; or pay with x402 (PAYMENT-SIGNATURE header)


def _model_entries(service: ServingService, records: dict[int, ModelRecord]) -> list[dict[str, Any]]:
    """Base models, then every registered model (ids 1..modelCount), read from the chain each time so
    that models registered after start-up are listed (and servable) without a restart."""
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {"id": name, "object": "model", "created": created, "owned_by": "provenant", "root": name, "parent": None,
         "task": task} for name, task in BASE_MODELS.items()]
    count = int(service.client.call(service.contracts.models.functions.modelCount()))
    for model_id in range(1, count + 1):
        if model_id not in records:
            records[model_id] = ModelRecord.fetch(service.client, service.contracts, model_id)
        r = records[model_id]
        data.append({"id": r.name, "object": "model", "created": created, "owned_by": r.owner, "root": r.base_model,
                     "parent": r.base_model, "model_id": model_id, "parent_model_id": r.parent_id or None,
                     "price_per_call": str(r.price_per_call),
                     "lineage_root": r.lineage_root, "adapter_hash": r.adapter_hash,
                     "served_here": r.server.lower() == service.server.address.lower()})
    return data


def create_app(service: ServingService, sessions: SiweSessions | None = None) -> FastAPI:
    """The serving API on its own (`provenant serve`): its routes and its error handlers. With
    SIWE `sessions`, also sign-in and the API-key routes (minting needs a signed-in consumer)."""
    app = FastAPI(title="Provenant serving", version="0.2.0")
    install_error_handlers(app, service.settings.max_body_bytes)
    app.include_router(create_serving_router(service, sessions))
    if sessions is not None:  # sign-in here too: the backend app mounts its own
        app.include_router(create_auth_router(sessions))
    return app


def create_serving_router(service: ServingService, sessions: SiweSessions | None = None) -> APIRouter:
    """Every serving route, for this module's app or the backend's (`provenant app --serve`)."""
    app = APIRouter()
    app.include_router(create_router(service))
    app.include_router(create_admin_router(service))
    if sessions is not None:
        from provenant.serving.api_keys_router import create_api_keys_router

        app.include_router(create_api_keys_router(service, sessions))
    # Records are cached per id for the listing (lineage fields are immutable on chain); new ids
    # are read as they appear.
    records: dict[int, ModelRecord] = {}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": await run_in_threadpool(_model_entries, service, records)}

    @app.post("/v1/classifications")
    async def classify(http: Request, request: ClassificationRequest) -> Any:
        try:
            key = bearer_key(http.headers.get("authorization"))
            key_id = service.api_keys.authenticate(key) if key is not None else None  # 401: unknown or revoked
            x402 = x402_http.parse_signature(http) if key_id is None else None
            if key_id is None and x402 is None and request.payment is None:
                raise PaymentRequired("payment required: send `payment` (a signed voucher), an x402 "
                                      "PAYMENT-SIGNATURE header, or an API key as the bearer token")
            voucher, signature = request.payment.parsed() if key_id is None and x402 is None and request.payment \
                else (None, None)
            result = await run_in_threadpool(service.classify, request.model, request.input, voucher, signature,
                                             x402, key_id)
        except PaymentRequired as exc:
            return await payment_required_or_raise(service, http, request.model, exc)
        return JSONResponse({
            "id": result.receipt.call_id,
            "object": "classification",
            "model": result.receipt.model_name,
            "label": result.prediction.label,
            "probabilities": result.prediction.probabilities,
            "provenance": result.receipt.to_json(),
        }, headers=x402_http.payment_response_headers(result.settlement))

    @app.get("/v1/receipts/{call_id}")
    def get_receipt(call_id: str) -> dict[str, Any]:
        try:
            return service.receipt(call_id).to_json()
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=str(exc.args[0])) from None

    return app

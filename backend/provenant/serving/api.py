"""HTTP API of the serving layer (FastAPI). A call is authenticated by its payment voucher.

Later issues add the OpenAI-compatible endpoints; the classification endpoint and the
receipt lookup here are what the foundation's thread needs.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from provenant.payments.vouchers import PaymentRequired, Voucher
from provenant.serving.service import ServingService, UnknownModel

MAX_INPUT_CHARS = 4_000


class VoucherBody(BaseModel):
    consumer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    model_id: int = Field(ge=1)
    cumulative_amount: str = Field(pattern=r"^[0-9]{1,78}$")
    deadline: int = Field(ge=0)


class PaymentBody(BaseModel):
    voucher: VoucherBody
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class ClassificationRequest(BaseModel):
    model: str = Field(min_length=1, max_length=200)
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    payment: PaymentBody


def create_app(service: ServingService) -> FastAPI:
    app = FastAPI(title="Provenant serving", version="0.1.0")

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        data = [
            {
                "id": m.record.name,
                "object": "model",
                "model_id": m.model_id,
                "parent": m.record.base_model,
                "owned_by": m.record.owner,
                "price_per_call": str(m.record.price_per_call),
                "lineage_root": m.record.lineage_root,
            }
            for m in service.loaded()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/classifications")
    def classify(request: ClassificationRequest) -> dict[str, Any]:
        v = request.payment.voucher
        voucher = Voucher(consumer=v.consumer, model_id=v.model_id,
                          cumulative_amount=int(v.cumulative_amount), deadline=v.deadline)
        try:
            result = service.classify(request.model, request.input, voucher,
                                      bytes.fromhex(request.payment.signature[2:]))
        except UnknownModel as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except PaymentRequired as exc:
            raise HTTPException(status_code=402, detail=str(exc)) from None
        return {
            "id": result.receipt.call_id,
            "object": "classification",
            "model": result.receipt.model_name,
            "label": result.prediction.label,
            "probabilities": result.prediction.probabilities,
            "provenance": result.receipt.to_json(),
        }

    @app.get("/v1/receipts/{call_id}")
    def get_receipt(call_id: str) -> dict[str, Any]:
        try:
            return service.receipt(call_id).to_json()
        except KeyError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None

    return app

"""HTTP routes of API keys: mint (SIWE session), list, audit the answered calls, revoke.

    POST   /v1/api-keys             {models, cap, expires_at, voucher, signature} (or `vouchers`: one
                                    {voucher, signature} per model) -> the key, shown once
    GET    /v1/api-keys             the session's keys with their usage
    GET    /v1/api-keys/{id}/calls  every answered call with its fee, cumulative position, charge
                                    sequence number and signed receipt
    DELETE /v1/api-keys/{id}        revoke; answered calls not yet charged are charged at once

The audit and revocation accept the owner's SIWE session or the key itself as the bearer token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, Field

from provenant.api.auth import Session, SiweSessions, session_dependency
from provenant.payments.key_ledger import KeyAccount
from provenant.serving.api_keys import ApiKeyError, MAX_MODELS, bearer_key
from provenant.serving.payment_header import PaymentBody, VoucherBody
from provenant.serving.service import ServingService, UnknownModel


class CreateKeyIn(BaseModel):
    models: list[str] = Field(min_length=1, max_length=MAX_MODELS, description="model names or on-chain ids")
    cap: str = Field(pattern=r"^[0-9]{1,78}$", description="spending cap in token wei, all models together")
    expires_at: float = Field(gt=0, description="unix seconds")
    voucher: VoucherBody | None = None
    signature: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{130}$")
    vouchers: list[PaymentBody] | None = Field(default=None, max_length=MAX_MODELS)

    def payments(self) -> list[PaymentBody]:
        if self.vouchers is not None:
            return self.vouchers
        if self.voucher is None or self.signature is None:
            raise ApiKeyError(400, "send `voucher` and `signature` (or `vouchers`, one per model): the consumer's "
                                   "capped voucher, cumulative_amount = spent on chain + cap")
        return [PaymentBody(voucher=self.voucher, signature=self.signature)]


def _key_json(account: KeyAccount) -> dict[str, Any]:
    return {"id": account.key_id, "consumer": account.consumer, "models": sorted(account.channels),
            "expires_at": account.expires_at, **account.usage()}


def create_api_keys_router(service: ServingService, sessions: SiweSessions) -> APIRouter:
    router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])
    require_session = session_dependency(sessions)
    book = service.api_keys

    def owned(key_id: str, authorization: str | None) -> KeyAccount:
        """The key, if the bearer is its owner's session or the key itself; 404 otherwise (a key
        id names nothing to anyone else)."""
        key = bearer_key(authorization)
        if key is not None:
            allowed = book.key_id_of(key) == key_id
        else:
            session = require_session(authorization)
            allowed = key_id in {a.key_id for a in book.keys_of(session.address)}
        if not allowed:
            raise ApiKeyError(404, f"no API key {key_id} of yours")
        return book.ledger.account(key_id)

    @router.post("", status_code=201)
    def create(body: CreateKeyIn, session: Session = Depends(require_session)) -> dict[str, Any]:
        """Mint a key for the signed-in consumer; the key is in this answer only."""
        try:
            model_ids = [service.model(ref).model_id for ref in body.models]
        except UnknownModel as exc:
            raise ApiKeyError(404, str(exc)) from None
        payments = [p.parsed() for p in body.payments()]
        key, account = book.create(session.address, model_ids, int(body.cap), body.expires_at, payments)
        return {**_key_json(account), "key": key}

    @router.get("")
    def list_keys(session: Session = Depends(require_session)) -> dict[str, Any]:
        return {"object": "list", "data": [_key_json(a) for a in book.keys_of(session.address)]}

    @router.get("/{key_id}/calls")
    def calls(key_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        account = owned(key_id, authorization)
        return {"object": "list", "key": _key_json(account), "data": book.calls(key_id)}

    @router.delete("/{key_id}")
    def revoke(key_id: str, authorization: str | None = Header(default=None)) -> dict[str, Any]:
        account = owned(key_id, authorization)
        book.revoke(key_id)
        charged = [batch.seq for m in sorted(account.channels) if (batch := book.flush(m)) is not None]
        return {**_key_json(account), "charge_seqs": charged}

    return router


__all__ = ["create_api_keys_router"]

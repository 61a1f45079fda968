"""x402 v2 over HTTP for the paid serving endpoints: the 402 answer and the payment headers.

An unpaid call (no voucher, no payment) or one whose payment is refused gets HTTP 402 with the
`PAYMENT-REQUIRED` header (base64 of the x402 `PaymentRequired` JSON: `accepts` holds the model's
`exact` requirements, `error` says what was wrong) and the same JSON in the body next to the usual
OpenAI-style `error` object. A call paid with `PAYMENT-SIGNATURE` (base64 of the x402
`PaymentPayload`, as the official `x402` client sends it) is answered with `PAYMENT-RESPONSE`
(base64 of the `SettleResponse`). Encoding and decoding use the `x402` package's own schemas and
helpers, so what we send is exactly what its clients parse.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from x402.http.constants import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, PAYMENT_SIGNATURE_HEADER
from x402.http.utils import (
    decode_payment_signature_header, encode_payment_required_header, encode_payment_response_header,
)
from x402.schemas import PaymentPayload, PaymentRequired, SettleResponse

from provenant.payments.vouchers import PaymentRequired as PaymentRequiredError
from provenant.payments.x402_facilitator import Requirements, Settlement, X402Invalid

MAX_HEADER_CHARS = 8_000
EXPOSE = ", ".join([PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER])

__all__ = ["PAYMENT_REQUIRED_HEADER", "PAYMENT_RESPONSE_HEADER", "PAYMENT_SIGNATURE_HEADER", "parse_signature",
           "payment_required_response", "payment_response_headers"]


def parse_signature(request: Request) -> dict[str, Any] | None:
    """The decoded PAYMENT-SIGNATURE payload (camelCase JSON), None without the header."""
    value = request.headers.get(PAYMENT_SIGNATURE_HEADER)
    if value is None:
        return None
    if len(value) > MAX_HEADER_CHARS:
        raise X402Invalid("invalid_payload", f"{PAYMENT_SIGNATURE_HEADER} header is over {MAX_HEADER_CHARS} characters")
    try:
        payload = decode_payment_signature_header(value.strip())
    except (ValueError, ValidationError, UnicodeDecodeError):
        raise X402Invalid("invalid_payload", f"{PAYMENT_SIGNATURE_HEADER} is not a base64 x402 PaymentPayload") \
            from None
    if not isinstance(payload, PaymentPayload):
        raise X402Invalid("invalid_x402_version", "only x402 v2 payments are accepted")
    return payload.model_dump(by_alias=True)


def payment_required(req: Requirements, error: str, resource_url: str) -> PaymentRequired:
    return PaymentRequired.model_validate({
        "x402Version": 2, "error": error,
        "resource": {"url": resource_url, "description": f"one call of model {req.model_id}",
                     "mimeType": "application/json"},
        "accepts": [req.to_json()],
    })


def payment_required_response(req: Requirements, exc: PaymentRequiredError, resource_url: str) -> JSONResponse:
    """HTTP 402 in the x402 v2 format, with the OpenAI-style error object in the body."""
    code = exc.reason if isinstance(exc, X402Invalid) else "payment_required"
    required = payment_required(req, str(exc), resource_url)
    body = {"error": {"message": str(exc), "type": "payment_required", "code": code},
            **required.model_dump(by_alias=True, exclude_none=True, exclude={"error"})}
    headers = {PAYMENT_REQUIRED_HEADER: encode_payment_required_header(required),
               "Access-Control-Expose-Headers": EXPOSE}
    return JSONResponse(body, status_code=402, headers=headers)


def payment_response_headers(settlement: Settlement | None) -> dict[str, str]:
    if settlement is None:
        return {}
    return {PAYMENT_RESPONSE_HEADER: encode_payment_response_header(
                SettleResponse.model_validate(settlement.response_json())),
            "Access-Control-Expose-Headers": EXPOSE}

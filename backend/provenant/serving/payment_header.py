"""The voucher that pays a call, carried in one HTTP header so unchanged OpenAI clients can send it.

`X-Provenant-Voucher: <base64url(JSON {"voucher": {...}, "signature": "0x..."})>` (plain JSON is
accepted too). Clients set it per call with `extra_headers=payment_header(voucher, signature)`; the
cumulative amount rises with every call, so it cannot be a fixed default header.
"""

from __future__ import annotations

import base64
import json

from pydantic import BaseModel, Field, ValidationError

from provenant.payments.vouchers import PaymentRequired, Voucher

HEADER = "X-Provenant-Voucher"
MAX_HEADER_CHARS = 2_000


class VoucherBody(BaseModel):
    consumer: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    model_id: int = Field(ge=1)
    cumulative_amount: str = Field(pattern=r"^[0-9]{1,78}$")
    deadline: int = Field(ge=0, lt=2**64)


class PaymentBody(BaseModel):
    voucher: VoucherBody
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")

    def parsed(self) -> tuple[Voucher, bytes]:
        v = self.voucher
        return (Voucher(consumer=v.consumer, model_id=v.model_id, cumulative_amount=int(v.cumulative_amount),
                        deadline=v.deadline), bytes.fromhex(self.signature[2:]))


def payment_header(voucher: Voucher, signature: bytes) -> dict[str, str]:
    raw = json.dumps({"voucher": voucher.to_json(), "signature": "0x" + signature.hex()}, separators=(",", ":"))
    return {HEADER: base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")}


def parse_payment_header(value: str | None) -> tuple[Voucher, bytes]:
    """The voucher and signature in the header, or PaymentRequired saying what is wrong (HTTP 402)."""
    if not value:
        raise PaymentRequired(f"payment required: send a signed cumulative voucher for this model in the "
                              f"{HEADER} header (deposit into the escrow first)")
    if len(value) > MAX_HEADER_CHARS:
        raise PaymentRequired(f"{HEADER} header is too long")
    text = value.strip()
    try:
        if not text.startswith("{"):
            text = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8")
        return PaymentBody.model_validate(json.loads(text)).parsed()
    except (ValueError, ValidationError, UnicodeDecodeError):
        raise PaymentRequired(f"{HEADER} header is not a well-formed voucher "
                              f"({{voucher: {{consumer, model_id, cumulative_amount, deadline}}, signature}})") from None

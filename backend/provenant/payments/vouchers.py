"""Cumulative payment vouchers: the consumer signs, the server checks and batches charges.

A voucher says "the consumer has agreed to pay this model `cumulativeAmount` in total". Each
call raises it by the call's price; the server keeps only the latest voucher per consumer and
charges them on chain in one batch. The escrow never moves more than the latest signature says.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import escrow_domain, recover_typed, sign_typed


class PaymentRequired(Exception):
    """The call is not paid for; the message says why (HTTP 402)."""


@dataclass(frozen=True)
class Voucher:
    consumer: str
    model_id: int
    cumulative_amount: int
    deadline: int

    def message(self) -> dict[str, object]:
        return {
            "consumer": self.consumer,
            "modelId": self.model_id,
            "cumulativeAmount": self.cumulative_amount,
            "deadline": self.deadline,
        }

    def as_tuple(self) -> tuple[str, int, int, int]:
        return (self.consumer, self.model_id, self.cumulative_amount, self.deadline)

    def to_json(self) -> dict[str, object]:
        return {"consumer": self.consumer, "model_id": self.model_id,
                "cumulative_amount": str(self.cumulative_amount), "deadline": self.deadline}

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> "Voucher":
        return cls(consumer=str(raw["consumer"]), model_id=int(raw["model_id"]),  # type: ignore[arg-type]
                   cumulative_amount=int(raw["cumulative_amount"]), deadline=int(raw["deadline"]))  # type: ignore[arg-type]


def sign_voucher(consumer: LocalAccount, chain_id: int, escrow_address: str, voucher: Voucher) -> bytes:
    return sign_typed(consumer, escrow_domain(chain_id, escrow_address), "Voucher", voucher.message())


@dataclass
class _Pending:
    voucher: Voucher
    signature: bytes


class VoucherBook:
    """Server side: accepts vouchers that pay for exactly one more call and batches them."""

    def __init__(self, client: ChainClient, contracts: Contracts) -> None:
        self.client = client
        self.contracts = contracts
        self._latest: dict[tuple[int, str], _Pending] = {}
        self._lock = threading.Lock()
        # (model id, consumer) -> the id of an API key that spends for that consumer on that
        # model (serving/api_keys.py), whose capped voucher owns the spent total until it is
        # revoked or expired and charged: cumulative vouchers must wait for it.
        self.channel_holder: Callable[[int, str], str | None] | None = None

    def _expected_previous(self, model_id: int, consumer: str) -> int:
        pending = self._latest.get((model_id, consumer))
        if pending is not None:
            return pending.voucher.cumulative_amount
        return int(self.client.call(self.contracts.escrow.functions.spentOf(consumer, model_id)))

    def check(self, voucher: Voucher, signature: bytes, model_id: int, price: int) -> None:
        """Raise PaymentRequired unless the voucher pays exactly `price` more than the last one."""
        if voucher.model_id != model_id:
            raise PaymentRequired(f"voucher is for model {voucher.model_id}, not model {model_id}")
        domain = escrow_domain(self.client.chain_id, self.contracts.escrow.address)
        try:
            signer = recover_typed(domain, "Voucher", voucher.message(), signature)
        except Exception:  # noqa: BLE001 - any malformed signature is simply not a payment
            raise PaymentRequired("voucher signature is malformed") from None
        if signer.lower() != voucher.consumer.lower():
            raise PaymentRequired("voucher is not signed by its consumer")
        if voucher.deadline < self.client.latest_timestamp() + 60:
            raise PaymentRequired("voucher expires too soon (deadline must be at least 60 s ahead)")
        with self._lock:
            self._check_amounts(voucher, model_id, price)

    def accept(self, voucher: Voucher, signature: bytes, model_id: int, price: int) -> None:
        """Record a checked voucher once the call it pays for has been answered.

        The amounts are checked again under the lock, so two concurrent calls of one consumer
        cannot both be paid by vouchers for the same cumulative amount.
        """
        with self._lock:
            self._check_amounts(voucher, model_id, price)
            self._latest[(model_id, voucher.consumer)] = _Pending(voucher, signature)

    def _check_amounts(self, voucher: Voucher, model_id: int, price: int) -> None:
        holder = self.channel_holder(model_id, voucher.consumer) if self.channel_holder else None
        if holder is not None:  # checked again on accept: a key minted mid-call wins
            raise PaymentRequired(f"API key {holder} spends for {voucher.consumer} on model {model_id}: use it, "
                                  f"or revoke it and pay with vouchers once its calls are charged")
        previous = self._expected_previous(model_id, voucher.consumer)
        if voucher.cumulative_amount != previous + price:
            raise PaymentRequired(
                f"voucher must raise the cumulative amount from {previous} by the price {price}, "
                f"got {voucher.cumulative_amount}"
            )
        spent = int(self.client.call(self.contracts.escrow.functions.spentOf(voucher.consumer, model_id)))
        deposit = int(self.client.call(self.contracts.escrow.functions.depositOf(voucher.consumer, model_id)))
        if voucher.cumulative_amount - spent > deposit:
            raise PaymentRequired(
                f"deposit of {deposit} for model {model_id} does not cover {voucher.cumulative_amount - spent}"
            )

    def pending_keys(self) -> list[tuple[int, str]]:
        """(model id, consumer) of every voucher waiting to be charged."""
        with self._lock:
            return list(self._latest)

    def pending(self, model_id: int) -> int:
        return sum(1 for (m, _) in self._latest if m == model_id)

    def flush(self, server: LocalAccount, model_id: int) -> TxResult | None:
        """Charge every pending voucher of a model in one transaction."""
        with self._lock:
            batch = [(k, p) for k, p in self._latest.items() if k[0] == model_id]
            if not batch:
                return None
            fn = self.contracts.escrow.functions.charge(
                model_id, [p.voucher.as_tuple() for _, p in batch], [p.signature for _, p in batch]
            )
            result = self.client.transact(server, fn)
            for key, _ in batch:
                del self._latest[key]
            return result

"""Consumer side of voucher payments: one signed header per call, for any HTTP or OpenAI client.

    wallet = VoucherWallet(consumer, chain_id, escrow_address)
    client.chat.completions.create(..., extra_headers=wallet.pay(model_id, price))

The wallet keeps the cumulative amount per model (start it from the escrow's `spentOf` plus what
is pending with the server) and raises it by the price on every call.
"""

from __future__ import annotations

import threading
import time

from eth_account.signers.local import LocalAccount

from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.payment_header import payment_header


class VoucherWallet:
    def __init__(self, consumer: LocalAccount, chain_id: int, escrow_address: str, valid_for_s: int = 3600,
                 clock: "callable[[], int] | None" = None) -> None:  # type: ignore[valid-type]
        self.consumer, self.chain_id, self.escrow = consumer, chain_id, escrow_address
        self.valid_for_s = valid_for_s
        self.clock = clock or (lambda: int(time.time()))
        self.cumulative: dict[int, int] = {}
        self._lock = threading.Lock()

    def voucher(self, model_id: int, price: int) -> tuple[Voucher, bytes]:
        with self._lock:
            amount = self.cumulative.get(model_id, 0) + price
            self.cumulative[model_id] = amount
        voucher = Voucher(consumer=self.consumer.address, model_id=model_id, cumulative_amount=amount,
                          deadline=self.clock() + self.valid_for_s)
        return voucher, sign_voucher(self.consumer, self.chain_id, self.escrow, voucher)

    def pay(self, model_id: int, price: int) -> dict[str, str]:
        """Headers paying for one more call of `model_id` at `price`."""
        return payment_header(*self.voucher(model_id, price))

    def refund(self, model_id: int, price: int) -> None:
        """Undo the last raise after a call that was refused (the server accepted nothing)."""
        with self._lock:
            self.cumulative[model_id] = self.cumulative.get(model_id, 0) - price

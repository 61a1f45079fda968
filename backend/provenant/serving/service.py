"""The serving service: answer with a registered model, charge the call, sign a receipt."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.payments.vouchers import PaymentRequired, Voucher, VoucherBook
from provenant.serving.calllog import CallLog, CallRecord
from provenant.serving.engine import Prediction
from provenant.serving.models import ServedModel, load_served_model
from provenant.serving.receipts import Receipt, attribution_hash, salted_hash
from provenant.store.blockstore import ContentStore

TOP_K = 5


class UnknownModel(LookupError):
    pass


@dataclass(frozen=True)
class CallResult:
    prediction: Prediction
    receipt: Receipt


class ServingService:
    def __init__(
        self, client: ChainClient, contracts: Contracts, store: ContentStore, server: LocalAccount, call_log: CallLog
    ) -> None:
        client.check_signer(server)
        self.client = client
        self.contracts = contracts
        self.store = store
        self.server = server
        self.call_log = call_log
        self.vouchers = VoucherBook(client, contracts)
        self._models: dict[int, ServedModel] = {}
        self._receipts: dict[str, Receipt] = {}
        self._load_lock = threading.Lock()

    # -- models ------------------------------------------------------------------------
    def model(self, ref: str | int) -> ServedModel:
        """A registered model by id or unique name, loaded on first use."""
        model_id = self._resolve(ref)
        with self._load_lock:
            if model_id not in self._models:
                served = load_served_model(self.client, self.contracts, self.store, model_id)
                if served.record.server.lower() != self.server.address.lower():
                    raise UnknownModel(f"model {model_id} is served by {served.record.server}, not by this server")
                self._models[model_id] = served
            return self._models[model_id]

    def _resolve(self, ref: str | int) -> int:
        text = str(ref)
        if text.isdigit():
            model_id = int(text)
            if not self.client.call(self.contracts.models.functions.exists(model_id)):
                raise UnknownModel(f"no model with id {model_id}")
            return model_id
        from eth_utils import keccak

        model_id = int(self.client.call(self.contracts.models.functions.modelIdByNameHash(keccak(text.encode()))))
        if model_id == 0:
            raise UnknownModel(f"no model named {text!r}")
        return model_id

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    # -- calls -------------------------------------------------------------------------
    def classify(self, model_ref: str | int, text: str, voucher: Voucher, signature: bytes) -> CallResult:
        served = self.model(model_ref)
        price = served.record.price_per_call
        # Check the payment before spending compute, record it only once the call is answered,
        # so a failed answer is never charged.
        self.vouchers.check(voucher, signature, served.model_id, price)  # raises PaymentRequired
        prediction, attribution = served.answer(text)
        self.vouchers.accept(voucher, signature, served.model_id, price)
        salt = os.urandom(32)
        top = attribution.top(TOP_K)
        receipt = Receipt(
            call_id="0x" + os.urandom(32).hex(),
            model_id=served.model_id,
            model_name=served.record.name,
            base_model=served.record.base_model,
            adapter_hash=served.record.adapter_hash,
            lineage_root=served.record.lineage_root,
            consumer=voucher.consumer,
            fee=price,
            prompt_hash=salted_hash(salt, text),
            output_hash=salted_hash(salt, prediction.label),
            salt="0x" + salt.hex(),
            attribution=top,
            attribution_hash=attribution_hash(top),
            timestamp=self.client.latest_timestamp(),
            chain_id=self.client.chain_id,
            verifying_contract=self.contracts.models.address,
        ).signed_by(self.server)
        self.call_log.append(
            CallRecord(
                call_id=receipt.call_id,
                model_id=served.model_id,
                consumer=voucher.consumer,
                fee=price,
                prompt=text,
                salt=receipt.salt,
                output=prediction.label,
                timestamp=receipt.timestamp,
                cumulative=voucher.cumulative_amount,
            )
        )
        self._receipts[receipt.call_id] = receipt
        return CallResult(prediction=prediction, receipt=receipt)

    def receipt(self, call_id: str) -> Receipt:
        if call_id not in self._receipts:
            raise KeyError(f"no receipt for call {call_id}")
        return self._receipts[call_id]

    def charge_pending(self, model_ref: str | int) -> int:
        """Charge every pending voucher of a model on chain; returns how many were charged."""
        served = self.model(model_ref)
        count = self.vouchers.pending(served.model_id)
        self.vouchers.flush(self.server, served.model_id)
        return count


__all__ = ["CallResult", "PaymentRequired", "ServingService", "UnknownModel"]

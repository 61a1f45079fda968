"""The serving service: answer with a registered model, charge the call, sign a receipt.

Pay before answer: a call's voucher is checked before any compute and accepted (recorded for the
batched on-chain charge) only once the answer is complete, so a failed answer is never charged.
Classifiers answer synchronously; causal LMs go through the shared multi-LoRA engine of their base,
with the adapter acquired from the LRU cache (loaded just in time by CID) for the call's duration.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.payments.key_ledger import Hold
from provenant.payments.vouchers import PaymentRequired, Voucher, VoucherBook
from provenant.payments.x402_facilitator import (
    Requirements, Settlement, VerifiedPayment, X402Facilitator, X402NotAvailable,
)
from provenant.serving.calllog import CallLog, CallRecord
from provenant.factory.base_models import CausalBaseModel, load_causal_base_model
from provenant.serving.adapter_cache import AdapterCache
from provenant.serving.api_keys import ApiKeyBook
from provenant.serving.engine import Prediction
from provenant.serving.limits import RateLimiter
from provenant.serving.lm_engine import Generation, GenerationRequest, LmEngine
from provenant.serving.lora import CAUSAL_TASK, LoraWeights, parse_adapter
from provenant.serving.models import ServedModel, fetch_adapter, load_served_model
from provenant.serving.receipts import Receipt, attribution_hash, salted_hash
from provenant.serving.settings import ServingSettings
from provenant.store.blockstore import ContentStore

TOP_K = 5


class UnknownModel(LookupError):
    pass


class WrongTask(ValueError):
    """The model exists but does not do what the endpoint asks (e.g. chat with a classifier)."""


class LimitExceeded(ValueError):
    """A request over a serving limit (prompt length, max tokens, context window)."""


@dataclass
class PendingCompletion:
    """A causal-LM call in flight: paid-for (checked, not yet accepted), adapter held in the cache."""

    served: ServedModel
    call_id: str
    prompt: str
    base: CausalBaseModel
    generation: Generation
    voucher: Voucher | None
    signature: bytes | None
    released: bool = False
    x402: VerifiedPayment | None = None  # an x402 payment, verified, settled by settle_x402
    settlement: Settlement | None = None
    hold: Hold | None = None  # an API key's reserved fee, committed once answered (api_keys.py)

    @property
    def prompt_tokens(self) -> int:
        return len(self.generation.request.prompt_ids)

    def finish_reason(self) -> str:
        tokens = self.generation.tokens
        return "stop" if tokens and tokens[-1] == self.base.eos_token_id and not \
            self.generation.request.ignore_eos else "length"

    def text(self) -> str:
        return decode_text(self.base, self.generation.tokens)


def decode_text(base: CausalBaseModel, tokens: list[int]) -> str:
    ids = [t for t in tokens if t != base.eos_token_id]
    return str(base.tokenizer.decode(ids))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CallResult:
    prediction: Prediction
    receipt: Receipt
    settlement: Settlement | None = None  # the x402 payment's settlement (PAYMENT-RESPONSE)


def _cache_chain_id(client: ChainClient) -> None:
    """web3's validation middleware asks the node for eth_chainId before every contract call: 8 of
    the ~15 RPCs of a paid call. An endpoint's chain id never changes, so let the provider cache
    that one request (and nothing else: block and state reads must stay live)."""
    provider = client.w3.provider
    if hasattr(provider, "cacheable_requests") and hasattr(provider, "cache_allowed_requests"):
        provider.cacheable_requests = {"eth_chainId"}  # type: ignore[union-attr]
        provider.cache_allowed_requests = True  # type: ignore[union-attr]


class ServingService:
    def __init__(
        self, client: ChainClient, contracts: Contracts, store: ContentStore, server: LocalAccount, call_log: CallLog,
        settings: ServingSettings | None = None,
    ) -> None:
        client.check_signer(server)
        _cache_chain_id(client)
        self.client = client
        self.contracts = contracts
        self.store = store
        self.server = server
        self.call_log = call_log
        self.vouchers = VoucherBook(client, contracts)
        # API keys (bearer tokens for unchanged OpenAI clients), each backed by capped vouchers.
        self.api_keys = ApiKeyBook(client, contracts, call_log.directory / "api_keys.sqlite", self.vouchers, server)
        self.vouchers.channel_holder = self.api_keys.ledger.holds_channel
        # x402 payments: our own facilitator, in process (None on a deployment without X402Vaults).
        self.x402 = X402Facilitator(client, contracts, server) if contracts.x402 is not None else None
        self._models: dict[int, ServedModel] = {}
        self._receipts: dict[str, Receipt] = {}
        self._load_lock = threading.Lock()
        self.settings = settings or ServingSettings()
        self._engines: dict[str, LmEngine] = {}
        self._names: dict[str, int] = {}  # names are unique and immutable on chain: cache hits only
        self.rate_limiter = RateLimiter(self.settings.rate_per_s, self.settings.rate_burst)
        self.adapters = AdapterCache(self._load_adapter, self.settings.adapter_budget_bytes,
                                     self.settings.adapter_wait_s)

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
        text = str(ref).strip()
        if text in self._names:
            return self._names[text]
        if text.isdigit():
            model_id = int(text)
            if model_id in self._models:
                return model_id
            if not self.client.call(self.contracts.models.functions.exists(model_id)):
                raise UnknownModel(f"no model with id {model_id}")
            return model_id
        from eth_utils import keccak

        model_id = int(self.client.call(self.contracts.models.functions.modelIdByNameHash(keccak(text.encode()))))
        if model_id == 0:  # not cached: a model registered later is found on its first call
            raise UnknownModel(f"no model named {text!r}")
        self._names[text] = model_id
        return model_id

    def loaded(self) -> list[ServedModel]:
        return list(self._models.values())

    # -- payments ----------------------------------------------------------------------
    def x402_requirements(self, model_ref: str | int) -> Requirements:
        """The x402 `exact` requirements of one call of a model (payTo = the model's vault)."""
        if self.x402 is None:
            raise X402NotAvailable("this deployment has no X402Vaults contract: pay with a voucher")
        served = self.model(model_ref)
        return self.x402.requirements(served.model_id, served.record.price_per_call)

    def _check_payment(self, served: ServedModel, voucher: Voucher | None, signature: bytes | None,
                       x402: dict | None) -> tuple[str, VerifiedPayment | None]:
        """Check the call's payment before any compute: (the payer, the verified x402 payment or None)."""
        price = served.record.price_per_call
        if x402 is not None:
            if self.x402 is None:
                raise X402NotAvailable("this deployment has no X402Vaults contract: pay with a voucher")
            paid = self.x402.verify(x402, self.x402.requirements(served.model_id, price))
            return paid.payer, paid
        if voucher is None or signature is None:
            raise PaymentRequired("payment required: send a signed voucher or an x402 PAYMENT-SIGNATURE")
        self.vouchers.check(voucher, signature, served.model_id, price)  # raises PaymentRequired
        return voucher.consumer, None

    def _release_payment(self, paid: VerifiedPayment | None) -> None:
        if paid is not None and self.x402 is not None:
            self.x402.release(paid)

    # -- calls -------------------------------------------------------------------------
    def classify(self, model_ref: str | int, text: str, voucher: Voucher | None, signature: bytes | None,
                 x402: dict | None = None, api_key_id: str | None = None) -> CallResult:
        """Answer a classifier call paid by a voucher, by an x402 payload, or against an API key's cap
        (then voucher and signature are None): checked before compute, recorded only once answered."""
        served = self.model(model_ref)
        if served.classifier is None:
            raise WrongTask(f"model {served.record.name!r} is a {served.task} model; use /v1/completions")
        price = served.record.price_per_call
        call_id = "0x" + os.urandom(32).hex()
        # Check the payment before spending compute, record it only once the call is answered,
        # so a failed answer is never charged.
        hold = self.api_keys.reserve(api_key_id, served.model_id, price) if api_key_id is not None else None
        payer, paid = (hold.consumer, None) if hold is not None else self._check_payment(served, voucher, signature, x402)
        settlement, by_key = None, None
        try:
            self.rate_limiter.take(payer.lower())
            prediction, attribution = served.answer(text)
            if hold is not None:
                by_key, hold = (hold.consumer, self.api_keys.commit(hold, call_id)), None
            elif paid is not None:
                assert self.x402 is not None
                settlement = self.x402.settle(paid)  # raises X402Invalid (402) if it cannot settle
            else:
                self.vouchers.accept(voucher, signature, served.model_id, price)  # type: ignore[arg-type]
        finally:
            self._release_payment(paid)
            if hold is not None:  # not answered: the fee goes back to the key's cap
                self.api_keys.release(hold)
        receipt = self._sign_and_log(served, call_id, voucher, text, prediction.label, attribution.top(TOP_K), paid,
                                     by_key)
        if by_key is not None:
            self.api_keys.attach_receipt(receipt.call_id, receipt.to_json())
        return CallResult(prediction=prediction, receipt=receipt, settlement=settlement)

    def _sign_and_log(self, served: ServedModel, call_id: str, voucher: Voucher | None, prompt: str, output: str,
                      top: dict, paid: VerifiedPayment | None = None,
                      by_key: tuple[str, int] | None = None) -> Receipt:
        """Sign the receipt, append the call to the log (fsynced) and keep the receipt for lookups."""
        salt = os.urandom(32)
        price = served.record.price_per_call
        # An x402 call is tied to its charge by the authorization's nonce, which stands in for the
        # voucher's cumulative amount (see payments/x402_facilitator.py and settlement/membership.py).
        # An API-key call's cumulative is its position under the key's capped voucher (key_ledger.py).
        if by_key is not None:
            consumer, cumulative = by_key
        else:
            consumer = paid.payer if paid is not None else voucher.consumer  # type: ignore[union-attr]
            cumulative = paid.nonce_int if paid is not None else voucher.cumulative_amount  # type: ignore[union-attr]
        receipt = Receipt(
            call_id=call_id,
            model_id=served.model_id,
            model_name=served.record.name,
            base_model=served.record.base_model,
            adapter_hash=served.record.adapter_hash,
            lineage_root=served.record.lineage_root,
            consumer=consumer,
            fee=price,
            prompt_hash=salted_hash(salt, prompt),
            output_hash=salted_hash(salt, output),
            salt="0x" + salt.hex(),
            attribution=top,
            attribution_hash=attribution_hash(top),
            timestamp=self.client.latest_timestamp(),
            chain_id=self.client.chain_id,
            verifying_contract=self.contracts.models.address,
        ).signed_by(self.server)
        self.call_log.append(CallRecord(call_id=receipt.call_id, model_id=served.model_id, consumer=consumer,
                                        fee=price, prompt=prompt, salt=receipt.salt, output=output,
                                        timestamp=receipt.timestamp, cumulative=cumulative))
        self._receipts[receipt.call_id] = receipt
        return receipt

    # -- causal LMs --------------------------------------------------------------------
    def engine(self, base_name: str) -> LmEngine:
        with self._load_lock:
            if base_name not in self._engines:
                self._engines[base_name] = LmEngine(load_causal_base_model(base_name), self.settings.max_batch,
                                                    self.settings.max_wait_s)
            return self._engines[base_name]

    def _load_adapter(self, model_id: int) -> LoraWeights:
        served = self.model(model_id)
        base = load_causal_base_model(served.record.base_model)
        return parse_adapter(fetch_adapter(self.store, served.record), served.manifest.adapter_config, base.model)

    def start_completion(self, model_ref: str | int, prompt: str, max_tokens: int, voucher: Voucher | None,
                         signature: bytes | None, loop: object = None, ignore_eos: bool = False,
                         x402: dict | None = None, api_key_id: str | None = None) -> PendingCompletion:
        """Check payment and limits, hold the adapter, queue the generation (tokens stream out).
        With `api_key_id` the call's fee is reserved under that key's cap instead of a voucher."""
        served = self.model(model_ref)
        if served.task != CAUSAL_TASK:
            raise WrongTask(f"model {served.record.name!r} is a {served.task} model; use /v1/classifications")
        if not 1 <= max_tokens <= self.settings.max_new_tokens:
            raise LimitExceeded(f"max_tokens must be between 1 and {self.settings.max_new_tokens}, got {max_tokens}")
        if len(prompt) > self.settings.max_prompt_chars:
            raise LimitExceeded(f"prompt of {len(prompt)} characters exceeds {self.settings.max_prompt_chars}")
        engine = self.engine(served.record.base_model)
        ids = list(engine.base.tokenizer.encode(prompt))  # type: ignore[attr-defined]
        if len(ids) + max_tokens > engine.base.max_positions:
            raise LimitExceeded(f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context "
                                f"window of {engine.base.max_positions} tokens")
        hold = None
        if api_key_id is not None:
            hold = self.api_keys.reserve(api_key_id, served.model_id, served.record.price_per_call)
            payer, paid = hold.consumer, None
        else:
            payer, paid = self._check_payment(served, voucher, signature, x402)
        try:
            self.rate_limiter.take(payer.lower())  # after the check: the consumer is authenticated
            weights = self.adapters.acquire(served.model_id)
        except BaseException:
            self._release_payment(paid)
            if hold is not None:
                self.api_keys.release(hold)
            raise
        try:
            generation = engine.submit(GenerationRequest(ids, weights, max_tokens, ignore_eos),
                                       loop=loop)  # type: ignore[arg-type]
        except BaseException:
            self.adapters.release(served.model_id)
            self._release_payment(paid)
            if hold is not None:
                self.api_keys.release(hold)
            raise
        return PendingCompletion(served=served, call_id="0x" + os.urandom(32).hex(), prompt=prompt,
                                 base=engine.base, generation=generation, voucher=voucher, signature=signature,
                                 x402=paid, hold=hold)

    def release(self, pending: PendingCompletion) -> None:
        if not pending.released:
            pending.released = True
            self.adapters.release(pending.served.model_id)
            if pending.settlement is None:
                self._release_payment(pending.x402)  # an unsettled x402 nonce is free again
            if pending.hold is not None:  # not answered: the fee goes back to the key's cap
                self.api_keys.release(pending.hold)
                pending.hold = None

    def settle_x402(self, pending: PendingCompletion) -> Settlement | None:
        """Settle the call's x402 payment on chain (once); None for a voucher-paid call. Raises
        X402Invalid (HTTP 402) when the authorization cannot be settled, e.g. its nonce was used."""
        if pending.x402 is None:
            return None
        if pending.settlement is None:
            assert self.x402 is not None
            pending.settlement = self.x402.settle(pending.x402)
        return pending.settlement

    def finish_completion(self, pending: PendingCompletion) -> Receipt:
        """After the last token: free the adapter, take the payment (accept the voucher, or settle
        the x402 payment unless already settled), sign and log the receipt."""
        served = pending.served
        by_key = None
        try:
            if pending.hold is not None:
                hold, pending.hold = pending.hold, None
                by_key = (hold.consumer, self.api_keys.commit(hold, pending.call_id))
            elif pending.x402 is not None:
                self.settle_x402(pending)
            else:
                self.vouchers.accept(pending.voucher, pending.signature, served.model_id,  # type: ignore[arg-type]
                                     served.record.price_per_call)
        finally:
            self.release(pending)
        output = pending.text()
        # Gradient influence + verbatim spans when the manifest carries the indexes; older LM models
        # fall back to the lineage prior. Settlement re-scores the call through the same method.
        attribution, method = served.attribute_completion(pending.prompt, output)
        top = {**attribution.top(TOP_K), "method": method}
        receipt = self._sign_and_log(served, pending.call_id, pending.voucher, pending.prompt, output, top,
                                     pending.x402, by_key)
        if by_key is not None:
            self.api_keys.attach_receipt(receipt.call_id, receipt.to_json())
        return receipt

    def receipt(self, call_id: str) -> Receipt:
        if call_id not in self._receipts:
            raise KeyError(f"no receipt for call {call_id}")
        return self._receipts[call_id]

    def charge_pending(self, model_ref: str | int) -> int:
        """Charge every pending voucher of a model on chain; returns how many were charged."""
        served = self.model(model_ref)
        count = self.vouchers.pending(served.model_id) + self.api_keys.ledger.pending(served.model_id)
        self.vouchers.flush(self.server, served.model_id)
        self.api_keys.flush(served.model_id)  # API keys' answered calls, with chargeUpTo
        return count


__all__ = ["CallResult", "LimitExceeded", "PaymentRequired", "PendingCompletion", "ServingService", "UnknownModel",
           "WrongTask"]

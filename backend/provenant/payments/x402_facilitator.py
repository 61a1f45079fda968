"""Our own x402 facilitator, in process: verify an `exact` EVM payment, then settle it into escrow.

x402 v2 (`PAYMENT-REQUIRED` / `PAYMENT-SIGNATURE` / `PAYMENT-RESPONSE`, the formats of the official
`x402` package, whose pydantic schemas we use so the bytes match): a model's requirements are
scheme `exact`, network `eip155:<chain id>`, asset = the token, amount = the model's price, payTo =
the model's own vault (`X402Vaults.vaultOf(modelId)`, a CREATE2 address), and the token's EIP-712
domain name/version in `extra`. The client signs an EIP-3009 `TransferWithAuthorization`.

Verification (before any compute) checks, each with its own error: version, scheme, network,
asset, payee, amount, validity window, the signature (recovered over the token's domain, so the
chain and token are bound by it), an unused nonce (the token's `authorizationState`, plus this
process's in-flight reservations), and the payer's balance. Settlement (after the answer) submits
the authorization through `X402Vaults.chargeX402`, which credits the measured transfer to the
model's fees as one charge naming (payer, nonce): never an authorization's signed fields alone.

The nonce ties the call to its charge: the call is logged with `cumulative = int(nonce)` and the
charge appears to settlement as a one-call voucher charge over (nonce - value, nonce] (see
settlement/membership.py). So nonces must be 32 random bytes: one below 2**128 is refused, which
keeps x402 intervals far from any voucher's cumulative amounts (all below the token supply).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.logs import DISCARD

from provenant.chain.client import ChainClient, ChainError, TxResult
from provenant.chain.deploy import Contracts
from provenant.payments.vouchers import PaymentRequired

SCHEME = "exact"
X402_VERSION = 2
MAX_TIMEOUT_S = 300
MIN_NONCE = 2**128  # see the module doc
SETTLE_MARGIN_S = 5  # an authorization must stay valid this long after verification

TRANSFER_WITH_AUTHORIZATION_TYPES = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


class X402Invalid(PaymentRequired):
    """An x402 payment that cannot pay this call; `reason` is a stable x402-style code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"x402 payment refused ({reason}): {message}")
        self.reason = reason


class X402NotAvailable(PaymentRequired):
    """This deployment has no x402 vaults contract."""


@dataclass(frozen=True)
class Requirements:
    """What one call of one model costs, in the x402 v2 `PaymentRequirements` fields."""

    model_id: int
    network: str
    asset: str
    amount: int
    pay_to: str
    token_name: str
    token_version: str
    max_timeout_seconds: int = MAX_TIMEOUT_S

    def to_json(self) -> dict[str, Any]:
        return {"scheme": SCHEME, "network": self.network, "asset": self.asset, "amount": str(self.amount),
                "payTo": self.pay_to, "maxTimeoutSeconds": self.max_timeout_seconds,
                "extra": {"name": self.token_name, "version": self.token_version}}


@dataclass(frozen=True)
class VerifiedPayment:
    """A checked EIP-3009 authorization for exactly one call of one model, reserved in flight."""

    requirements: Requirements
    payer: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: bytes

    @property
    def nonce_int(self) -> int:
        return int.from_bytes(self.nonce, "big")

    def as_tuple(self) -> tuple:
        v, r, s = self.signature[64], self.signature[:32], self.signature[32:64]
        return (self.payer, self.value, self.valid_after, self.valid_before, self.nonce, v if v >= 27 else v + 27,
                r, s)


@dataclass(frozen=True)
class Settlement:
    payment: VerifiedPayment
    tx: TxResult
    seq: int

    def response_json(self) -> dict[str, Any]:
        """The x402 v2 `SettleResponse` (the PAYMENT-RESPONSE header's content)."""
        return {"success": True, "payer": self.payment.payer, "transaction": self.tx.tx_hash,
                "network": self.payment.requirements.network, "amount": str(self.payment.value)}


def _field(raw: dict[str, Any], name: str) -> Any:
    if name not in raw:
        raise X402Invalid("invalid_payload", f"authorization lacks {name!r}")
    return raw[name]


class X402Facilitator:
    """Verification and settlement of x402 `exact` payments, run by the model's server."""

    def __init__(self, client: ChainClient, contracts: Contracts, server: LocalAccount) -> None:
        if contracts.x402 is None:
            raise X402NotAvailable("this deployment has no X402Vaults contract: redeploy to accept x402 payments")
        self.client, self.contracts, self.server = client, contracts, server
        self.vaults = contracts.x402
        self.network = f"eip155:{client.chain_id}"
        domain = client.call(contracts.token.functions.eip712Domain())
        self.token_name, self.token_version = str(domain[1]), str(domain[2])
        self._vaults: dict[int, str] = {}
        self._inflight: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    # -- requirements ------------------------------------------------------------------
    def vault_of(self, model_id: int) -> str:
        if model_id not in self._vaults:
            self._vaults[model_id] = Web3.to_checksum_address(self.client.call(self.vaults.functions.vaultOf(model_id)))
        return self._vaults[model_id]

    def requirements(self, model_id: int, price: int) -> Requirements:
        return Requirements(model_id=model_id, network=self.network, asset=self.contracts.token.address,
                            amount=price, pay_to=self.vault_of(model_id), token_name=self.token_name,
                            token_version=self.token_version)

    # -- verification --------------------------------------------------------------------
    def verify(self, payload: dict[str, Any], req: Requirements) -> VerifiedPayment:
        """Check a decoded PAYMENT-SIGNATURE payload against `req`; reserve its nonce until
        `settle` or `release`. Raises X402Invalid naming the first problem; changes nothing then."""
        if payload.get("x402Version") != X402_VERSION:
            raise X402Invalid("invalid_x402_version", f"x402Version must be {X402_VERSION}, got "
                                                      f"{payload.get('x402Version')!r}")
        accepted = payload.get("accepted") or {}
        if accepted.get("scheme") != SCHEME:
            raise X402Invalid("unsupported_scheme", f"scheme must be {SCHEME!r}, got {accepted.get('scheme')!r}")
        if accepted.get("network") != req.network:
            raise X402Invalid("invalid_network", f"network must be {req.network}, got {accepted.get('network')!r}")
        if str(accepted.get("asset", "")).lower() != req.asset.lower():
            raise X402Invalid("invalid_asset", f"asset must be the token {req.asset}, got {accepted.get('asset')!r}")
        inner = payload.get("payload") or {}
        auth, signature = inner.get("authorization"), inner.get("signature")
        if not isinstance(auth, dict) or not isinstance(signature, str):
            raise X402Invalid("invalid_payload", "only EIP-3009 authorizations are accepted (no Permit2)")
        try:
            payer = Web3.to_checksum_address(_field(auth, "from"))
            to = Web3.to_checksum_address(_field(auth, "to"))
            value, after, before = int(_field(auth, "value")), int(_field(auth, "validAfter")), \
                int(_field(auth, "validBefore"))
            nonce = bytes.fromhex(str(_field(auth, "nonce")).removeprefix("0x"))
            sig = bytes.fromhex(signature.removeprefix("0x"))
        except (ValueError, TypeError):
            raise X402Invalid("invalid_payload", "authorization fields are malformed") from None
        if to != req.pay_to:
            raise X402Invalid("invalid_payee", f"payTo must be model {req.model_id}'s vault {req.pay_to}, got {to}")
        if value != req.amount:
            raise X402Invalid("invalid_amount", f"amount must be the price {req.amount}, got {value}")
        if len(nonce) != 32 or int.from_bytes(nonce, "big") < MIN_NONCE:
            raise X402Invalid("invalid_nonce", "nonce must be 32 random bytes")
        if len(sig) != 65:
            raise X402Invalid("invalid_signature", "signature must be 65 bytes (r, s, v)")
        now = max(int(time.time()), self.client.latest_timestamp())
        if after >= now:
            raise X402Invalid("authorization_not_yet_valid", f"validAfter {after} is not before now ({now})")
        if before <= now + SETTLE_MARGIN_S:
            raise X402Invalid("authorization_expired", f"validBefore {before} has passed or is within "
                                                       f"{SETTLE_MARGIN_S} s of now ({now})")
        message = {"from": payer, "to": to, "value": value, "validAfter": after, "validBefore": before,
                   "nonce": nonce}
        try:
            signer = Account.recover_message(encode_typed_data(full_message=self._typed(message)), signature=sig)
        except Exception:  # noqa: BLE001 - any malformed signature is simply not a payment
            raise X402Invalid("invalid_signature", "signature is malformed") from None
        if signer != payer:
            raise X402Invalid("invalid_signature", f"authorization is not signed by {payer} on {req.network} "
                                                   f"for token {req.asset}")
        key = (payer, nonce)
        with self._lock:
            if key in self._inflight or self.client.call(
                    self.contracts.token.functions.authorizationState(payer, nonce)):
                raise X402Invalid("nonce_already_used", f"nonce 0x{nonce.hex()} of {payer} was already used")
            balance = int(self.client.call(self.contracts.token.functions.balanceOf(payer)))
            if balance < value:
                raise X402Invalid("insufficient_funds", f"{payer} holds {balance}, the call costs {value}")
            self._inflight.add(key)
        return VerifiedPayment(req, payer, value, after, before, nonce, sig)

    def _typed(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"},
                ],
                "TransferWithAuthorization": TRANSFER_WITH_AUTHORIZATION_TYPES,
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": self.token_name, "version": self.token_version, "chainId": self.client.chain_id,
                       "verifyingContract": self.contracts.token.address},
            "message": message,
        }

    # -- settlement ----------------------------------------------------------------------
    def settle(self, payment: VerifiedPayment) -> Settlement:
        """Submit the authorization through X402Vaults.chargeX402 (the model's server key)."""
        try:
            fn = self.vaults.functions.chargeX402(payment.requirements.model_id, payment.as_tuple())
            tx = self.client.transact(self.server, fn)
        except ChainError as exc:
            raise X402Invalid("settlement_failed", str(exc)) from None
        finally:
            self.release(payment)
        events = self.vaults.events.X402Charged().process_receipt(
            self.client.w3.eth.get_transaction_receipt(tx.tx_hash), errors=DISCARD)
        seq = next(int(e["args"]["seq"]) for e in events if bytes(e["args"]["nonce"]) == payment.nonce)
        return Settlement(payment, tx, seq)

    def release(self, payment: VerifiedPayment) -> None:
        """Free a reserved nonce (the call failed before settlement, or settlement finished)."""
        with self._lock:
            self._inflight.discard((payment.payer, payment.nonce))

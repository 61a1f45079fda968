"""API keys for unchanged OpenAI clients: minted from a SIWE session, backed by capped vouchers.

A consumer signed in with Ethereum asks for a key scoped to models, a spending cap and an expiry,
and hands over, per model, a voucher whose cumulative amount is its on-chain spent total plus the
cap. The server checks the signature, the deposit and the deadline, stores the key only as its
SHA-256 (with its scope and vouchers) and shows it once. Calls that send it as the bearer token are
charged against the cap (payments/key_ledger.py), each answered call is listed with its receipt
for the consumer to audit, and the server charges on chain exactly the answered calls' fees.

Keys, calls and receipts persist in one SQLite file, so a restart neither forgets a key nor
loses an answered call that still has to be charged.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

from eth_account.signers.local import LocalAccount
from fastapi import HTTPException

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import escrow_domain, recover_typed
from provenant.payments.key_ledger import Channel, ChargedBatch, Hold, KeyAccount, KeyLedger
from provenant.payments.vouchers import Voucher, VoucherBook

KEY_PREFIX = "pvk_"
MAX_MODELS = 16
MAX_LIFETIME_S = 90 * 24 * 3600
# The key must expire this long before its vouchers do, so the last answered calls can still be
# charged (the escrow refuses a voucher past its deadline).
CHARGE_MARGIN_S = 600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY, digest TEXT UNIQUE NOT NULL, consumer TEXT NOT NULL, cap TEXT NOT NULL,
  expires_at REAL NOT NULL, created_at REAL NOT NULL, revoked_at REAL, channels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_key_calls (
  call_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, model_id INTEGER NOT NULL, fee TEXT NOT NULL,
  cumulative TEXT NOT NULL, answered_at REAL NOT NULL, receipt TEXT, charge_seq INTEGER);
CREATE INDEX IF NOT EXISTS api_key_calls_by_key ON api_key_calls (key_id, model_id);
"""


class ApiKeyError(HTTPException):
    """A refused key request or an unusable key, with its HTTP status and a clear message."""

    def __init__(self, status_code: int, detail: str) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if status_code == 401 else None
        super().__init__(status_code=status_code, detail=detail, headers=headers)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_key(authorization: str | None) -> str | None:
    """The API key in an `Authorization: Bearer pvk_...` header; None for any other header (a
    placeholder api_key of a voucher- or x402-paying client, a SIWE session token)."""
    if not authorization or not authorization[:7].lower() == "bearer ":
        return None
    token = authorization[7:].strip()
    return token if token.startswith(KEY_PREFIX) else None


class ApiKeyBook:
    def __init__(self, client: ChainClient, contracts: Contracts, path: Path, vouchers: VoucherBook,
                 server: LocalAccount, clock: Callable[[], float] = time.time) -> None:
        self.client, self.contracts, self.vouchers, self.server = client, contracts, vouchers, server
        self.ledger = KeyLedger(clock=clock)
        self._digests: dict[str, str] = {}  # sha256 of the key -> key id
        self._create_lock = threading.Lock()
        self._db_lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self._load()

    @property
    def clock(self) -> Callable[[], float]:
        return self.ledger.clock

    # -- minting -----------------------------------------------------------------------
    def create(self, consumer: str, model_ids: list[int], cap: int, expires_at: float,
               payments: list[tuple[Voucher, bytes]]) -> tuple[str, KeyAccount]:
        """Check the capped vouchers and mint a key; returns (the key, shown only now, its account)."""
        now = self.clock()
        if cap <= 0:
            raise ApiKeyError(400, "cap must be a positive amount of token wei")
        if not 1 <= len(model_ids) <= MAX_MODELS or len(set(model_ids)) != len(model_ids):
            raise ApiKeyError(400, f"models must name 1 to {MAX_MODELS} distinct models")
        if not now < expires_at <= now + MAX_LIFETIME_S:
            raise ApiKeyError(400, f"expires_at must be in the future and at most {MAX_LIFETIME_S} s away")
        by_model = {v.model_id: (v, s) for v, s in payments}
        if len(by_model) != len(payments) or set(by_model) != set(model_ids):
            raise ApiKeyError(400, f"send exactly one voucher per model in scope {sorted(model_ids)}, "
                                   f"got vouchers for {sorted(v.model_id for v, _ in payments)}")
        with self._create_lock:  # one mint at a time: two keys never claim one spending channel
            channels = {m: self._check_voucher(consumer, *by_model[m], cap, expires_at) for m in model_ids}
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            account = KeyAccount(key_id="key_" + secrets.token_hex(8), consumer=consumer, cap=cap,
                                 expires_at=expires_at, channels=channels)
            with self._db_lock:
                self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                                 (account.key_id, digest(key), consumer, str(cap), expires_at, now,
                                  json.dumps({str(m): _channel_json(c) for m, c in channels.items()})))
            self._digests[digest(key)] = account.key_id
            self.ledger.add(account)
            # A voucher-paid call of this consumer accepted between the spentOf read and now would
            # move the spent total under the key's feet: give up rather than charge overlapping sums.
            raced = sorted({m for m, c in self.vouchers.pending_keys()
                            if m in channels and c.lower() == consumer.lower()})
            if raced:
                self.revoke(account.key_id)
                raise ApiKeyError(409, f"voucher-paid calls on models {raced} were answered while the key was "
                                       f"minted: retry")
        return key, account

    def _check_voucher(self, consumer: str, voucher: Voucher, signature: bytes, cap: int,
                       expires_at: float) -> Channel:
        model_id = voucher.model_id
        if voucher.consumer.lower() != consumer.lower():
            raise ApiKeyError(403, f"voucher for model {model_id} is for {voucher.consumer}, but you are signed "
                                   f"in as {consumer}")
        domain = escrow_domain(self.client.chain_id, self.contracts.escrow.address)
        try:
            signer = recover_typed(domain, "Voucher", voucher.message(), signature)
        except Exception:  # noqa: BLE001 - any malformed signature is simply refused
            raise ApiKeyError(402, f"voucher for model {model_id}: signature is malformed") from None
        if signer.lower() != voucher.consumer.lower():
            raise ApiKeyError(402, f"voucher for model {model_id} is not signed by its consumer {voucher.consumer}")
        # Against both clocks: the key expires by this server's, the escrow checks the chain's.
        needed = int(max(expires_at, self.client.latest_timestamp())) + CHARGE_MARGIN_S
        if voucher.deadline < needed:
            raise ApiKeyError(402, f"voucher for model {model_id} must stay valid at least {CHARGE_MARGIN_S} s "
                                   f"after the key expires (deadline >= {needed})")
        holder = self.ledger.holds_channel(model_id, voucher.consumer)
        if holder is not None:
            raise ApiKeyError(409, f"API key {holder} already spends for {voucher.consumer} on model {model_id}: "
                                   f"revoke it (and let its calls be charged) first")
        if any(m == model_id and c.lower() == voucher.consumer.lower() for m, c in self.vouchers.pending_keys()):
            self.vouchers.flush(self.server, model_id)  # earlier voucher-paid calls: charge them first
        escrow = self.contracts.escrow.functions
        spent = int(self.client.call(escrow.spentOf(voucher.consumer, model_id)))
        if voucher.cumulative_amount != spent + cap:
            raise ApiKeyError(402, f"voucher for model {model_id} must carry cumulative_amount = spent on chain "
                                   f"({spent}) + cap ({cap}) = {spent + cap}, got {voucher.cumulative_amount}")
        deposit = int(self.client.call(escrow.depositOf(voucher.consumer, model_id)))
        if deposit < cap:
            raise ApiKeyError(402, f"deposit of {deposit} for model {model_id} does not cover the cap of {cap}")
        return Channel(voucher=voucher, signature=signature, base=spent)

    # -- use -----------------------------------------------------------------------------
    def authenticate(self, key: str) -> str:
        """The key's id, or 401 for a key this server never minted or one that was revoked."""
        key_id = self._digests.get(digest(key))
        if key_id is None:
            raise ApiKeyError(401, "unknown API key")
        if self.ledger.account(key_id).revoked:
            raise ApiKeyError(401, f"API key {key_id} was revoked")
        return key_id

    def key_id_of(self, key: str) -> str | None:
        return self._digests.get(digest(key))

    def reserve(self, key_id: str, model_id: int, fee: int) -> Hold:
        return self.ledger.reserve(key_id, model_id, fee)  # raises ApiKeyRefused (402)

    def release(self, hold: Hold) -> None:
        self.ledger.release(hold)

    def commit(self, hold: Hold, call_id: str) -> int:
        """The call was answered: chargeable from now on, listed in the audit; its cumulative position."""
        def record(cumulative: int) -> None:
            with self._db_lock:
                self._db.execute("INSERT INTO api_key_calls VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                                 (call_id, hold.key_id, hold.model_id, str(hold.fee), str(cumulative), time.time()))

        return self.ledger.commit(hold, record)

    def attach_receipt(self, call_id: str, receipt: dict[str, Any]) -> None:
        with self._db_lock:
            self._db.execute("UPDATE api_key_calls SET receipt = ? WHERE call_id = ?",
                             (json.dumps(receipt, separators=(",", ":")), call_id))

    def revoke(self, key_id: str) -> None:
        self.ledger.revoke(key_id)
        with self._db_lock:
            self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                             (self.clock(), key_id))

    def flush(self, model_id: int) -> ChargedBatch | None:
        """Charge the model's answered, uncharged key calls on chain (one `chargeUpTo`)."""
        batch = self.ledger.flush(self.client, self.contracts, self.server, model_id)
        if batch is not None:
            with self._db_lock:
                for (key_id, _), amount in batch.amounts.items():
                    self._db.execute("UPDATE api_key_calls SET charge_seq = ? WHERE key_id = ? AND model_id = ? "
                                     "AND charge_seq IS NULL AND CAST(cumulative AS INTEGER) <= ?",
                                     (batch.seq, key_id, model_id, amount))
        return batch

    # -- audit ---------------------------------------------------------------------------
    def keys_of(self, consumer: str) -> list[KeyAccount]:
        return [a for a in self.ledger.accounts() if a.consumer.lower() == consumer.lower()]

    def calls(self, key_id: str) -> list[dict[str, Any]]:
        with self._db_lock:
            rows = self._db.execute("SELECT call_id, model_id, fee, cumulative, answered_at, receipt, charge_seq "
                                    "FROM api_key_calls WHERE key_id = ? ORDER BY rowid", (key_id,)).fetchall()
        return [{"call_id": c, "model_id": m, "fee": f, "cumulative": cu, "answered_at": at,
                 "receipt": json.loads(r) if r else None, "charge_seq": seq} for c, m, f, cu, at, r, seq in rows]

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> None:
        for key_id, dig, consumer, cap, expires_at, revoked_at, raw in self._db.execute(
                "SELECT id, digest, consumer, cap, expires_at, revoked_at, channels FROM api_keys"):
            channels = {int(m): _channel_from(c) for m, c in json.loads(raw).items()}
            account = KeyAccount(key_id=key_id, consumer=consumer, cap=int(cap), expires_at=expires_at,
                                 channels=channels, revoked=revoked_at is not None)
            for model_id, fee, charged in self._db.execute(
                    "SELECT model_id, fee, charge_seq IS NOT NULL FROM api_key_calls WHERE key_id = ?", (key_id,)):
                channels[model_id].answered += int(fee)
                account.answered += int(fee)
                if charged:
                    channels[model_id].charged += int(fee)
            self._digests[dig] = key_id
            self.ledger.add(account)


def _channel_json(c: Channel) -> dict[str, Any]:
    return {"voucher": c.voucher.to_json(), "signature": "0x" + c.signature.hex(), "base": str(c.base)}


def _channel_from(raw: dict[str, Any]) -> Channel:
    return Channel(voucher=Voucher.from_json(raw["voucher"]), signature=bytes.fromhex(raw["signature"][2:]),
                   base=int(raw["base"]))


__all__ = ["ApiKeyBook", "ApiKeyError", "KEY_PREFIX", "bearer_key", "digest"]

"""Spending under an API key's cap: atomic in-process accounting, on-chain charges with `chargeUpTo`.

An API key is backed by one capped voucher per model in its scope: the consumer signed
`cumulativeAmount = spentOf(consumer, model) + cap` up front. A call first *reserves* its fee
(answered + in flight + fee must stay within the cap, checked and taken under one lock, so
concurrent calls can never overrun it), then either *commits* once it has been answered (the fee
becomes part of what the server may charge, and the call gets its cumulative position
`base + answered` that ties it to the on-chain charge, as a cumulative voucher does) or
*releases* the reservation when it failed. `flush` charges each channel's answered total with
`UsageEscrow.chargeUpTo`, so the chain moves exactly the fees of answered calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.payments.vouchers import PaymentRequired, Voucher


class ApiKeyRefused(PaymentRequired):
    """The key may not pay for this call: cap reached, expired, or model out of scope (HTTP 402)."""


@dataclass
class Channel:
    """One model's capped voucher of a key and what has been answered and charged under it."""

    voucher: Voucher
    signature: bytes
    base: int  # the consumer's on-chain spent total when the key was minted
    answered: int = 0  # fees of answered calls
    charged: int = 0  # of which charged on chain

    @property
    def headroom(self) -> int:
        return self.voucher.cumulative_amount - self.base


@dataclass
class KeyAccount:
    key_id: str
    consumer: str
    cap: int
    expires_at: float
    channels: dict[int, Channel]
    revoked: bool = False
    reserved: int = 0  # fees of calls in flight
    answered: int = 0  # fees of answered calls, all models

    def usage(self) -> dict[str, object]:
        return {"cap": str(self.cap), "answered": str(self.answered), "in_flight": str(self.reserved),
                "remaining": str(self.cap - self.answered - self.reserved),
                "charged": str(sum(c.charged for c in self.channels.values())), "revoked": self.revoked}


@dataclass(frozen=True)
class Hold:
    """A reserved fee of one call in flight."""

    key_id: str
    consumer: str
    model_id: int
    fee: int


@dataclass(frozen=True)
class ChargedBatch:
    tx: TxResult
    seq: int
    amounts: dict[tuple[str, str], int]  # (key id, consumer) -> the new on-chain spent total


@dataclass
class KeyLedger:
    clock: Callable[[], float]
    _accounts: dict[str, KeyAccount] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flush_lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, account: KeyAccount) -> None:
        with self._lock:
            self._accounts[account.key_id] = account

    def account(self, key_id: str) -> KeyAccount:
        return self._accounts[key_id]

    def accounts(self) -> list[KeyAccount]:
        with self._lock:
            return list(self._accounts.values())

    def holds_channel(self, model_id: int, consumer: str) -> str | None:
        """The id of a key that owns the consumer's spending on the model: live, or with answered
        calls not yet charged. Cumulative amounts of other payments must wait until it is free."""
        with self._lock:
            for account in self._accounts.values():
                channel = account.channels.get(model_id)
                if channel is None or account.consumer.lower() != consumer.lower():
                    continue
                live = not account.revoked and self.clock() < account.expires_at
                if live or channel.answered > channel.charged:
                    return account.key_id
        return None

    def reserve(self, key_id: str, model_id: int, fee: int) -> Hold:
        """Take `fee` out of the key's remaining cap for one call, or raise ApiKeyRefused."""
        with self._lock:
            account = self._accounts[key_id]
            if account.revoked:
                raise ApiKeyRefused(f"API key {key_id} was revoked")
            if self.clock() >= account.expires_at:
                raise ApiKeyRefused(f"API key {key_id} expired at {int(account.expires_at)}")
            if model_id not in account.channels:
                raise ApiKeyRefused(f"API key {key_id} is not scoped to model {model_id} "
                                    f"(scope: {sorted(account.channels)})")
            committed = account.answered + account.reserved
            if committed + fee > account.cap:
                raise ApiKeyRefused(f"API key {key_id} spending cap of {account.cap} reached: {account.answered} "
                                    f"answered and {account.reserved} in flight leave {account.cap - committed}, "
                                    f"this call costs {fee}")
            account.reserved += fee
            return Hold(key_id=key_id, consumer=account.consumer, model_id=model_id, fee=fee)

    def release(self, hold: Hold) -> None:
        """The call failed before it was answered: give its fee back to the cap."""
        with self._lock:
            self._accounts[hold.key_id].reserved -= hold.fee

    def commit(self, hold: Hold, record: Callable[[int], None] | None = None) -> int:
        """The call was answered: it becomes chargeable. Returns its cumulative position on the
        consumer's spent total (base + answered on this model), the figure the escrow's Charged
        event that pays for it will cover. `record(cumulative)` runs under the lock (the audit
        row is written in the same order as positions are handed out)."""
        with self._lock:
            account = self._accounts[hold.key_id]
            channel = account.channels[hold.model_id]
            account.reserved -= hold.fee
            account.answered += hold.fee
            channel.answered += hold.fee
            cumulative = channel.base + channel.answered
            if record is not None:
                record(cumulative)
            return cumulative

    def revoke(self, key_id: str) -> None:
        with self._lock:
            self._accounts[key_id].revoked = True

    def pending(self, model_id: int) -> int:
        with self._lock:
            return sum(1 for a in self._accounts.values()
                       if (c := a.channels.get(model_id)) is not None and c.answered > c.charged)

    def flush(self, client: ChainClient, contracts: Contracts, server: LocalAccount,
              model_id: int) -> ChargedBatch | None:
        """Charge every key's answered, uncharged fees on `model_id` in one `chargeUpTo`.

        Calls answered while the transaction is in flight stay uncharged for the next flush:
        the amounts are snapshotted under the lock, and `charged` moves to the snapshot only."""
        with self._flush_lock:
            with self._lock:
                batch = [(a.key_id, a.consumer, c, c.base + c.answered) for a in self._accounts.values()
                         if (c := a.channels.get(model_id)) is not None and c.answered > c.charged]
            if not batch:
                return None
            fn = contracts.escrow.functions.chargeUpTo(
                model_id, [c.voucher.as_tuple() for _, _, c, _ in batch], [c.signature for _, _, c, _ in batch],
                [amount for _, _, _, amount in batch])
            tx = client.transact(server, fn)
            seq = _charge_seq(contracts, tx)
            with self._lock:
                for _, _, channel, amount in batch:
                    channel.charged = amount - channel.base
            return ChargedBatch(tx=tx, seq=seq, amounts={(k, consumer): amount for k, consumer, _, amount in batch})


def _charge_seq(contracts: Contracts, tx: TxResult) -> int:
    """The batch's charge sequence number, from its own Charged events (not a later read, which
    another charge of the model could already have moved)."""
    event = contracts.escrow.events.Charged()
    for log in tx.logs:
        if str(log["address"]).lower() == contracts.escrow.address.lower():
            try:
                return int(event.process_log(log)["args"]["seq"])
            except Exception:  # noqa: BLE001 - another event of the escrow
                continue
    raise RuntimeError(f"transaction {tx.tx_hash} charged nothing")


__all__ = ["ApiKeyRefused", "Channel", "ChargedBatch", "Hold", "KeyAccount", "KeyLedger"]

"""Which calls belong to which epoch: each call is tied to the on-chain charge that paid for it.

A consumer's vouchers carry a cumulative amount, and every escrow `Charged(model, consumer, seq,
amount, cumulativeAmount)` moves that consumer's spent total from cumulativeAmount - amount to
cumulativeAmount. A call logged with cumulative amount c (the voucher that paid for it) is paid
by the consumer's charge whose interval (cumulativeAmount - amount, cumulativeAmount] holds c,
and it belongs to the epoch whose (previous uptoSeq, uptoSeq] range holds that charge's seq.

So membership is a pure function of the chain and the call log: a restarted settlement process
recomputes the same epochs, a call can never be counted in two epochs (charge ranges of epochs do
not overlap), and a call answered but not yet charged is not lost: it waits for the epoch that
settles its charge. Calls are keyed by call id, so a line logged twice counts once.

An x402 payment (X402Vaults.chargeX402) is a one-call voucher charge: the payer is the consumer,
the EIP-3009 nonce (a 32-byte random number, at least 2**128) stands in for the cumulative amount,
so the charge covers (nonce - value, nonce] and the call logged with cumulative = nonce is exactly
the call it paid. Royalties (RoyaltyRouter) and vault sweeps pay fees directly: no calls of their
own, split by the epoch's aggregate attribution.

If one cumulative amount appears on several calls of a consumer (the server lost its pending
vouchers in a restart and the consumer paid that amount again), the call logged last is the one
the charge paid: the escrow only ever charges the voucher the server held when it charged.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from web3 import Web3

from provenant.serving.calllog import CallRecord

VOUCHER, DIRECT = "voucher", "direct"
X402_MIN_NONCE = 2**128  # x402 nonces are at least this (payments/x402_facilitator.py refuses smaller)


@dataclass(frozen=True)
class Charge:
    """One consumer's part of a voucher charge, or a direct fee payment (royalty, x402 sweep)."""

    seq: int
    payer: str
    amount: int
    cumulative: int  # the consumer's spent total after this charge (x402: the nonce); 0 for direct payments
    kind: str
    block: int
    via: str = ""  # "x402" for an x402 payment, "royalty" / "sweep" for those direct payments

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"seq": self.seq, "payer": self.payer, "amount": str(self.amount),
                                  "cumulative": str(self.cumulative), "kind": self.kind}
        if self.via:
            out["via"] = self.via  # absent for plain vouchers and payFees: older documents keep their bytes
        return out


def read_charges(contracts: object, model_id: int, from_seq: int, upto_seq: int, from_block: int) -> list[Charge]:
    """The model's charges with from_seq < seq <= upto_seq, from the escrow's events."""
    escrow = contracts.escrow  # type: ignore[attr-defined]
    found: list[Charge] = []
    for log in escrow.events.Charged.get_logs(from_block=from_block, argument_filters={"modelId": model_id}):
        a = log["args"]
        if from_seq < int(a["seq"]) <= upto_seq:
            found.append(Charge(int(a["seq"]), Web3.to_checksum_address(a["consumer"]), int(a["amount"]),
                                int(a["cumulativeAmount"]), VOUCHER, int(log["blockNumber"])))
    x402 = _x402_payments(contracts, model_id, from_seq, upto_seq, from_block)
    vaults = getattr(getattr(contracts, "x402", None), "address", None)
    router = getattr(getattr(contracts, "royalties", None), "address", None)
    for log in escrow.events.FeesPaid.get_logs(from_block=from_block, argument_filters={"modelId": model_id}):
        a = log["args"]
        seq = int(a["seq"])
        if not from_seq < seq <= upto_seq:
            continue
        payer = Web3.to_checksum_address(a["payer"])
        if payer == vaults and seq in x402:
            found.append(x402[seq])  # the payer and nonce come from X402Charged of the same seq
            continue
        via = "sweep" if payer == vaults else "royalty" if payer == router else ""
        found.append(Charge(seq, payer, int(a["amount"]), 0, DIRECT, int(log["blockNumber"]), via))
    return sorted(found, key=lambda c: (c.seq, c.kind, c.payer))


def _x402_payments(contracts: object, model_id: int, from_seq: int, upto_seq: int, from_block: int
                   ) -> dict[int, Charge]:
    """seq -> the x402 payment charged under it, as a one-call voucher charge over (nonce - value, nonce]."""
    vaults = getattr(contracts, "x402", None)
    if vaults is None:
        return {}
    out: dict[int, Charge] = {}
    for log in vaults.events.X402Charged.get_logs(from_block=from_block, argument_filters={"modelId": model_id}):
        a = log["args"]
        seq = int(a["seq"])
        if from_seq < seq <= upto_seq:
            out[seq] = Charge(seq, Web3.to_checksum_address(a["payer"]), int(a["amount"]),
                              int.from_bytes(bytes(a["nonce"]), "big"), VOUCHER, int(log["blockNumber"]), "x402")
    return out


@dataclass(frozen=True)
class PaidCall:
    record: CallRecord
    consumer: str  # checksum address
    cumulative: int
    charge_seq: int


@dataclass
class Assignment:
    members: list[PaidCall] = field(default_factory=list)  # paid by a charge in the range, in results order
    unpaid: list[CallRecord] = field(default_factory=list)  # no charge in the range paid them (yet)
    superseded: list[CallRecord] = field(default_factory=list)  # an amount paid again by a later call
    calls_per_charge: dict[tuple[int, str], int] = field(default_factory=dict)
    fees_per_charge: dict[tuple[int, str], int] = field(default_factory=dict)


def with_cumulative(records: Sequence[CallRecord]) -> list[tuple[CallRecord, str, int]]:
    """(record, checksum consumer, cumulative amount) in log order; cumulative amounts missing from
    old-format lines are the running sum of the consumer's fees, restarting from any logged one."""
    running: dict[str, int] = defaultdict(int)
    out = []
    for record in records:
        consumer = Web3.to_checksum_address(record.consumer)
        if record.cumulative is not None and record.cumulative >= X402_MIN_NONCE:
            out.append((record, consumer, record.cumulative))  # an x402 nonce: not part of the voucher sums
            continue
        running[consumer] = record.cumulative if record.cumulative is not None else running[consumer] + record.fee
        out.append((record, consumer, running[consumer]))
    return out


def assign(records: Sequence[CallRecord], charges: Sequence[Charge]) -> Assignment:
    """Tie each logged call (in log order, one per call id) to the voucher charge that paid it."""
    intervals: dict[str, list[Charge]] = defaultdict(list)
    for charge in charges:
        if charge.kind == VOUCHER:
            intervals[charge.payer].append(charge)
    for consumer in intervals:
        intervals[consumer].sort(key=lambda c: c.cumulative)
    tops = {consumer: [c.cumulative for c in chain] for consumer, chain in intervals.items()}

    result = Assignment()
    latest: dict[tuple[str, int], PaidCall] = {}
    seen: set[str] = set()
    for record, consumer, cumulative in with_cumulative(records):
        if record.call_id in seen:
            continue
        seen.add(record.call_id)
        chain = intervals.get(consumer, [])
        i = bisect.bisect_left(tops.get(consumer, []), cumulative)
        if i < len(chain) and chain[i].cumulative - chain[i].amount < cumulative:
            key = (consumer, cumulative)
            if key in latest:
                result.superseded.append(latest[key].record)
            latest[key] = PaidCall(record, consumer, cumulative, chain[i].seq)
        else:
            result.unpaid.append(record)
    result.members = sorted(latest.values(), key=lambda p: (p.charge_seq, p.consumer.lower(), p.cumulative))
    for paid in result.members:
        key = (paid.charge_seq, paid.consumer)
        result.calls_per_charge[key] = result.calls_per_charge.get(key, 0) + 1
        result.fees_per_charge[key] = result.fees_per_charge.get(key, 0) + paid.record.fee
    return result


@dataclass(frozen=True)
class EpochPolicy:
    """When to close a model's epoch: after `max_calls` paid calls, or once the oldest unsettled
    charge is `max_age_s` seconds old, whichever comes first. With neither, close whenever there
    is anything charged (settle on demand). The epoch always ends on a charge boundary."""

    max_calls: int | None = None
    max_age_s: int | None = None

    def close_at(self, charges: Sequence[Charge], assignment: Assignment, oldest_charge_time: int | None,
                 now: int) -> int | None:
        """The uptoSeq to settle now, or None to keep the epoch open."""
        if not charges:
            return None
        last_seq = max(c.seq for c in charges)
        if self.max_calls is None and self.max_age_s is None:
            return last_seq
        if self.max_calls is not None:
            counted = 0
            for seq in sorted({c.seq for c in charges}):
                counted += sum(n for (s, _), n in assignment.calls_per_charge.items() if s == seq)
                if counted >= self.max_calls:
                    return seq
        if self.max_age_s is not None and oldest_charge_time is not None and now - oldest_charge_time >= self.max_age_s:
            return last_seq
        return None

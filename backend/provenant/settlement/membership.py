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


@dataclass(frozen=True)
class Charge:
    """One consumer's part of a voucher charge, or a direct fee payment (royalty, x402 sweep)."""

    seq: int
    payer: str
    amount: int
    cumulative: int  # the consumer's spent total after this charge; 0 for direct payments
    kind: str
    block: int

    def to_json(self) -> dict[str, object]:
        return {"seq": self.seq, "payer": self.payer, "amount": str(self.amount),
                "cumulative": str(self.cumulative), "kind": self.kind}


def read_charges(contracts: object, model_id: int, from_seq: int, upto_seq: int, from_block: int) -> list[Charge]:
    """The model's charges with from_seq < seq <= upto_seq, from the escrow's events."""
    escrow = contracts.escrow  # type: ignore[attr-defined]
    found: list[Charge] = []
    for log in escrow.events.Charged.get_logs(from_block=from_block, argument_filters={"modelId": model_id}):
        a = log["args"]
        if from_seq < int(a["seq"]) <= upto_seq:
            found.append(Charge(int(a["seq"]), Web3.to_checksum_address(a["consumer"]), int(a["amount"]),
                                int(a["cumulativeAmount"]), VOUCHER, int(log["blockNumber"])))
    for log in escrow.events.FeesPaid.get_logs(from_block=from_block, argument_filters={"modelId": model_id}):
        a = log["args"]
        if from_seq < int(a["seq"]) <= upto_seq:
            found.append(Charge(int(a["seq"]), Web3.to_checksum_address(a["payer"]), int(a["amount"]), 0, DIRECT,
                                int(log["blockNumber"])))
    return sorted(found, key=lambda c: (c.seq, c.kind, c.payer))


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

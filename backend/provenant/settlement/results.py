"""The public epoch results: one canonical JSON document, stored by CID, whose CID is signed.

Proposer, co-signers and `verify epoch` all build it with `render()` from an `EpochContext`
(public chain inputs) and the epoch's calls, so equal inputs give equal bytes. What only the
call log can give (call ids, salted prompt/output hashes, scores) is published per call; every
integer after that follows by the public rule (settlement/epoch.py, settlement/scores.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from provenant.datanets.service import canonical_json
from provenant.settlement.context import EpochContext
from provenant.settlement.epoch import (
    PAYOUT_LEAF_TYPES, CallAttribution, EpochInputs, EpochResult, compute_epoch, payout_leaves,
)
from provenant.settlement.scores import ATOL, RTOL, quantise

FORMAT = "provenant.epoch/4"  # 3: payout leaves are (index, account, amount); 4: classifier call scores sum
# only their examples' positive parts, as receipts do
QUANTISATION = "ppm_k = floor(1e6 * s_k / sum(s)) exactly, over positive per-contribution scores"


@dataclass(frozen=True)
class EpochCall:
    call_id: str
    consumer: str
    fee: int
    charge_seq: int
    cumulative: int
    prompt_hash: str
    output_hash: str
    scores: Mapping[int, float]  # positive per-contribution scores

    def ppm(self) -> dict[int, int]:
        return quantise(self.scores)

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id, "consumer": self.consumer, "fee": str(self.fee), "charge_seq": self.charge_seq,
            "cumulative": str(self.cumulative), "prompt_hash": self.prompt_hash, "output_hash": self.output_hash,
            "scores": {str(k): float(v) for k, v in sorted(self.scores.items())},
            "contribution_ppm": {str(k): v for k, v in sorted(self.ppm().items())},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "EpochCall":
        return cls(call_id=str(raw["call_id"]), consumer=str(raw["consumer"]), fee=int(raw["fee"]),
                   charge_seq=int(raw["charge_seq"]), cumulative=int(raw["cumulative"]),
                   prompt_hash=str(raw["prompt_hash"]), output_hash=str(raw["output_hash"]),
                   scores={int(k): float(v) for k, v in raw["scores"].items()})


@dataclass(frozen=True)
class Rendered:
    result: EpochResult
    inputs: EpochInputs
    document: dict[str, Any]
    data: bytes  # canonical JSON: what is stored, whose CID is signed


def render(ctx: EpochContext, calls: Sequence[EpochCall]) -> Rendered:
    """Aggregate the calls by the public rule and write the full public result."""
    unknown = sorted({k for c in calls for k in c.scores} - set(ctx.contributions))
    if unknown:
        raise ValueError(f"scores name contributions outside model {ctx.model_id}'s lineage: {unknown[:5]}")
    inputs = EpochInputs(
        model_id=ctx.model_id, epoch=ctx.epoch, upto_seq=ctx.upto_seq, fee_total=ctx.fee_total, split=ctx.split,
        calls=[CallAttribution(c.call_id, c.fee, c.ppm()) for c in calls],
        contributions=ctx.contributions, curators=ctx.curators,
    )
    result = compute_epoch(inputs)
    calls_per_charge: dict[tuple[int, str], tuple[int, int]] = {}
    for c in calls:
        n, fees = calls_per_charge.get((c.charge_seq, c.consumer), (0, 0))
        calls_per_charge[(c.charge_seq, c.consumer)] = (n + 1, fees + c.fee)
    charges = []
    for charge in ctx.charges:
        n, fees = calls_per_charge.get((charge.seq, charge.payer), (0, 0))
        # A voucher charge whose calls' fees do not add up to it (calls missing from the log) is
        # shown, not hidden; its fees are still split by the epoch's other calls.
        charges.append({**charge.to_json(), "calls": n, "call_fees": str(fees)})
    document = {
        "format": FORMAT,
        "model_id": ctx.model_id,
        "epoch": ctx.epoch,
        "from_seq": ctx.from_seq,
        "upto_seq": ctx.upto_seq,
        "carried_in": str(ctx.carried_in),
        "fee_total": str(ctx.fee_total),
        "split": vars(ctx.split),
        "inputs": ctx.inputs_json(),
        "rules": {"quantisation": QUANTISATION, "score_rtol": RTOL, "score_atol": ATOL},
        "charges": charges,
        "calls": [c.to_json() for c in calls],
        "protocol_amount": str(result.protocol_amount),
        "owner_amount": str(result.owner_amount),
        "curators_total": str(result.curators_total),
        "contributors_total": str(result.contributors_total),
        "carried_dust": str(result.carried_dust),
        "contribution_amounts": {str(k): str(v) for k, v in sorted(result.contribution_amounts.items())},
        "datanet_amounts": {str(k): str(v) for k, v in sorted(result.datanet_amounts.items())},
        "allocations": {k: str(v) for k, v in sorted(result.allocations.items())},
        "payout_leaf_encoding": PAYOUT_LEAF_TYPES,
        "payout_leaves": [[leaf.index, leaf.account, str(leaf.amount)] for leaf in payout_leaves(result.allocations)],
        "payout_root": result.payout_root,
    }
    return Rendered(result=result, inputs=inputs, document=document, data=canonical_json(document))


def parse(data: bytes) -> dict[str, Any]:
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} results document")
    return document


def calls_of(document: Mapping[str, Any]) -> list[EpochCall]:
    return [EpochCall.from_json(c) for c in document["calls"]]


@dataclass(frozen=True)
class Difference:
    """Where two results first differ: the field, and the first call and account involved."""

    field: str
    call_id: str | None = None
    account: str | None = None
    detail: str = ""

    def describe(self) -> str:
        where = [f"field {self.field!r}"]
        if self.call_id:
            where.append(f"call {self.call_id}")
        if self.account:
            where.append(f"account {self.account}")
        return ", ".join(where) + (f": {self.detail}" if self.detail else "")


def first_difference(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> Difference | None:
    """The first differing call, then account, then any other field; None if equal."""
    calls_a = {c["call_id"]: c for c in theirs.get("calls", [])}
    calls_b = {c["call_id"]: c for c in mine.get("calls", [])}
    call_diff = None
    for a, b in zip(theirs.get("calls", []), mine.get("calls", [])):
        if a != b:
            key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), "?")
            call_diff = Difference("calls", a.get("call_id"), None, f"{key}: proposed {a.get(key)!r}, mine {b.get(key)!r}")
            break
    if call_diff is None and calls_a.keys() != calls_b.keys():
        extra = sorted(calls_a.keys() - calls_b.keys())
        missing = sorted(calls_b.keys() - calls_a.keys())
        call_diff = Difference("calls", (extra or missing)[0], None,
                               "not in my call log" if extra else "in my call log but not in the proposal")
    alloc_a, alloc_b = theirs.get("allocations", {}), mine.get("allocations", {})
    account = next((k for k in sorted(set(alloc_a) | set(alloc_b)) if alloc_a.get(k) != alloc_b.get(k)), None)
    if call_diff is not None:
        return Difference(call_diff.field, call_diff.call_id, account, call_diff.detail)
    if account is not None:
        return Difference("allocations", None, account,
                          f"proposed {alloc_a.get(account, '0')}, mine {alloc_b.get(account, '0')}")
    for key in sorted(set(theirs) | set(mine)):
        if theirs.get(key) != mine.get(key):
            return Difference(key, detail=f"proposed {theirs.get(key)!r:.120}, mine {mine.get(key)!r:.120}")
    return None

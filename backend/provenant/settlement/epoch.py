"""The public aggregation rule: from per-call attribution to per-account payouts.

Pure integer arithmetic on quantised shares, so anyone holding the inputs recomputes the
exact amounts and the exact Merkle root:

1. The epoch's fees F (released from escrow plus dust carried from the last epoch) split by
   the on-chain basis points: protocol = F*p//10^4, owner = F*o//10^4, curators budget =
   F*c//10^4, contributors budget = F - the three others.
2. Contribution weight w_k = sum over calls of fee_call * share_ppm(call, k).
3. Contribution k earns contributors_budget * w_k // W (W = sum of w_k), paid to its contributor.
4. A Datanet d earns curators_budget * w_d // W (w_d = its contributions' weights), split
   equally among its curators, rounding down.
5. Whatever rounding leaves of the two budgets is carried to the next epoch, never lost.
6. The payout tree's leaves are (index, account, amount) for every positive allocation, in
   ascending order of the account string; `index` is the position in that order and the bit
   the settlement contract sets when the leaf is claimed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from provenant.attribution.aggregate import ContributionMeta
from provenant.merkle import StandardMerkleTree

BPS = 10_000
PAYOUT_LEAF_TYPES = ["uint256", "address", "uint256"]  # (leaf index, account, amount)


@dataclass(frozen=True)
class Split:
    protocol_bps: int
    owner_bps: int
    curators_bps: int
    contributors_bps: int


@dataclass(frozen=True)
class CallAttribution:
    call_id: str
    fee: int
    contribution_ppm: Mapping[int, int]


@dataclass(frozen=True)
class EpochInputs:
    model_id: int
    epoch: int
    upto_seq: int
    fee_total: int
    split: Split
    calls: Sequence[CallAttribution]
    contributions: Mapping[int, ContributionMeta]
    curators: Mapping[int, Sequence[str]]  # Datanet id -> curator accounts


@dataclass(frozen=True)
class EpochResult:
    model_id: int
    epoch: int
    upto_seq: int
    fee_total: int
    protocol_amount: int
    owner_amount: int
    curators_total: int
    contributors_total: int
    carried_dust: int
    allocations: dict[str, int]  # account -> amount (curators and contributors)
    contribution_amounts: dict[int, int]
    datanet_amounts: dict[int, int]
    payout_root: str

    def tree(self) -> StandardMerkleTree:
        return payout_tree(self.allocations)

    def to_json(self, inputs: EpochInputs) -> dict[str, Any]:
        """The full public result: every call's attribution and every account's amount."""
        return {
            "format": "provenant.epoch/4",
            "model_id": self.model_id,
            "epoch": self.epoch,
            "upto_seq": self.upto_seq,
            "fee_total": str(self.fee_total),
            "split": vars(inputs.split),
            "protocol_amount": str(self.protocol_amount),
            "owner_amount": str(self.owner_amount),
            "curators_total": str(self.curators_total),
            "contributors_total": str(self.contributors_total),
            "carried_dust": str(self.carried_dust),
            "calls": [
                {"call_id": c.call_id, "fee": str(c.fee),
                 "contribution_ppm": {str(k): v for k, v in sorted(c.contribution_ppm.items())}}
                for c in inputs.calls
            ],
            "contribution_amounts": {str(k): str(v) for k, v in sorted(self.contribution_amounts.items())},
            "datanet_amounts": {str(k): str(v) for k, v in sorted(self.datanet_amounts.items())},
            "allocations": {k: str(v) for k, v in sorted(self.allocations.items())},
            "payout_root": self.payout_root,
            "tree": self.tree().dump(),
        }


@dataclass(frozen=True)
class PayoutLeaf:
    index: int
    account: str
    amount: int

    def value(self) -> list[Any]:
        return [self.index, self.account, self.amount]


def payout_leaves(allocations: Mapping[str, int]) -> list[PayoutLeaf]:
    """The payout tree's leaves by the public rule (6): positive allocations by account."""
    positive = sorted((account, amount) for account, amount in allocations.items() if amount > 0)
    return [PayoutLeaf(i, account, amount) for i, (account, amount) in enumerate(positive)]


def payout_tree(allocations: Mapping[str, int]) -> StandardMerkleTree:
    return StandardMerkleTree.of([leaf.value() for leaf in payout_leaves(allocations)], PAYOUT_LEAF_TYPES)


def payout_leaf_of(allocations: Mapping[str, int], account: str) -> PayoutLeaf | None:
    """The leaf of `account` (None when it has no positive allocation)."""
    return next((leaf for leaf in payout_leaves(allocations) if leaf.account == account), None)


def compute_epoch(inputs: EpochInputs) -> EpochResult:
    f, s = inputs.fee_total, inputs.split
    protocol = f * s.protocol_bps // BPS
    owner = f * s.owner_bps // BPS
    curators_budget = f * s.curators_bps // BPS
    contributors_budget = f - protocol - owner - curators_budget

    weights: dict[int, int] = defaultdict(int)
    for call in inputs.calls:
        for contribution_id, ppm in call.contribution_ppm.items():
            if ppm > 0:
                weights[contribution_id] += call.fee * ppm
    total_weight = sum(weights.values())

    allocations: dict[str, int] = defaultdict(int)
    contribution_amounts: dict[int, int] = {}
    datanet_weights: dict[int, int] = defaultdict(int)
    for contribution_id in sorted(weights):
        meta = inputs.contributions[contribution_id]
        amount = contributors_budget * weights[contribution_id] // total_weight
        contribution_amounts[contribution_id] = amount
        allocations[meta.contributor] += amount
        datanet_weights[meta.datanet_id] += weights[contribution_id]
    contributors_total = sum(contribution_amounts.values())

    datanet_amounts: dict[int, int] = {}
    curators_total = 0
    for datanet_id in sorted(datanet_weights):
        amount = curators_budget * datanet_weights[datanet_id] // total_weight
        curators = sorted(set(inputs.curators.get(datanet_id, ())))
        if not curators:
            continue  # a Datanet without curators leaves its budget to the carried dust
        each = amount // len(curators)
        for curator in curators:
            allocations[curator] += each
        datanet_amounts[datanet_id] = each * len(curators)
        curators_total += each * len(curators)

    allocations = {k: v for k, v in allocations.items() if v > 0}
    root = payout_tree(allocations).root if allocations else "0x" + "00" * 32
    return EpochResult(
        model_id=inputs.model_id,
        epoch=inputs.epoch,
        upto_seq=inputs.upto_seq,
        fee_total=f,
        protocol_amount=protocol,
        owner_amount=owner,
        curators_total=curators_total,
        contributors_total=contributors_total,
        carried_dust=(curators_budget - curators_total) + (contributors_budget - contributors_total),
        allocations=dict(sorted(allocations.items())),
        contribution_amounts=contribution_amounts,
        datanet_amounts=datanet_amounts,
        payout_root=root,
    )

"""The public aggregation rule: exact integer conservation, dust carried, determinism."""

from __future__ import annotations

import random

import pytest

from provenant.attribution.aggregate import ContributionMeta
from provenant.merkle import StandardMerkleTree
from provenant.settlement.epoch import CallAttribution, EpochInputs, Split, compute_epoch, payout_leaves

SPLIT = Split(protocol_bps=500, owner_bps=1500, curators_bps=1000, contributors_bps=7000)


def _inputs(seed: int) -> EpochInputs:
    rng = random.Random(seed)
    contributors = [f"0x{rng.getrandbits(160):040x}" for _ in range(rng.randint(1, 8))]
    contributions = {i: ContributionMeta(contributor=rng.choice(contributors), datanet_id=rng.randint(1, 3))
                     for i in range(1, rng.randint(2, 20))}
    calls = []
    for n in range(rng.randint(1, 40)):
        chosen = rng.sample(sorted(contributions), rng.randint(1, len(contributions)))
        raw = [rng.random() for _ in chosen]
        ppm = {c: int(r / sum(raw) * 1_000_000) for c, r in zip(chosen, raw)}
        calls.append(CallAttribution(call_id=f"0x{n:064x}", fee=rng.randint(1, 10**19), contribution_ppm=ppm))
    curators = {d: [f"0x{rng.getrandbits(160):040x}" for _ in range(rng.randint(1, 3))] for d in (1, 2, 3)}
    fee_total = sum(c.fee for c in calls) + rng.randint(0, 10**6)
    return EpochInputs(model_id=1, epoch=1, upto_seq=1, fee_total=fee_total, split=SPLIT, calls=calls,
                       contributions=contributions, curators=curators)


@pytest.mark.parametrize("seed", range(200))
def test_every_wei_is_accounted_for(seed: int) -> None:
    inputs = _inputs(seed)
    result = compute_epoch(inputs)
    paid = result.protocol_amount + result.owner_amount + result.curators_total + result.contributors_total
    assert paid + result.carried_dust == inputs.fee_total
    assert sum(result.allocations.values()) == result.curators_total + result.contributors_total
    assert result.carried_dust >= 0
    assert result.contributors_total <= inputs.fee_total - result.protocol_amount - result.owner_amount
    # Every allocation is provable against the root.
    tree = result.tree()
    leaves = payout_leaves(result.allocations)
    assert [leaf.index for leaf in leaves] == list(range(len(result.allocations)))
    assert {leaf.account: leaf.amount for leaf in leaves} == result.allocations
    for leaf in leaves:
        assert StandardMerkleTree.verify(result.payout_root, ["uint256", "address", "uint256"], leaf.value(),
                                         tree.get_proof(leaf.value()))


def test_same_inputs_same_root() -> None:
    assert compute_epoch(_inputs(7)).payout_root == compute_epoch(_inputs(7)).payout_root


def test_no_positive_attribution_carries_the_whole_budget() -> None:
    inputs = _inputs(3)
    empty = EpochInputs(**{**inputs.__dict__, "calls": [CallAttribution("0x01", 10, {})]})
    result = compute_epoch(empty)
    assert result.allocations == {}
    assert result.carried_dust == inputs.fee_total - result.protocol_amount - result.owner_amount

"""Settlement's public rules without a chain: call-to-charge membership, the close policy,
exact quantisation, the co-signing tolerance, and the results document."""

from __future__ import annotations

import math
import random

import pytest

from provenant.attribution.aggregate import ContributionMeta
from provenant.serving.calllog import CallLog, CallRecord
from provenant.settlement.context import EpochContext
from provenant.settlement.epoch import Split
from provenant.settlement.membership import DIRECT, VOUCHER, Charge, EpochPolicy, assign
from provenant.settlement.results import EpochCall, first_difference, parse, render
from provenant.settlement.scores import PPM, RTOL, compare_scores, quantise

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
PRICE = 10


def call(n: int, consumer: str = A, cumulative: int | None = None, fee: int = PRICE) -> CallRecord:
    return CallRecord(call_id=f"0x{n:064x}", model_id=1, consumer=consumer, fee=fee, prompt=f"q{n}", salt="0x00",
                      output="billing", timestamp=n, cumulative=cumulative)


def charge(seq: int, consumer: str, cumulative: int, amount: int) -> Charge:
    from web3 import Web3

    return Charge(seq, Web3.to_checksum_address(consumer), amount, cumulative, VOUCHER, seq)


# -- membership ---------------------------------------------------------------------------------
def test_each_call_belongs_to_the_charge_that_paid_it() -> None:
    calls = [call(1, A, 10), call(2, A, 20), call(3, B, 10), call(4, A, 30), call(5, B, 20)]
    direct = Charge(3, charge(3, B, 0, 0).payer, 10**18, 0, DIRECT, 3)  # a royalty: fees, no calls
    charges = [charge(1, A, 20, 20), charge(1, B, 10, 10), charge(2, A, 30, 10), direct]
    got = assign(calls, charges)
    assert [(p.record.call_id[-1], p.charge_seq) for p in got.members] == [("1", 1), ("2", 1), ("3", 1), ("4", 2)]
    assert [r.call_id[-1] for r in got.unpaid] == ["5"]  # answered, not charged yet: waits, is not lost


def test_epoch_ranges_split_calls_without_overlap_or_loss() -> None:
    rng = random.Random(3)
    calls, charges, spent, cum, seq = [], [], {A: 0, B: 0}, {A: 0, B: 0}, 0
    for n in range(200):
        who = rng.choice([A, B])
        cum[who] += PRICE
        calls.append(call(n, who, cum[who]))
        if rng.random() < 0.2:
            seq += 1
            for consumer in (A, B):
                if cum[consumer] > spent[consumer]:
                    charges.append(charge(seq, consumer, cum[consumer], cum[consumer] - spent[consumer]))
                    spent[consumer] = cum[consumer]
    cuts = sorted(rng.sample(range(1, seq), 4)) + [seq]
    seen: list[str] = []
    lower = 0
    for upto in cuts:
        epoch = assign(calls, [c for c in charges if lower < c.seq <= upto])
        seen += [p.record.call_id for p in epoch.members]
        for (s, who), fees in epoch.fees_per_charge.items():  # each charge's calls add up to it exactly
            assert fees == sum(c.amount for c in charges if (c.seq, c.payer) == (s, who))
        lower = upto
    paid = {c.call_id for c in calls if c.cumulative <= spent[c.consumer]}
    assert len(seen) == len(set(seen)) and set(seen) == paid


def test_a_call_logged_twice_counts_once(tmp_path) -> None:
    log = CallLog(tmp_path)
    for record in (call(1, A, 10), call(2, A, 20), call(2, A, 20)):
        log.append(record)
    records = log.read_in_order(1)
    assert [r.call_id[-1] for r in records] == ["1", "2"]
    assert len(assign(records, [charge(1, A, 20, 20)]).members) == 2


def test_a_line_torn_by_a_crash_is_skipped_and_logging_goes_on(tmp_path) -> None:
    log = CallLog(tmp_path)
    log.append(call(1, A, 10))
    path = tmp_path / "model-1.jsonl"
    path.write_text(path.read_text() + '{"call_id": "0x02", "fe')  # the process died mid-write
    assert [r.call_id for r in log.read_in_order(1)] == [call(1).call_id]
    log.append(call(3, A, 20))  # after a restart
    assert [r.call_id for r in log.read_in_order(1)] == [call(1).call_id, call(3).call_id]


def test_old_log_lines_derive_cumulative_from_log_order(tmp_path) -> None:
    log = CallLog(tmp_path)
    for n in range(3):
        log.append(call(n, A))  # no cumulative field, as the foundation's server writes
    assert "cumulative" not in (tmp_path / "model-1.jsonl").read_text()
    got = assign(log.read_in_order(1), [charge(1, A, 20, 20), charge(2, A, 30, 10)])
    assert [(p.cumulative, p.charge_seq) for p in got.members] == [(10, 1), (20, 1), (30, 2)]


def test_an_amount_paid_again_after_a_server_restart_credits_the_later_call() -> None:
    # Calls 1-2 were answered, the server lost its pending vouchers, the consumer paid 10 again.
    calls = [call(1, A, 10), call(2, A, 20), call(3, A, 10)]
    got = assign(calls, [charge(1, A, 10, 10)])
    assert [p.record.call_id[-1] for p in got.members] == ["3"]
    assert [r.call_id[-1] for r in got.superseded] == ["1"]


def test_policy_closes_by_call_count_on_a_charge_boundary_or_by_age() -> None:
    calls = [call(n, A, 10 * n) for n in range(1, 8)]
    charges = [charge(1, A, 30, 30), charge(2, A, 50, 20), charge(3, A, 70, 20)]
    got = assign(calls, charges)
    assert EpochPolicy(max_calls=4).close_at(charges, got, 100, 101) == 2
    assert EpochPolicy(max_calls=8).close_at(charges, got, 100, 101) is None
    assert EpochPolicy(max_calls=8, max_age_s=60).close_at(charges, got, 100, 160) == 3
    assert EpochPolicy(max_age_s=60).close_at(charges, got, 100, 159) is None
    assert EpochPolicy().close_at(charges, got, 100, 100) == 3
    assert EpochPolicy().close_at([], got, None, 100) is None


# -- scores ---------------------------------------------------------------------------------------
def test_quantisation_is_exact_and_ignores_non_positive_scores() -> None:
    assert quantise({1: 1.0, 2: 1.0, 3: 1.0}) == {1: 333_333, 2: 333_333, 3: 333_333}
    assert quantise({1: 0.25, 2: 0.75, 3: -5.0, 4: 0.0}) == {1: 250_000, 2: 750_000}
    assert quantise({1: -1.0}) == {}
    # 0.7 is 0.69999999999999995559... as a double: the exact floor says 699999, not 700000.
    assert quantise({1: 0.3, 2: 0.7}) == {1: 300_000, 2: 699_999}
    with pytest.raises(ValueError):
        quantise({1: math.inf})
    rng = random.Random(1)
    for _ in range(200):
        scores = {k: rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for k in range(rng.randint(1, 30))}
        ppm = quantise(scores)
        assert PPM - len(ppm) < sum(ppm.values()) <= PPM or not ppm


def test_tolerance_accepts_float_noise_and_refuses_a_real_difference() -> None:
    mine = {1: 33.32358166, 2: 28.13646257, 3: 12.29276681}
    noisy = {k: v * (1 + 1e-7) for k, v in mine.items()}
    assert compare_scores(noisy, mine) is None
    shifted = {**mine, 2: mine[2] + 2 * RTOL * sum(mine.values())}
    difference = compare_scores(shifted, mine)
    assert difference is not None and difference.contribution_id == 2
    assert compare_scores({**mine, 4: 0.5}, mine) is not None  # a score I do not see at all
    assert compare_scores({1: -3.0}, {1: -1.0, 2: 0.0}) is None  # non-positive scores carry no money


# -- the results document --------------------------------------------------------------------------
def context(calls: list[EpochCall]) -> EpochContext:
    meta = {1: ContributionMeta(A, 1), 2: ContributionMeta(B, 1), 3: ContributionMeta(B, 2)}
    charges = tuple(charge(1, c.consumer, c.cumulative, c.fee) for c in calls)
    return EpochContext(model_id=1, epoch=1, from_seq=0, upto_seq=1, carried_in=3, fee_total=sum(c.fee for c in calls) + 3,
                        split=Split(500, 1500, 1000, 7000), lineage_root="0x" + "11" * 32, manifest_cid="bafy",
                        adapter_hash="0x" + "22" * 32, snapshot_block=1, contributions=meta,
                        curators={1: ("0x" + "cc" * 20,), 2: ()}, charges=charges)


def epoch_calls() -> list[EpochCall]:
    from web3 import Web3

    return [EpochCall(call_id=f"0x{n:064x}", consumer=Web3.to_checksum_address(A), fee=10**18 + n, charge_seq=1,
                      cumulative=(n + 1) * 10**18, prompt_hash="0x" + "33" * 32, output_hash="0x" + "44" * 32,
                      scores={1: 0.1 * (n + 1), 2: 0.7, 3: 1e-3}) for n in range(5)]


def test_results_are_canonical_and_conserve_every_wei() -> None:
    calls = epoch_calls()
    one, two = render(context(calls), calls), render(context(calls), list(calls))
    assert one.data == two.data
    doc = parse(one.data)
    r = one.result
    paid = r.protocol_amount + r.owner_amount + r.curators_total + r.contributors_total
    assert paid + r.carried_dust == int(doc["fee_total"])
    assert sum(int(v) for v in doc["allocations"].values()) == r.curators_total + r.contributors_total
    assert all(c["contribution_ppm"] == {str(k): v for k, v in quantise(EpochCall.from_json(c).scores).items()}
               for c in doc["calls"])
    assert EpochCall.from_json(doc["calls"][0]).scores == calls[0].scores  # floats round-trip exactly


def test_first_difference_names_the_call_and_the_account() -> None:
    calls = epoch_calls()
    honest = render(context(calls), calls).document
    bent = [calls[0], EpochCall(**{**calls[1].__dict__, "scores": {1: 5.0, 2: 0.7}}), *calls[2:]]
    other = render(context(bent), bent).document
    diff = first_difference(other, honest)
    assert diff is not None and diff.call_id == calls[1].call_id and diff.account is not None
    assert first_difference(honest, honest) is None
    fewer = render(context(calls[:-1]), calls[:-1]).document
    missing = first_difference(fewer, honest)
    assert missing is not None and missing.call_id == calls[-1].call_id


def test_scores_outside_the_lineage_are_refused() -> None:
    calls = [EpochCall(**{**epoch_calls()[0].__dict__, "scores": {99: 1.0}})]
    with pytest.raises(ValueError, match="outside model 1's lineage"):
        render(context(calls), calls)

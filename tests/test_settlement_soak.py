"""Soak: 10,000 paid calls across 5 models and 50 contributors over 20 epochs per model, settled by
`provenant settle-loop` (2-of-3 quorum, co-signers re-scoring every call) while the test kills the
service's whole process group with SIGKILL at random instants and starts it again.

At the end: every model has exactly 20 epochs of exactly 100 calls each, every charged call is in
exactly one settled epoch, every (re)proposal of an epoch carried the same results CID and root
as the one on chain, and every token is accounted for to the wei.

Bounded: loopback only (its own anvil), SOAK_ROUNDS epochs (default 20) of SOAK_CALLS calls per
model (default 100), and a wall-clock limit on the wait for the last epochs. Larger runs:
SOAK_ROUNDS=60 SOAK_CALLS=200 pytest tests/test_settlement_soak.py.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import defaultdict
from typing import Iterator

import pytest

from provenant.serving.calllog import CallLog
from provenant.settlement.attributor import settled_results
from provenant.settlement.claims import claim_all, claimable
from provenant.settlement.claims_index import ClaimsIndex
from provenant.verify import verify_epoch
from test_settlement_soak_support import CONSUMERS, MODELS, SoakWorld, build_soak_world

pytestmark = pytest.mark.slow
ROUNDS = int(os.environ.get("SOAK_ROUNDS", "20"))
CALLS_PER_EPOCH = int(os.environ.get("SOAK_CALLS", "100"))  # per model and round; a multiple of CONSUMERS
MIN_KILLS, MAX_KILLS = 3, 4
SETTLE_WAIT_S = 240  # after the last call is charged
SEED = int(os.environ.get("SOAK_SEED", "7"))
PROPOSED = re.compile(r"proposed model (\d+) epoch (\d+) up to charge \d+: (\d+) calls, root (0x[0-9a-f]+), "
                      r"results (\w+)")


@pytest.fixture()
def world(tmp_path) -> Iterator[SoakWorld]:  # type: ignore[no-untyped-def]
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the other core is the settle-loop's
    w = build_soak_world(tmp_path, calls_per_consumer_model=ROUNDS * CALLS_PER_EPOCH // CONSUMERS)
    yield w
    w.close()
    torch.set_num_threads(threads)


def _all_settled(world: SoakWorld) -> bool:
    return all(world.last_epoch(m) >= ROUNDS for m in world.models.values())


def test_soak_settle_loop_survives_kills_and_accounts_for_every_wei(world: SoakWorld) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    kills: list[float] = []

    next_kill: float | None = None  # scheduled once the running service is up

    def maybe_kill() -> None:
        """SIGKILL the service group at a random instant after it came up (so mid-work), start it again."""
        nonlocal next_kill
        now = time.monotonic()
        if next_kill is None:
            if world.loop_ready():
                next_kill = now + rng.uniform(3.0, 30.0)
        elif now >= next_kill and len(kills) < MAX_KILLS:
            world.kill_loop()
            kills.append(now - started)
            world.start_loop(max_calls=CALLS_PER_EPOCH)
            next_kill = None

    world.start_loop(max_calls=CALLS_PER_EPOCH)
    per_consumer = CALLS_PER_EPOCH // CONSUMERS
    for round_ in range(ROUNDS):
        for j, model_id in enumerate(world.models.values()):
            for consumer in range(CONSUMERS):
                world.serve(model_id, consumer, per_consumer, offset=round_ * 7 + j * 3 + consumer)
            world.charge(model_id)
            maybe_kill()
    traffic_s = time.monotonic() - started

    deadline = time.monotonic() + SETTLE_WAIT_S
    while not _all_settled(world):
        assert time.monotonic() < deadline, (
            f"not settled in time: {[world.last_epoch(m) for m in world.models.values()]}; see "
            f"{world.root / 'settle-loop.log'}")
        if len(kills) < MIN_KILLS:
            maybe_kill()  # mid-work: the service is settling the backlog
        time.sleep(0.5)
    settled_s = time.monotonic() - started
    assert world.stop_loop() == 0  # SIGTERM: a clean exit
    assert len(kills) >= MIN_KILLS

    _check_epochs(world)
    _check_proposals(world)
    claimed = _claim(world, rng)
    _check_conservation(world, claimed)
    _check_no_key_in_any_file(world)
    for model_id in world.models.values():  # anyone can recheck: one random epoch per model
        epoch = rng.randint(1, ROUNDS)
        verdict = verify_epoch(world.client, world.contracts, world.store, model_id, epoch)
        assert verdict.ok, (model_id, epoch, verdict.reasons)
    print(f"\nsoak: {ROUNDS * CALLS_PER_EPOCH * len(MODELS)} calls, {len(MODELS)} models, {ROUNDS} epochs each, "
          f"{len(world.cast.contributors)} contributors; {len(kills)} kills at {[round(k) for k in kills]} s, "
          f"{world.loop_starts} starts; traffic {traffic_s:.0f} s, all settled at {settled_s:.0f} s, "
          f"total {time.monotonic() - started:.0f} s")


def _check_epochs(world: SoakWorld) -> None:
    """Exactly ROUNDS epochs of CALLS_PER_EPOCH calls per model; each logged call in exactly one."""
    log = CallLog(world.server_log)
    for model_id in world.models.values():
        assert world.last_epoch(model_id) == ROUNDS
        results = sorted(settled_results(world.client, world.contracts, world.store, model_id),
                         key=lambda r: r["epoch"])
        assert [r["epoch"] for r in results] == list(range(1, ROUNDS + 1))
        assert all(len(r["calls"]) == CALLS_PER_EPOCH for r in results)
        settled = [c["call_id"] for r in results for c in r["calls"]]
        assert len(settled) == len(set(settled)), "a call was counted in two epochs"
        logged = {r.call_id for r in log.read(model_id)}
        assert len(logged) == ROUNDS * CALLS_PER_EPOCH and set(settled) == logged, "a charged call was lost"


def _check_proposals(world: SoakWorld) -> None:
    """A restart proposes the same epoch: every proposal of (model, epoch) in the service's log
    (across all its lives) names the CID and root that ended up on chain."""
    proposals: dict[tuple[int, int], set[tuple[str, str]]] = defaultdict(set)
    for m, e, _, root, cid in PROPOSED.findall((world.root / "settle-loop.log").read_text()):
        proposals[(int(m), int(e))].add((root, cid))
    events = world.contracts.settlement.events.EpochSettled.get_logs(from_block=world.contracts.manifest.block_number)
    assert len(events) == ROUNDS * len(MODELS)
    for event in events:
        a = event["args"]
        key = (int(a["modelId"]), int(a["epoch"]))
        assert proposals[key] == {("0x" + bytes(a["payoutRoot"]).hex(), a["resultsCid"])}, key


def _claim(world: SoakWorld, rng: random.Random) -> int:
    """Most accounts claim everything in one transaction each; some never claim."""
    token = world.contracts.token.functions
    accounts = world.cast.contributors + world.cast.curators
    holdouts = {a.address for a in rng.sample(world.cast.contributors, 5)} | {world.cast.curators[2].address}
    index = ClaimsIndex.in_home(world.home, world.client, world.contracts, world.store)  # each document parsed once
    claimed = 0
    for account in accounts:
        items = claimable(world.client, world.contracts, world.store, account.address, index)
        assert items, f"{account.address} earned nothing in {ROUNDS} epochs"
        if account.address in holdouts:
            continue
        before = int(world.client.call(token.balanceOf(account.address)))
        claim_all(world.client, world.contracts, account, items)
        got = int(world.client.call(token.balanceOf(account.address))) - before
        assert got == sum(i.amount for i in items)
        assert claimable(world.client, world.contracts, world.store, account.address, index) == []
        claimed += got
    return claimed


def _check_conservation(world: SoakWorld, claimed: int) -> None:
    c, cast = world.client, world.cast
    settlement, escrow, token = (world.contracts.settlement.functions, world.contracts.escrow.functions,
                                 world.contracts.token.functions)
    remaining = dust = unsettled = deposits = fees_in = 0
    for model_id in world.models.values():
        remaining += sum(int(c.call(settlement.epochs(model_id, e))[1]) for e in range(1, ROUNDS + 1))
        dust += int(c.call(settlement.carriedDust(model_id)))
        unsettled += int(c.call(escrow.unsettledFees(model_id)))
        deposits += sum(int(c.call(escrow.depositOf(x.address, model_id))) for x in cast.consumers)
        fees_in += int(c.call(escrow.cumulativeFeesAt(model_id, int(c.call(escrow.chargeSeq(model_id))))))
    results = settled_results(c, world.contracts, world.store)
    owner = sum(int(r["owner_amount"]) for r in results)
    protocol = sum(int(r["protocol_amount"]) for r in results)
    assert fees_in == sum(p * ROUNDS * CALLS_PER_EPOCH for p in world.prices.values())  # every call charged
    assert remaining > 0 and dust > 0  # holdouts' allocations; odd prices leave dust
    assert claimed + remaining + dust + owner + protocol + unsettled == fees_in
    assert deposits + fees_in == world.deposits_in
    balance = lambda a: int(c.call(token.balanceOf(a)))  # noqa: E731
    assert balance(cast.treasury.address) == protocol
    assert balance(cast.builder.address) == owner  # the owner starts with no tokens
    assert balance(world.contracts.settlement.address) == remaining + dust
    assert balance(world.contracts.escrow.address) == deposits + unsettled


def _check_no_key_in_any_file(world: SoakWorld) -> None:
    """Every key in use (the service's and its peers' from their environment, the server's, the
    consumers', the admin's) is absent from every log, config and call log the run wrote."""
    cast = world.cast
    accounts = [cast.admin, cast.builder, cast.server, *cast.attributors, *cast.consumers, *cast.curators]
    secrets = {bytes(a.key).hex(): a.address for a in accounts}
    scanned = 0
    for path in world.root.rglob("*"):
        if not path.is_file() or "store" in path.relative_to(world.root).parts:
            continue  # the content store holds only content addressed by its hash
        text = path.read_bytes().decode("latin-1").lower()
        scanned += 1
        leaked = [address for key, address in secrets.items() if key in text]
        assert not leaked, f"{path.name} holds the private key of {leaked}"  # the address, never the key
    assert scanned >= 3  # the service log, its config, the call log at least


"""Crash consistency of claims: `provenant claim` killed with SIGKILL at 50 random points, for 50
contributors with allocations in two settled epochs of each of five models, then run to the end.

Whatever instant a kill lands on (reading the claims index, between sending a claim and reading its
receipt, while the next claimant's proofs are built), rerunning the command finishes the job: every
contributor ends with exactly what the epochs allotted them, not a wei more or less, nothing is
claimable any more, the claims index in the home folder is intact, and the settlement contract's
balance is exactly what it still owes (unclaimed allocations + carried dust).
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from provenant.serving.calllog import CallLog
from provenant.settlement.attributor import Attributor
from provenant.settlement.claims import claimable
from provenant.settlement.claims_index import ClaimsIndex
from provenant.settlement.quorum import LocalPeer, settle_with_quorum
from test_settlement_soak_support import CONSUMERS, SoakWorld, build_soak_world

pytestmark = pytest.mark.slow
KILLS = int(os.environ.get("CLAIM_KILLS", "50"))
EPOCHS = 2
KILL_WINDOW_S = float(os.environ.get("CLAIM_KILL_WINDOW_S", "2.5"))  # ~1 s of set-up, then ~0.3 s per claimant
SEED = int(os.environ.get("CLAIM_KILL_SEED", "11"))
ZYGOTE = Path(__file__).with_name("claim_crash_zygote.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoakWorld]:
    w = build_soak_world(tmp_path_factory.mktemp("claim-crash"), calls_per_consumer_model=EPOCHS * 2)
    yield w
    w.close()


class Zygote:
    """tests/claim_crash_zygote.py as a child process, its stdout read by a thread into a queue."""

    def __init__(self, world: SoakWorld, claimants: list) -> None:  # type: ignore[type-arg]
        env = {**os.environ, **{f"CLAIM_KEY_{i}": "0x" + bytes(a.key).hex() for i, a in enumerate(claimants)}}
        self.proc = subprocess.Popen([sys.executable, str(ZYGOTE), world.devnet.rpc_url, str(world.home),
                                      str(len(claimants))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready", timeout=120)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            self.output.append(line)
            if line.startswith(prefix):
                return line

    def run(self, kill_after_s: float | None, timeout: float = 300) -> int:
        """One run of the claims; SIGKILL after `kill_after_s` unless it ended first. Its exit code."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        pid = int(self.expect("pid ", timeout=30).split()[1])
        if kill_after_s is not None:
            time.sleep(kill_after_s)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended on its own before the kill; its "exit" line says how
        return int(self.expect("exit ", timeout=timeout).split()[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _settle_every_model_twice(world: SoakWorld) -> None:
    peers = [LocalPeer(Attributor(world.client, world.contracts, world.store, key, CallLog(world.server_log)))
             for key in world.cast.attributors]
    for epoch in range(EPOCHS):
        for model_id in world.models.values():
            for consumer in range(CONSUMERS):
                world.serve(model_id, consumer, 2, offset=7 * epoch + consumer)
            world.charge(model_id)
            settle_with_quorum(world.client, world.contracts, peers[0], peers[1:], model_id)


def test_claims_killed_at_50_random_points_end_with_every_wei_claimed_once(world: SoakWorld) -> None:
    _settle_every_model_twice(world)
    c, token = world.client, world.contracts.token.functions
    index = ClaimsIndex(None, c, world.contracts, world.store)
    owed = {a.address: sum(i.amount for i in claimable(c, world.contracts, world.store, a.address, index))
            for a in world.cast.contributors}
    claimants = [a for a in world.cast.contributors if owed[a.address] > 0]
    items = sum(len(claimable(c, world.contracts, world.store, a.address, index)) for a in claimants)
    assert len(claimants) >= 40 and items > len(claimants)  # many claim several epochs in one transaction
    before = {a.address: int(c.call(token.balanceOf(a.address))) for a in claimants}

    rng = random.Random(SEED)
    zygote = Zygote(world, claimants)
    try:
        kills = finished_early = 0
        while kills < KILLS:
            code = zygote.run(kill_after_s=rng.uniform(0.0, KILL_WINDOW_S))
            if code == -signal.SIGKILL:
                kills += 1
            else:
                assert code == 0, "\n".join(zygote.output[-20:])
                finished_early += 1
        # (a killed child's buffered output dies with it, so ask the chain what the killed runs did)
        claimed_between_kills = sum(not claimable(c, world.contracts, world.store, a.address, index)
                                    for a in claimants)
        assert zygote.run(kill_after_s=None) == 0, "\n".join(zygote.output[-20:])
        progress_lines = [line for line in zygote.output if line.startswith("claimed ")]
        start = len(zygote.output)
        assert zygote.run(kill_after_s=None) == 0
        said = [line for line in zygote.output[start:] if not line.startswith(("pid ", "exit ", "claimant "))]
        assert said == ["nothing to claim"] * len(claimants)
    finally:
        zygote.close()
        Path(os.environ.get("CLAIM_CRASH_LOG", "/dev/null")).write_text("\n".join(zygote.output))

    # Every claimant got exactly what was owed, once, across all the interrupted runs.
    got = {a.address: int(c.call(token.balanceOf(a.address))) - before[a.address] for a in claimants}
    assert got == {a.address: owed[a.address] for a in claimants}
    assert all(claimable(c, world.contracts, world.store, a.address, index) == [] for a in claimants)
    assert claimed_between_kills >= 10 and kills == KILLS  # the kills landed among real claims
    # The claims index the CLI keeps in the home folder survived every kill.
    with sqlite3.connect(world.home / "settlement-index.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The settlement contract holds exactly what it still owes: nothing leaked, nothing stuck.
    settlement = world.contracts.settlement.functions
    remaining = dust = 0
    for model_id in world.models.values():
        remaining += sum(int(c.call(settlement.epochs(model_id, e))[1]) for e in range(1, EPOCHS + 1))
        dust += int(c.call(settlement.carriedDust(model_id)))
    assert int(c.call(token.balanceOf(world.contracts.settlement.address))) == remaining + dust
    print(f"claim crash: {kills} kills, {finished_early} runs ended before their kill, "
          f"{claimed_between_kills} of {len(progress_lines)} claims made by runs later killed, {len(claimants)} claimants")

"""Crash safety: kill -9 the indexer process during a backfill, again and again, restart it, and
end with exactly the tables of a fresh index from the deployment block."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from sqlalchemy import select

from provenant.chain.devnet import Devnet
from provenant.paths import repo_root
from provenant_indexer import dump_tables, open_index
from provenant_indexer import schema as s
from provenant_indexer.writer import FAULT_ENV
from provenant_indexer.workload import World
from test_indexer_support import Databases, act, assert_equals_fresh, dbs, rpc, world  # noqa: F401 - fixtures


def _indexer(rpc_url: str, db: str, manifest: Path, fault: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root() / "backend"), str(repo_root() / "indexer")])}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    # Tiny ranges: many batches, so a kill lands between and inside transactions.
    cmd = [sys.executable, "-m", "provenant_indexer", "index", "--rpc-url", rpc_url, "--db", db, "--manifest",
           str(manifest), "--range-start", "2", "--range-max", "2"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _head(db_engine) -> int:  # type: ignore[no-untyped-def]
    with db_engine.connect() as conn:
        return int(conn.scalar(select(s.checkpoint.c.head_block)) or -1)


def test_kill_9_at_random_points_then_restart_equals_a_fresh_index(world: World, anvil: Devnet, dbs: Databases,
                                                                   tmp_path: Path) -> None:
    act(world, 80)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps(asdict(world.c.manifest)))  # the whole manifest: agent contracts too
    url = dbs.url()
    engine = open_index(url)  # migrate once up front, so the kills land in indexing, not in start-up
    rng = random.Random(13)
    kills, heads = 0, []
    # Deterministic kills inside a batch's transaction first, then kills at random moments.
    plans: list[tuple[str | None, float | None]] = [("mid_batch:7", None), ("before_commit:11", None)]
    plans += [(None, rng.uniform(0.0, 0.3)) for _ in range(4)]
    for fault, delay in plans:
        before = _head(engine)
        proc = _indexer(anvil.rpc_url, url, manifest, fault)
        if delay is not None:
            # Start-up (imports, migration check) takes a second or two: wait until this run has
            # committed a batch, then kill it at a random moment of the backfill that follows.
            while proc.poll() is None and _head(engine) == before:
                time.sleep(0.01)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:
            assert proc.returncode == 0, err.decode()[-2000:]
        heads.append(_head(engine))
    final = _indexer(anvil.rpc_url, url, manifest)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()[-2000:]
    assert kills >= 3, f"only {kills} runs were killed mid-way (heads {heads}): the backfill is too short"
    assert len(set(heads)) > 2, f"the kills did not land at different points: {heads}"
    assert json.loads(out)["indexed_head"] == _head(engine)
    assert dump_tables(engine)["events"], "nothing was indexed"
    assert_equals_fresh(engine, dbs, world.c, anvil.rpc_url)
    engine.dispose()

"""The indexer benchmark of issue 13, all arms over the same cached anvil chain in one run.

Order: the raw limit first and last (to show how much the machine drifted during the run), our
indexer into SQLite and PostgreSQL, the web3.py batched and naive loops, Ponder into PGlite and
PostgreSQL, then head latency (ours and Ponder side by side). Each Python arm is a process of
its own (arms.py) so its peak RSS is its own. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from provenant.chain.compile import compile_contracts
from provenant.paths import repo_root
from provenant_indexer.bench import latency, ponder
from provenant_indexer.bench.chain import ChainInfo, bench_chain

log = logging.getLogger("provenant_indexer.bench")


_created: list[str] = []


def pg_database(admin_url: str) -> str:
    """A fresh database in the server of `admin_url` (every arm gets its own; dropped at the end)."""
    import psycopg

    name = f"provenant_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _created.append(name)
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_databases(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        while _created:
            conn.execute(f'DROP DATABASE IF EXISTS "{_created.pop()}" WITH (FORCE)')


EVENTS_PER_RANGE = 20_000  # what a 2,000-block range holds on a chain of 10 events per block


def span_of(info: ChainInfo) -> int:
    """eth_getLogs range in blocks for this chain: ~EVENTS_PER_RANGE events per request."""
    per_block = info.events / max(1, info.head - info.start_block + 1)
    return max(1, min(2_000, round(EVENTS_PER_RANGE / per_block)))


def _arm(arm: str, info: ChainInfo, db: str = "", head: int | None = None) -> dict[str, Any]:
    chain = json.dumps({"addresses": info.addresses, "start_block": info.start_block,
                        "head": info.head if head is None else head, "span": span_of(info)})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(repo_root() / "backend"), str(repo_root() / "indexer"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "provenant_indexer.bench.arms", arm, "--rpc-url", info.rpc_url,
                           "--db", db, "--chain", chain], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _rate(result: dict[str, Any]) -> dict[str, Any]:
    result["events_per_s"] = round(result["events"] / result["seconds"]) if result["seconds"] else None
    return result


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
            "python": platform.python_version(), "platform": platform.platform()}


def prefix_head(info: ChainInfo, events: int) -> int:
    """The first block by which the chain holds at least `events` events (counted: the set-up
    blocks at the start of the chain hold few)."""
    from provenant_indexer.rpc import JsonRpc

    rpc, seen = JsonRpc(info.rpc_url, timeout=120), 0
    try:
        for block in range(info.start_block, info.head + 1):
            seen += len(rpc.get_logs(block, block, list(info.addresses.values())))
            if seen >= events:
                return block
    finally:
        rpc.close()
    return info.head


def run(events: int, pg_admin_url: str, cache_dir: Path, probes: int, skip: set[str],
        baseline_events: int | None = None) -> dict[str, Any]:
    """`baseline_events`: the web3.py arms (~500 events/s here) read only the chain's first
    blocks holding about that many events, so that the run fits in minutes; their rate is
    compared as a rate."""
    workdir = Path(tempfile.mkdtemp(prefix="provenant-bench-indexer-"))
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
                               "arms": {}, "workdir": str(workdir)}
    arms = results["arms"]
    if "ponder" not in skip:  # npm ci of the Ponder app in bench/ponder, only when its arms run
        ponder.ensure_installed()
    began = time.perf_counter()
    with bench_chain(events, cache_dir, workdir) as info:
        results["chain"] = {"events": info.events, "blocks": info.head - info.start_block + 1, "head": info.head,
                            "range_blocks": span_of(info),
                            "generation": info.generation, "loaded_in_s": round(time.perf_counter() - began, 1)}
        abis = {n: a.abi for n, a in compile_contracts().items()}
        sqlite_db = str(workdir / "ours.sqlite")
        plan: list[tuple[str, str, str]] = [
            # The raw limit right before and after each of our arms: the machine's load (shared
            # with other sessions) moves it 2x within minutes, so each ratio uses its neighbours.
            ("raw eth_getLogs + orjson (first)", "raw-orjson", ""),
            ("raw eth_getLogs + json", "raw-json", ""),
            ("ours -> SQLite", "ours", sqlite_db),
            ("raw eth_getLogs + orjson (between)", "raw-orjson", ""),
            ("ours -> PostgreSQL", "ours", "pg"),
            ("raw eth_getLogs + orjson (after ours)", "raw-orjson", ""),
            # The same, fetching and decoding in a second process (pipeline.py): worth it only
            # where a core is free (it lost on the loaded machine, see bench/RESULTS.md).
            ("ours -> SQLite, fetch process", "ours-fp", str(workdir / "ours-fp.sqlite")),
            ("raw eth_getLogs + orjson (between fetch-process arms)", "raw-orjson", ""),
            ("ours -> PostgreSQL, fetch process", "ours-fp", "pg"),
            ("raw eth_getLogs + orjson (after the fetch-process arms)", "raw-orjson", ""),
            ("web3.py batched -> SQLite", "web3-batched", str(workdir / "web3.sqlite")),
            ("web3.py batched -> PostgreSQL", "web3-batched", "pg"),
            ("naive loop -> SQLite", "naive", str(workdir / "naive.sqlite")),
            ("naive loop -> PostgreSQL", "naive", "pg"),
        ]
        slow_head = prefix_head(info, baseline_events) if baseline_events else None
        for name, arm, db in plan:
            if arm in skip:
                continue
            log.info("arm: %s", name)
            head = slow_head if arm in ("web3-batched", "naive") else None
            arms[name] = _rate(_arm(arm, info, pg_database(pg_admin_url) if db == "pg" else db, head))
            if head is not None:
                arms[name]["blocks"] = f"{info.start_block}..{head} of ..{info.head}"
            log.info("  %s", arms[name])
        keep: ponder.Ponder | None = None
        if "ponder" not in skip:
            ponder.write_chain(info.rpc_url, info.addresses, info.start_block, abis)
            for name, key, db in [("Ponder 1.0 -> PGlite", "ponder-pglite", None),
                                  ("Ponder 1.0 -> PostgreSQL", "ponder-pg", pg_admin_url)]:
                if key in skip:
                    continue
                db = pg_database(db) if db else None
                log.info("arm: %s", name)
                p = ponder.Ponder(workdir, db)
                try:
                    timing = p.backfill(info.head)
                except BaseException:
                    p.stop()
                    raise
                # Ponder indexes every log of the contracts up to the head: the count the raw fetch saw.
                logs = arms.get("raw eth_getLogs + orjson (first)", {}).get("events", info.events)
                arms[name] = _rate({"arm": "ponder", "events": logs, **timing, "peak_rss_mb": p.peak_rss_mb})
                log.info("  %s", arms[name])
                if keep is not None:
                    keep.stop()
                keep = p
        if "raw-orjson" not in skip:
            arms["raw eth_getLogs + orjson (last)"] = _rate(_arm("raw-orjson", info))
        if probes and "latency" not in skip and "ours" not in skip:
            ours = latency.OursServer(info.rpc_url, sqlite_db, info.addresses, info.start_block, workdir)
            try:
                checks: dict[str, latency.Probe] = {"ours (SQLite)": ours.sees}
                if keep is not None:
                    checks["Ponder 1.0 (PostgreSQL)"] = lambda i, p=keep: (p.latest_contribution() or 0) >= i
                log.info("head latency: %d probes", probes)
                results["head_latency"] = latency.measure(info.rpc_url, info.addresses["DatanetRegistry"],
                                                          abis["DatanetRegistry"], checks, probes)
            finally:
                ours.stop()
        if keep is not None:
            keep.stop()
    drop_databases(pg_admin_url)
    results["ratios"] = ratios(arms)
    return results


def ratios(arms: dict[str, Any]) -> dict[str, float | None]:
    def rate(name: str) -> float | None:
        return arms.get(name, {}).get("events_per_s")

    def limit(*names: str) -> float | None:
        """The fastest of the raw runs next to an arm (the strictest limit to compare with)."""
        return max(filter(None, [rate(n) for n in names]), default=None)

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    return {
        "ours SQLite / raw limit (runs before and after it)": div(
            rate("ours -> SQLite"), limit("raw eth_getLogs + orjson (first)", "raw eth_getLogs + json",
                                          "raw eth_getLogs + orjson (between)")),
        "ours PostgreSQL / raw limit (runs before and after it)": div(
            rate("ours -> PostgreSQL"), limit("raw eth_getLogs + orjson (between)",
                                              "raw eth_getLogs + orjson (after ours)")),
        "ours SQLite / raw limit (fastest raw run of the whole run)": div(
            rate("ours -> SQLite"), limit(*[n for n in arms if n.startswith("raw")])),
        "ours PostgreSQL / raw limit (fastest raw run of the whole run)": div(
            rate("ours -> PostgreSQL"), limit(*[n for n in arms if n.startswith("raw")])),
        "ours SQLite / Ponder PGlite": div(rate("ours -> SQLite"), rate("Ponder 1.0 -> PGlite")),
        "ours PostgreSQL / Ponder PostgreSQL": div(rate("ours -> PostgreSQL"), rate("Ponder 1.0 -> PostgreSQL")),
        "ours SQLite / web3.py batched SQLite": div(rate("ours -> SQLite"), rate("web3.py batched -> SQLite")),
        "ours PostgreSQL / web3.py batched PostgreSQL": div(rate("ours -> PostgreSQL"),
                                                             rate("web3.py batched -> PostgreSQL")),
    }

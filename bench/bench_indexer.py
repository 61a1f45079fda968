#!/usr/bin/env python3
"""The indexer benchmark (issue 13), one command:

    .venv/bin/python bench/bench_indexer.py [--events 200000] [--pg postgresql://postgres@127.0.0.1:5432/postgres]

Makes (or loads from bench/.cache/indexer) an anvil chain with >= --events project events, then
runs every arm over the same blocks: the raw eth_getLogs limit, our indexer into SQLite and
PostgreSQL, web3.py batched and naive loops, Ponder 1.0 into PGlite and PostgreSQL (bench/ponder,
installed here with `npm ci` when missing), and head latency. Writes its section to bench/.cache/indexer/RESULTS.md (copied into bench/RESULTS.md)
and the raw figures as JSON beside it in the cache. Starts a throw-away PostgreSQL first when
none answers (scripts/ensure-postgres.sh). Measures only: it never asserts a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "indexer")]

from provenant_indexer.bench.report import markdown  # noqa: E402
from provenant_indexer.bench.run import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="project events on the chain (default 200,000)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL admin URL; every arm gets a fresh database in it")
    parser.add_argument("--probes", type=int, default=40, help="head-latency probes (one per second or so)")
    parser.add_argument("--baseline-events", type=int, default=25_000,
                        help="the web3.py batched and naive arms read only the first blocks holding about this many "
                             "events (they run at ~500 events/s here; 0: the whole chain)")
    parser.add_argument("--skip", default="", help="comma-separated arms to leave out: raw-json, ours-fp (the fetch-process arms), web3-batched, naive, ponder (both), "
                             "ponder-pglite, ponder-pg, latency")
    parser.add_argument("--cache", default=str(ROOT / "bench" / ".cache" / "indexer"), help="chain cache directory")
    parser.add_argument("--out", default=str(ROOT / "bench" / ".cache" / "indexer" / "RESULTS.md"), help="Markdown written here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("httpx", "alembic", "provenant_indexer.rpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-postgres.sh")], check=True)
    results = run(args.events, args.pg, Path(args.cache), args.probes, {s for s in args.skip.split(",") if s},
                  args.baseline_events or None)
    command = "python bench/bench_indexer.py" + (f" --events {args.events}" if args.events != 200_000 else "")
    Path(args.out).write_text(markdown(results, command))
    (Path(args.cache) / "last-results.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({"arms": results["arms"], "ratios": results["ratios"],
                      "head_latency": results.get("head_latency")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

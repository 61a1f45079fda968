#!/usr/bin/env python3
"""Backfill speed of the indexer beside the raw eth_getLogs limit, on a fresh anvil chain.

    .venv/bin/python scripts/bench_indexer.py --events 5000 [--pg postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "indexer")]

from provenant_indexer.bench import run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="project events to put on the chain first")
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL; a fresh database is created in it")
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.pg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

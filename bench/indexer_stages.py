#!/usr/bin/env python3
"""Where the indexer's time goes (issue 13): each stage of our SQLite and PostgreSQL paths timed
alone, in one thread, over the benchmark's cached chain (bench_indexer.py makes it):

    .venv/bin/python bench/indexer_stages.py [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--dbs sqlite]

Per eth_getLogs range (the bench's span): transfer (the node's answer read as bytes), JSON
parsing (orjson), the reorg checks' header calls, ABI decoding with the events rows
(handlers.decode_logs), folding into rows (handlers.fold), and the database transaction (writes,
hashes, checkpoint, commit). Each stage's wall time, and under "cpu_s" this process's CPU time in
it (on a shared machine the wall times move with the load; the CPU times much less: they leave
out the node's and the database server's work). Stages run one after the other here; the
indexer overlaps fetching and decoding with the writes (pipeline.py). Measures only.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "indexer")]

import httpx  # noqa: E402
import orjson  # noqa: E402

from provenant_indexer.abi import EventTable  # noqa: E402
from provenant_indexer.bench.chain import bench_chain  # noqa: E402
from provenant_indexer.bench.run import drop_databases, pg_database, span_of  # noqa: E402
from provenant_indexer.db import open_index  # noqa: E402
from provenant_indexer.handlers import decode_logs, fold  # noqa: E402
from provenant_indexer.pipeline import Ready  # noqa: E402
from provenant_indexer.rpc import JsonRpc  # noqa: E402
from provenant_indexer.writer import lookup_contributors, write_batch  # noqa: E402


def stages(db: str, info, table: EventTable) -> dict[str, float]:  # type: ignore[no-untyped-def]
    engine = open_index(db)
    rpc, http = JsonRpc(info.rpc_url), httpx.Client(timeout=120)
    span, addresses = span_of(info), table.addresses
    t = dict.fromkeys(["transfer", "json", "headers", "decode", "fold", "write+commit"], 0.0)
    events = 0
    from provenant_indexer.indexer import Indexer
    from provenant_indexer.config import IndexerConfig

    Indexer(engine, IndexerConfig(rpc_url=info.rpc_url, addresses=info.addresses, start_block=info.start_block),
            rpc=rpc, table=table)  # the checkpoint row
    cpu = dict.fromkeys(t, 0.0)
    clock = time.process_time  # this process's CPU: on a shared machine, the work itself
    for a in range(info.start_block, info.head + 1, span):
        b = min(info.head, a + span - 1)
        c0, p0 = time.perf_counter(), clock()
        headers = rpc.headers(list(range(max(a, b - 64), b + 1)))
        c1, p1 = time.perf_counter(), clock()
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                "params": [{"fromBlock": hex(a), "toBlock": hex(b), "address": addresses}]}
        raw = http.post(info.rpc_url, content=orjson.dumps(body), headers={"content-type": "application/json"}).content
        c2, p2 = time.perf_counter(), clock()
        logs = orjson.loads(raw)["result"]
        c3, p3 = time.perf_counter(), clock()
        decoded = decode_logs(logs, table)
        c4, p4 = time.perf_counter(), clock()
        with engine.begin() as conn:
            changes = fold(decoded, lambda ids: lookup_contributors(conn, ids))
            c5, p5 = time.perf_counter(), clock()
            write_batch(conn, changes, Ready(a, b, [headers[n] for n in sorted(headers)], decoded), 65)
        c6, p6 = time.perf_counter(), clock()
        events += len(logs)
        for k, v, w in zip(t, [c2 - c1, c3 - c2, c1 - c0, c4 - c3, c5 - c4, c6 - c5],
                           [p2 - p1, p3 - p2, p1 - p0, p4 - p3, p5 - p4, p6 - p5]):
            t[k] += v
            cpu[k] += w
    http.close()
    rpc.close()
    engine.dispose()
    return {"events": events, **{k: round(v, 3) for k, v in t.items()}, "total": round(sum(t.values()), 3),
            "cpu_s": {**{k: round(v, 3) for k, v in cpu.items()}, "total": round(sum(cpu.values()), 3)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--cache", default=str(ROOT / "bench" / ".cache" / "indexer"))
    p.add_argument("--dbs", default="sqlite,postgresql", help="which databases to time (comma-separated)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="provenant-stages-"))
    out = {}
    with bench_chain(args.events, Path(args.cache), workdir) as info:
        table = EventTable.from_artifacts(info.addresses)
        if "sqlite" in args.dbs:
            out["SQLite"] = stages(str(workdir / "stages.sqlite"), info, table)
        if "postgresql" in args.dbs:
            out["PostgreSQL"] = stages(pg_database(args.pg), info, table)
    if "postgresql" in args.dbs:
        drop_databases(args.pg)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

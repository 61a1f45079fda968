"""One benchmark arm per process: `python -m provenant_indexer.bench.arms ARM --rpc-url ... --db ...`
prints one JSON line {arm, events, seconds, peak_rss_mb}, so each arm's peak memory is its own.

Arms:
Every arm reads the chain in the same eth_getLogs ranges, `span` blocks each (run.py sizes them
to ~20,000 events: what 2,000-block ranges hold on a chain of 10 events per block).

- ours: the indexer (reorg checks, block hashes, atomic checkpoints all on) from the deployment
  block to the head, its adaptive range capped at `span`.
- web3-batched: eth_getLogs over the same ranges through web3.py, logs decoded by web3.py's
  contract events, one `executemany` per range into an events table.
- naive: the same fetch and decoding, one INSERT statement per log.
- raw-orjson / raw-json: the node's limit: JSON-RPC eth_getLogs over the same ranges, the answer
  parsed (orjson / the standard library's json) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import time
from typing import Any, Callable, Iterator

import httpx
import orjson

def _ranges(start: int, head: int, span: int) -> Iterator[tuple[int, int]]:
    for a in range(start, head + 1, span):
        yield a, min(head, a + span - 1)


def raw(rpc_url: str, addresses: list[str], start: int, head: int, span: int, parse: Callable[[bytes], Any]) -> int:
    total = 0
    with httpx.Client(timeout=120) as http:
        for a, b in _ranges(start, head, span):
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                    "params": [{"fromBlock": hex(a), "toBlock": hex(b), "address": addresses}]}
            total += len(parse(http.post(rpc_url, content=orjson.dumps(body),
                                         headers={"content-type": "application/json"}).content)["result"])
    return total


def ours(rpc_url: str, db: str, addresses: dict[str, str], start: int, span: int,
         fetch_process: bool = False) -> tuple[int, float]:
    """(events, set-up seconds): migrations and the ABI table are ready before the clock runs.
    `fetch_process`: fetch and decode in a second process (IndexerConfig.fetch_process)."""
    from provenant_indexer.config import IndexerConfig
    from provenant_indexer.db import open_index
    from provenant_indexer.indexer import Indexer

    began = time.perf_counter()
    engine = open_index(db)
    indexer = Indexer(engine, IndexerConfig(rpc_url=rpc_url, addresses=addresses, start_block=start,
                                                    range_start=span, range_max=span, fetch_process=fetch_process))
    try:
        setup = time.perf_counter() - began
        return indexer.run_until_head(), setup
    finally:
        indexer.close()
        engine.dispose()


# -- the web3.py arms ------------------------------------------------------------------------------
_DDL = ("CREATE TABLE IF NOT EXISTS web3_events (block_number BIGINT NOT NULL, log_index INTEGER NOT NULL, "
        "tx_hash TEXT NOT NULL, address TEXT NOT NULL, event TEXT NOT NULL, args TEXT NOT NULL, "
        "PRIMARY KEY (block_number, log_index))")


def _connect(db: str) -> tuple[Any, str]:
    if "://" in db:
        import psycopg

        return psycopg.connect(db.replace("postgresql+psycopg://", "postgresql://")), "%s"
    return sqlite3.connect(db), "?"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) > 2**53 else value
    return value


def web3_arm(rpc_url: str, db: str, abis: dict[str, list[dict[str, Any]]], addresses: dict[str, str], start: int,
             head: int, span: int, row_by_row: bool) -> int:
    from eth_utils import event_abi_to_log_topic
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 120}))
    decoders: dict[tuple[str, bytes], Any] = {}
    for name, address in addresses.items():
        contract = w3.eth.contract(address=Web3.to_checksum_address(address), abi=abis[name])
        for item in abis[name]:
            if item.get("type") == "event":
                decoders[(address.lower(), event_abi_to_log_topic(item))] = contract.events[item["name"]]()
    conn, mark = _connect(db)
    conn.execute(_DDL)
    conn.commit()
    sql = f"INSERT INTO web3_events VALUES ({', '.join([mark] * 6)})"
    checksummed = [Web3.to_checksum_address(a) for a in addresses.values()]
    total = 0
    for a, b in _ranges(start, head, span):
        logs = w3.eth.get_logs({"fromBlock": a, "toBlock": b, "address": checksummed})
        rows = []
        for entry in logs:
            decoded = decoders[(entry["address"].lower(), bytes(entry["topics"][0]))].process_log(entry)
            rows.append((decoded["blockNumber"], decoded["logIndex"], "0x" + bytes(decoded["transactionHash"]).hex(),
                         decoded["address"].lower(), decoded["event"],
                         json.dumps({k: _jsonable(v) for k, v in decoded["args"].items()})))
        cursor = conn.cursor()
        if row_by_row:
            for row in rows:
                cursor.execute(sql, row)
        else:
            cursor.executemany(sql, rows)
        conn.commit()
        total += len(rows)
    conn.close()
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("arm", choices=["ours", "ours-fp", "web3-batched", "naive", "raw-orjson", "raw-json"])
    p.add_argument("--rpc-url", required=True)
    p.add_argument("--db", default="")
    p.add_argument("--chain", required=True, help="JSON: {addresses, start_block, head}")
    args = p.parse_args(argv)
    chain = json.loads(args.chain)
    addresses: dict[str, str] = chain["addresses"]
    start, head, span = int(chain["start_block"]), int(chain["head"]), int(chain["span"])
    began, setup = time.perf_counter(), 0.0
    if args.arm in ("ours", "ours-fp"):
        events, setup = ours(args.rpc_url, args.db, addresses, start, span, fetch_process=args.arm == "ours-fp")
    elif args.arm.startswith("raw"):
        events = raw(args.rpc_url, list(addresses.values()), start, head, span,
                     orjson.loads if args.arm == "raw-orjson" else json.loads)
    else:
        from provenant.chain.compile import compile_contracts

        abis = {n: a.abi for n, a in compile_contracts().items()}
        events = web3_arm(args.rpc_url, args.db, abis, addresses, start, head, span,
                          row_by_row=args.arm == "naive")
    seconds = time.perf_counter() - began - setup
    # Our arm's fetch process (pipeline.py) is a child: its peak is added (an upper bound of the pair's).
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if args.arm.startswith("ours") else 0.0
    print(json.dumps({"arm": args.arm, "events": events, "seconds": round(seconds, 3), "setup_s": round(setup, 3),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + children, 1),
                      "peak_rss_fetch_process_mb": round(children, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

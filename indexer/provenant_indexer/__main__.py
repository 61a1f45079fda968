"""`python -m provenant_indexer index|serve|dump`: the indexer and its API, on their own."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from provenant_indexer.config import IndexerConfig
from provenant_indexer.db import open_index
from provenant_indexer.dump import dump_tables
from provenant_indexer.indexer import Indexer
from provenant_indexer.reorg import DeepReorgError
from provenant_indexer.rpc import JsonRpc


def _manifest(args: argparse.Namespace) -> Path:
    if args.manifest:
        return Path(args.manifest)
    from provenant.chain.deploy import DeploymentManifest

    return DeploymentManifest.path_for(Path(args.home).expanduser(), JsonRpc(args.rpc_url).chain_id())


def _config(args: argparse.Namespace) -> IndexerConfig:
    return IndexerConfig.from_manifest(
        args.rpc_url, _manifest(args), finality_depth=args.finality_depth, range_start=args.range_start,
        range_max=max(args.range_max, args.range_start), poll_interval=args.poll_interval,
        fetch_process=getattr(args, "fetch_process", False),
        confirmations=args.confirmations)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc-url", required=True, help="JSON-RPC endpoint of the chain")
    p.add_argument("--db", required=True, help="SQLAlchemy URL (postgresql://...) or a SQLite file path")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--manifest", help="deployment manifest JSON (addresses and deployment block)")
    where.add_argument("--home", help="provenant home holding deployments/<chain id>.json")
    p.add_argument("--finality-depth", type=int, default=64, help="deepest reorg rolled back (default 64)")
    p.add_argument("--range-start", type=int, default=2000, help="first eth_getLogs range in blocks")
    p.add_argument("--range-max", type=int, default=2000, help="largest eth_getLogs range in blocks")
    p.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls at the head")
    p.add_argument("--confirmations", type=int, default=0, help="blocks behind the head left unindexed")
    p.add_argument("--fetch-process", action="store_true",
                   help="during a backfill, fetch and decode the next range in a second process (a remote node, idle cores)")


def _index(args: argparse.Namespace) -> int:
    engine = open_index(args.db)
    indexer = Indexer(engine, _config(args))
    if not args.follow:
        count = indexer.run_until_head()
        print(json.dumps({"indexed_head": indexer.head()[0], "events": count}))
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        indexer.follow(stop)
    except KeyboardInterrupt:
        pass
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from provenant_indexer.api import create_app

    engine = open_index(args.db)
    indexer = Indexer(engine, _config(args))
    stop = threading.Event()
    results = None
    if args.store:
        from provenant.store import open_store

        results = open_store(args.store).get

    def loop() -> None:
        try:
            indexer.follow(stop)
        except DeepReorgError:
            pass  # already logged as critical and reported by /health; the API keeps answering

    threading.Thread(target=loop, name="indexer", daemon=True).start()
    try:
        uvicorn.run(create_app(engine, status=indexer.status, rpc_url=args.rpc_url, results=results),
                    host=args.host, port=args.port,
                    log_level="warning")
    finally:
        stop.set()
    return 0


def _dump(args: argparse.Namespace) -> int:
    engine = open_index(args.db)
    json.dump(dump_tables(engine, include_history=True), sys.stdout, default=str, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provenant_indexer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index the chain (to the head, or --follow it)")
    _common(index)
    index.add_argument("--follow", action="store_true", help="keep following the head")
    serve = sub.add_parser("serve", help="follow the chain and serve the query API")
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8090)
    serve.add_argument("--store", default=None, help="content store (kubo URL or blockstore directory) holding the "
                       "epochs' results documents, for earnings per Datanet")
    dump = sub.add_parser("dump", help="print every table as JSON")
    dump.add_argument("--db", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per RPC request otherwise
    try:
        return {"index": _index, "serve": _serve, "dump": _dump}[args.command](args)
    except DeepReorgError as exc:
        print(f"HALTED: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

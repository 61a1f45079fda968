"""Backfill speed on one anvil chain: the raw eth_getLogs limit beside our SQLite and PostgreSQL
paths, all reading the same blocks in the same run (absolute figures move 2-3x between machines).

Used by scripts/bench_indexer.py; the full benchmark of issue 13 (200,000 events, Ponder side by
side, head latency) builds on this.
"""

from __future__ import annotations

import resource
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx

from provenant.chain.client import ChainClient
from provenant.chain.deploy import deploy_all
from provenant.chain.devnet import Devnet, free_port
from provenant.paths import node_bin
from provenant.chain.keys import dev_accounts
from provenant_indexer.config import IndexerConfig
from provenant_indexer.db import open_index
from provenant_indexer.indexer import Indexer
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload import World


@dataclass(frozen=True)
class Measurement:
    name: str
    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": round(self.events_per_s)}


def make_chain(rpc: JsonRpc, world: World, events: int, per_block: int = 10) -> int:
    """Send random project transactions until the chain holds at least `events` project events.
    anvil spends ~6 ms per mined block, so transactions are packed `per_block` to a block (anvil
    must run with `--order fifo`, or a charge may be mined before the deposit it spends)."""
    world.wait = False
    world.setup()
    rpc.call("evm_setAutomine", [False])
    rpc.call("evm_setBlockGasLimit", [hex(2**40)])
    addresses = list(world.c.manifest.addresses.values())
    count = 0
    try:
        while count < events:
            for _ in range(50):
                for _ in range(per_block):
                    world.random_action()
                rpc.call("evm_mine")
            world.sender.flush()
            count = len(rpc.get_logs(world.c.manifest.block_number, rpc.block_number(), addresses))
    finally:
        rpc.call("evm_setAutomine", [True])
    return count


@contextmanager
def fifo_anvil(log_path: Path) -> Iterator[Devnet]:
    """anvil as start_anvil runs it, plus `--order fifo` (see make_chain)."""
    port = free_port()
    args = [str(node_bin("anvil")), "--host", "127.0.0.1", "--port", str(port), "--accounts", "20", "--silent",
            "--chain-id", "31337", "--order", "fifo"]
    with open(log_path, "ab") as log:
        devnet = Devnet(process=subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT), port=port)
        try:
            for _ in range(300):
                try:
                    if httpx.post(devnet.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}).is_success:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield devnet
        finally:
            devnet.stop()


def raw_fetch(rpc: JsonRpc, start: int, head: int, addresses: list[str], span: int = 2000) -> Measurement:
    """The node's limit: eth_getLogs over `span`-block ranges, JSON parsed, nothing else."""
    began, total = time.perf_counter(), 0
    for a in range(start, head + 1, span):
        total += len(rpc.get_logs(a, min(head, a + span - 1), addresses))
    return Measurement("raw eth_getLogs (orjson)", total, time.perf_counter() - began)


def backfill(name: str, url: str, config: IndexerConfig) -> Measurement:
    engine = open_index(url)
    indexer = Indexer(engine, config)
    began = time.perf_counter()
    count = indexer.run_until_head()
    seconds = time.perf_counter() - began
    engine.dispose()
    return Measurement(name, count, seconds)


def _pg_database(admin_url: str) -> str:
    import psycopg

    name = f"provenant_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def run(events: int, pg_admin_url: str | None, workdir: Path | None = None) -> dict[str, Any]:
    workdir = Path(workdir or tempfile.mkdtemp(prefix="provenant-bench-"))
    with fifo_anvil(workdir / "anvil.log") as devnet:
        client = ChainClient(devnet.rpc_url)
        contracts = deploy_all(client, dev_accounts()[0], workdir / "home", protocol_treasury=dev_accounts()[1].address)
        rpc = JsonRpc(devnet.rpc_url)
        made = time.perf_counter()
        total = make_chain(rpc, World(rpc, contracts, seed=1), events)
        made = time.perf_counter() - made
        head = rpc.block_number()
        config = IndexerConfig.from_manifest(devnet.rpc_url, {"addresses": contracts.manifest.addresses,
                                                              "block_number": contracts.manifest.block_number})
        results = [raw_fetch(rpc, config.start_block, head, list(config.addresses.values()))]
        results.append(backfill("indexer -> SQLite", str(workdir / f"bench-{uuid.uuid4().hex[:6]}.sqlite"), config))
        if pg_admin_url:
            results.append(backfill("indexer -> PostgreSQL", _pg_database(pg_admin_url), config))
        results.append(raw_fetch(rpc, config.start_block, head, list(config.addresses.values())))
    return {
        "events_on_chain": total, "blocks": head - config.start_block + 1, "chain_made_in_s": round(made, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "results": [r.as_dict() for r in results],
    }

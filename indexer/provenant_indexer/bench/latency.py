"""Head latency: anvil mines a block every second; a probe contribution is sent at a random
moment, and the time from its block being mined to each indexer's API showing it is measured.

Ours is `python -m provenant_indexer serve` (the indexer following the head plus its API, over
the SQLite database its backfill arm wrote); Ponder is the `ponder start` of the PostgreSQL arm,
asked through a small route of its own API (bench/ponder/src/api). Both poll the node every
250 ms and run at the same time against the same probes. Latency in blocks is the chain's head
when the API first showed the probe minus the probe's block (0: seen within its own block's
second).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload.sender import Sender

Probe = Callable[[int], bool]  # contribution id -> visible in that indexer's API


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    missed: int = 0

    @staticmethod
    def _pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    def summary(self) -> dict[str, float | int | None]:
        return {"probes": len(self.ms), "missed": self.missed,
                "p50_ms": self._pct(self.ms, 0.5), "p99_ms": self._pct(self.ms, 0.99),
                "p50_blocks": self._pct([float(b) for b in self.blocks], 0.5),
                "p99_blocks": self._pct([float(b) for b in self.blocks], 0.99), "max_blocks": max(self.blocks, default=None)}


class OursServer:
    def __init__(self, rpc_url: str, db: str, addresses: dict[str, str], start_block: int, workdir: Path) -> None:
        manifest = workdir / "manifest.json"
        manifest.write_text(json.dumps({"addresses": addresses, "block_number": start_block}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(workdir / "ours-serve.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "provenant_indexer", "serve", "--rpc-url", rpc_url, "--db", db, "--manifest",
             str(manifest), "--poll-interval", "0.25", "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"our API did not start; see {workdir / 'ours-serve.log'}")
            time.sleep(0.1)

    def sees(self, contribution_id: int) -> bool:
        try:
            return httpx.get(f"{self.url}/contributions/{contribution_id}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def measure(rpc_url: str, registry: str, registry_abi: list[dict], probes: dict[str, Probe], count: int,
            seed: int = 3) -> dict[str, dict[str, float | int | None]]:
    """`count` probe contributions, one at a random moment of each block interval."""
    from web3 import Web3

    rpc = JsonRpc(rpc_url)
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    registry_c = w3.eth.contract(address=Web3.to_checksum_address(registry), abi=registry_abi)
    contributor = dev_accounts(20)[17]
    sender = Sender(rpc, rpc.chain_id())
    rng = random.Random(seed)
    samples = {name: Samples() for name in probes}
    rpc.call("evm_setAutomine", [False])
    rpc.call("evm_setIntervalMining", [1])
    try:
        next_id = int(registry_c.functions.contributionCount().call()) + 1
        for n in range(count):
            time.sleep(rng.uniform(0.0, 1.0))
            content = (10**9 + n).to_bytes(32, "big")
            tx = sender.send_data(contributor, registry_c.address, registry_c.encode_abi(
                "contribute", [1, content, f"bafkreiprobe{n}", 1000, 10]), gas=500_000, wait=False)
            sender.pending.clear()
            mined_at, block = _wait_mined(rpc, tx)
            seen: dict[str, float] = {}
            while len(seen) < len(probes) and time.perf_counter() - mined_at < 15:
                for name, probe in probes.items():
                    if name not in seen and probe(next_id):
                        seen[name] = time.perf_counter()
                        head = rpc.block_number()
                        samples[name].ms.append(round((seen[name] - mined_at) * 1000, 1))
                        samples[name].blocks.append(head - block)
                time.sleep(0.02)
            for name in probes:
                if name not in seen:
                    samples[name].missed += 1
            next_id += 1
    finally:
        rpc.call("evm_setIntervalMining", [0])
        rpc.call("evm_setAutomine", [True])
        rpc.close()
    return {name: s.summary() for name, s in samples.items()}


def _wait_mined(rpc: JsonRpc, tx: str) -> tuple[float, int]:
    """When the probe's block was first visible at the node, and its number."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        receipt = rpc.call("eth_getTransactionReceipt", [tx])
        if receipt is not None:
            if int(receipt["status"], 16) != 1:
                raise RuntimeError(f"probe contribution {tx} reverted")
            return time.perf_counter(), int(receipt["blockNumber"], 16)
        time.sleep(0.005)
    raise RuntimeError(f"probe contribution {tx} was not mined within 10 s")

"""The benchmark's chain: deployed contracts plus >= N project events, made once and cached.

Generation (workload/bulk_chain.py) runs on an anvil started with `--dump-state`; anvil writes
its state, blocks and receipts when it exits, and later runs start anvil with `--load-state`
from the cache, so a rerun skips the minute of generation. The cache key covers everything
that shapes the chain: the contract sources, the driver, the generator and the event count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from provenant.chain.client import ChainClient
from provenant.chain.compile import compile_contracts
from provenant.chain.deploy import DEFAULT_SPLIT_BPS, TOKEN_SUPPLY_WEI, Contracts, DeploymentManifest
from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant.paths import node_bin, repo_root
from provenant_indexer.rpc import JsonRpc
from provenant_indexer.workload import bulk_chain, driver

log = logging.getLogger("provenant_indexer.bench")


@dataclass(frozen=True)
class ChainInfo:
    rpc_url: str
    addresses: dict[str, str]
    start_block: int
    head: int
    events: int
    generation: dict[str, Any]  # bulk_chain.Summary of the run that made it (cached with it)


def cache_key(events: int) -> str:
    h = hashlib.sha256()
    sources = sorted((repo_root() / "contracts" / "src").glob("*.sol"))
    for path in [*sources, Path(driver.__file__), driver.SOURCE, Path(bulk_chain.__file__)]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(str(events).encode())
    return h.hexdigest()[:16]


def anvil_binary() -> Path:
    """The platform binary under the npm wrapper: a signal then reaches anvil itself (the
    wrapper may exit before anvil has written --dump-state)."""
    native = sorted((repo_root() / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    return native[0] if native else node_bin("anvil")


class Anvil:
    """anvil on a free loopback port, its output in a log file (it prints dev keys otherwise)."""

    def __init__(self, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        args = [str(anvil_binary()), "--host", "127.0.0.1", "--port", str(self.port), "--accounts", "20",
                "--silent", "--chain-id", "31337", "--hardfork", "prague", "--gas-limit", "100000000",
                # Historical states are of no use to an indexer (logs and headers are kept); with
                # them anvil spills each old state to disk and slows down as the chain grows.
                "--prune-history", *extra]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120  # loading a large state takes a while
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil exited with code {self.process.returncode}; see {log_path}")
            try:
                if httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=2).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"anvil did not answer on port {self.port}; see {log_path}")
            time.sleep(0.2)

    def stop(self, timeout: float = 300) -> None:
        """SIGINT, so anvil writes --dump-state before it exits."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def deploy_contracts(client: ChainClient) -> Contracts:
    """The five contracts as deploy_all wires them, minus its Python-bindings drift check: the
    bench needs the contracts' events, and runs against the contracts in the tree even while
    another change to backend/'s view bindings is under way (deploy_all refuses then)."""
    admin, treasury = dev_accounts()[0], dev_accounts()[1]
    artifacts = compile_contracts()

    def deploy(name: str, *args: object) -> str:
        address, _ = client.deploy(admin, artifacts[name].abi, artifacts[name].bytecode, *args)
        return address

    start_block = client.w3.eth.block_number
    token = deploy("ProvenantToken", admin.address, TOKEN_SUPPLY_WEI)
    datanets = deploy("DatanetRegistry", token, admin.address)
    models = deploy("ModelRegistry", datanets, admin.address)
    escrow = deploy("UsageEscrow", token, models, 86_400, admin.address)
    split = tuple(DEFAULT_SPLIT_BPS[k] for k in ("protocol", "owner", "curators", "contributors"))
    settlement = deploy("AttributionSettlement", token, escrow, admin.address, treasury.address, split, 2 * 86_400)
    addresses = {"ProvenantToken": token, "DatanetRegistry": datanets, "ModelRegistry": models,
                 "UsageEscrow": escrow, "AttributionSettlement": settlement}

    def at(name: str) -> Any:
        return client.w3.eth.contract(address=addresses[name], abi=artifacts[name].abi)

    contracts = Contracts(token=at("ProvenantToken"), datanets=at("DatanetRegistry"), models=at("ModelRegistry"),
                          escrow=at("UsageEscrow"), settlement=at("AttributionSettlement"),
                          manifest=DeploymentManifest(chain_id=client.chain_id, deployer=admin.address,
                                                      block_number=start_block, addresses=addresses))
    client.transact(admin, contracts.escrow.functions.setSettlement(settlement))
    return contracts


def _generate(events: int, state: Path, meta: Path, workdir: Path) -> None:
    tmp = state.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    # fifo: a round's transactions run in the order sent (a charge after the deposit it spends).
    anvil = Anvil(workdir / "anvil-generate.log", "--dump-state", str(tmp), "--order", "fifo")
    try:
        client = ChainClient(anvil.url)
        contracts = deploy_contracts(client)
        rpc = JsonRpc(anvil.url)
        summary = bulk_chain.make_bulk_chain(rpc, client, contracts, events, progress=log.info)
        head = rpc.block_number()
        rpc.close()
    finally:
        anvil.stop()
    if not tmp.exists():
        raise RuntimeError(f"anvil did not write its state to {tmp}; see {workdir / 'anvil-generate.log'}")
    tmp.replace(state)
    meta.write_text(json.dumps({"addresses": contracts.manifest.addresses, "start_block": contracts.manifest.block_number,
                                "head": head, "summary": asdict(summary)}, indent=1))


@contextmanager
def bench_chain(events: int, cache_dir: Path, workdir: Path) -> Iterator[ChainInfo]:
    """A running anvil holding the cached chain (generated first when the cache lacks it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(events)
    state, meta = cache_dir / f"chain-{key}.json", cache_dir / f"chain-{key}.meta.json"
    if not (state.exists() and meta.exists()):
        log.info("no cached chain %s: generating %d events (about a minute per 100,000)", key, events)
        _generate(events, state, meta, workdir)
    info = json.loads(meta.read_text())
    anvil = Anvil(workdir / "anvil.log", "--load-state", str(state))
    try:
        rpc = JsonRpc(anvil.url)
        head = rpc.block_number()
        rpc.close()
        if head != info["head"]:
            raise RuntimeError(f"anvil loaded {state} at block {head}, expected {info['head']}: delete the cache")
        yield ChainInfo(anvil.url, dict(info["addresses"]), int(info["start_block"]), head,
                        int(info["summary"]["events"]), info["summary"])
    finally:
        anvil.stop(timeout=10)

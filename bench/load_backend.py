"""Bounded load test of the backend on loopback (issue 10): readers and writers at once.

    .venv/bin/python bench/load_backend.py [--readers 100] [--writers 20] [--seconds 60]

Starts anvil, deploys, creates a Datanet, runs `provenant app` as its own process (uvicorn, one
worker), signs in `--writers` dev accounts with SIWE, then for `--seconds` runs `--readers`
clients cycling through read endpoints (config, index queries, health) and `--writers` clients
uploading distinct contribution files (each upload is validated, duplicate-checked and stored).
Prints requests, errors and latency percentiles per kind as JSON. It measures; it asserts nothing
but counts every non-2xx answer and transport error as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from provenant.chain.client import ChainClient  # noqa: E402
from provenant.chain.deploy import deploy_all  # noqa: E402
from provenant.chain.devnet import free_port, start_anvil  # noqa: E402
from provenant.chain.keys import dev_accounts  # noqa: E402
from provenant.datanets.service import DatanetService  # noqa: E402
from provenant.store import open_store  # noqa: E402

READS = ["/v1/config", "/v1/index/datanets", "/v1/index/contributions?limit=20", "/v1/index/health",
         "/v1/index/models"]


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "max_ms": round(1000 * ordered[-1], 1)}


async def sign_in(client: httpx.AsyncClient, index: int) -> str:
    from test_auth import signed  # the same SIWE message the tests build

    class Clock:
        now = time.time()

    class Sync:  # test_auth.signed asks for a nonce through a sync client's .get(...).json()
        def get(self, path: str) -> httpx.Response:
            return httpx.get(str(client.base_url) + path)

    domain = f"localhost:{client.base_url.port}"  # what `provenant app --port` expects by default
    body = signed(Sync(), dev_accounts()[index], Clock(), domain=domain)  # type: ignore[arg-type]
    r = await client.post("/v1/auth/login", json=body)
    r.raise_for_status()
    return r.json()["token"]


async def reader(client: httpx.AsyncClient, until: float, latencies: list[float], errors: list[str], k: int) -> None:
    i = k
    while time.perf_counter() < until:
        path = READS[i % len(READS)]
        i += 1
        start = time.perf_counter()
        try:
            r = await client.get(path)
            if r.status_code != 200:
                errors.append(f"GET {path}: {r.status_code}")
        except httpx.HTTPError as exc:
            errors.append(f"GET {path}: {type(exc).__name__}")
        latencies.append(time.perf_counter() - start)


async def writer(client: httpx.AsyncClient, token: str, datanet_id: int, until: float, latencies: list[float],
                 errors: list[str], k: int) -> None:
    n = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson", "X-Filename": "load.jsonl"}
    while time.perf_counter() < until:
        n += 1
        rows = [{"text": f"writer {k} upload {n} row {r}: my order number {k * 100_000 + n * 10 + r} never arrived",
                 "label": "billing"} for r in range(5)]
        body = "".join(json.dumps(row) + "\n" for row in rows).encode()
        start = time.perf_counter()
        try:
            r = await client.post(f"/v1/datanets/{datanet_id}/uploads", content=body, headers=headers)
            if r.status_code != 201:
                errors.append(f"upload: {r.status_code} {r.text[:200]}")
        except httpx.HTTPError as exc:
            errors.append(f"upload: {type(exc).__name__}")
        latencies.append(time.perf_counter() - start)


async def drive(base: str, datanet_id: int, readers: int, writers: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=readers + writers + 5)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        tokens = [await sign_in(client, 3 + (w % 15)) for w in range(writers)]
        read_lat: list[float] = []
        write_lat: list[float] = []
        errors: list[str] = []
        until = time.perf_counter() + seconds
        started = time.perf_counter()
        await asyncio.gather(*[reader(client, until, read_lat, errors, k) for k in range(readers)],
                             *[writer(client, tokens[k], datanet_id, until, write_lat, errors, k) for k in range(writers)])
        wall = time.perf_counter() - started
    return {"seconds": round(wall, 1), "readers": readers, "writers": writers,
            "reads": {"requests": len(read_lat), "per_s": round(len(read_lat) / wall, 1), **percentiles(read_lat)},
            "writes": {"requests": len(write_lat), "per_s": round(len(write_lat) / wall, 1), **percentiles(write_lat)},
            "errors": len(errors), "first_errors": errors[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_anvil(log_path=Path(tmp) / "anvil.log") as anvil:
        home = Path(tmp) / "home"
        client = ChainClient(anvil.rpc_url)
        contracts = deploy_all(client, dev_accounts()[0], home, protocol_treasury=dev_accounts()[1].address)
        datanet_id = DatanetService(client, contracts, open_store(str(home / "store"))).create(
            dev_accounts()[2], {"name": "load", "task": "classification", "labels": ["billing", "technical"]})
        port = free_port()
        env = {**os.environ, "PROVENANT_RPC_URL": anvil.rpc_url, "PROVENANT_HOME": str(home)}
        server = subprocess.Popen([str(ROOT / ".venv" / "bin" / "provenant"), "app", "--port", str(port)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "app.log", "w"))
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(base + "/v1/config", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            result = asyncio.run(drive(base, datanet_id, args.readers, args.writers, args.seconds))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    result["load_average_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

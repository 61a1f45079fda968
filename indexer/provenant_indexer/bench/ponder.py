"""The Ponder 1.0 arm: bench/ponder (its own package.json and package-lock.json) run with
`ponder start` against the bench chain, into its embedded PGlite or into PostgreSQL.

Backfill time is from Ponder's HTTP server first answering (its build and migrations are done)
until `/status` says Ponder is ready and has indexed the chain's head block; the time before is
reported as set-up, as our arm's is. (Ponder's `/ready` alone comes early: Ponder syncs the last
30 blocks of an unknown chain such as 31337 one block at a time in its realtime mode, after
`/ready`.) Peak memory is the largest RSS of Ponder's process tree,
sampled every 100 ms (PGlite runs inside the node process, so its memory is counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from provenant.chain.devnet import free_port
from provenant.paths import repo_root

PONDER_DIR = repo_root() / "bench" / "ponder"


def ensure_installed() -> None:
    """`npm ci` from bench/ponder's lock file, only when its node_modules lacks Ponder."""
    if (PONDER_DIR / "node_modules" / "ponder" / "package.json").exists():
        return
    proc = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PONDER_DIR, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"npm ci in {PONDER_DIR} failed:\n{proc.stderr[-2000:]}")


def write_chain(rpc_url: str, addresses: dict[str, str], start_block: int, abis: dict[str, Any]) -> None:
    # Only the deployed contracts' ABIs: the app registers a handler for every event in them, and
    # Ponder refuses a handler for a contract its config does not name.
    abis = {name: abi for name, abi in abis.items() if name in addresses}
    (PONDER_DIR / "chain.json").write_text(json.dumps(
        {"rpc_url": rpc_url, "addresses": addresses, "start_block": start_block, "abis": abis}))


@dataclass
class _Sampler:
    pid: int
    peak: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.pid)
                rss = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            self.stop.wait(0.1)


class Ponder:
    """One `ponder start`; `database_url` None means PGlite in a fresh directory."""

    def __init__(self, workdir: Path, database_url: str | None, poll_ms: int = 250) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"ponder-{'pg' if database_url else 'pglite'}.log"
        env = {**os.environ, "PONDER_TELEMETRY_DISABLED": "true", "POLL_MS": str(poll_ms),
               "DATABASE_SCHEMA": f"bench_{self.port}"}
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url.replace("postgresql+psycopg://", "postgresql://")
        else:
            env["PGLITE_DIR"] = str(workdir / f"pglite-{self.port}")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.began = time.perf_counter()
        self.process = subprocess.Popen(
            [str(PONDER_DIR / "node_modules" / ".bin" / "ponder"), "--log-format", "json", "start",
             "--port", str(self.port), "--schema", env["DATABASE_SCHEMA"]],
            cwd=PONDER_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.sampler = _Sampler(self.process.pid)
        threading.Thread(target=self.sampler.run, daemon=True).start()

    def _get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(self.url + path, timeout=5)
        except httpx.HTTPError:
            return None

    def _alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"ponder exited with code {self.process.returncode}; log tail:\n{tail}")

    def indexed_block(self) -> int | None:
        """The block Ponder's database reflects, once its historical sync is done."""
        answer = self._get("/status")
        if answer is None or answer.status_code != 200:
            return None
        status = (answer.json() or {}).get("anvil") or {}
        block = status.get("block") or {}
        return int(block["number"]) if status.get("ready") and block.get("number") is not None else None

    def backfill(self, head: int, timeout: float = 1800) -> dict[str, float]:
        """Wait for the server, then until Ponder has indexed `head`: {setup_s, seconds}."""
        deadline = time.monotonic() + timeout
        while self._get("/health") is None:
            self._alive()
            if time.monotonic() > deadline:
                raise TimeoutError("ponder's HTTP server never answered")
            time.sleep(0.05)
        serving = time.perf_counter()
        while True:
            indexed = self.indexed_block()
            if indexed is not None and indexed >= head:
                break
            self._alive()
            if time.monotonic() > deadline:
                raise TimeoutError("ponder never reported /ready")
            time.sleep(0.05)
        done = time.perf_counter()
        return {"setup_s": round(serving - self.began, 3), "seconds": round(done - serving, 3)}

    def latest_contribution(self) -> int | None:
        answer = self._get("/bench/latest")
        if answer is None or answer.status_code != 200:
            return None
        value = answer.json().get("latest_contribution")
        return int(value) if value is not None else None

    @property
    def peak_rss_mb(self) -> float:
        return round(self.sampler.peak / 2**20, 1)

    def stop(self) -> None:
        self.sampler.stop.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

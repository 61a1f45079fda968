"""Starting and stopping a local anvil devnet on a free loopback port.

anvil prints the public dev keys at start-up unless --silent; its output goes to a log file
of its own, never into the project's logs.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from provenant.paths import node_bin


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Devnet:
    process: subprocess.Popen
    port: int

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "Devnet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_anvil(*, accounts: int = 20, log_path: Path | None = None, block_time: float | None = None,
                timeout: float = 30.0) -> Devnet:
    """Start anvil (chain id 31337) on a free loopback port and wait until it answers."""
    port = free_port()
    args = [str(node_bin("anvil")), "--host", "127.0.0.1", "--port", str(port), "--accounts", str(accounts),
            "--silent", "--chain-id", "31337"]
    if block_time:
        args += ["--block-time", str(block_time)]
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    devnet = Devnet(process=process, port=port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"anvil exited with code {process.returncode} before answering")
        try:
            response = httpx.post(devnet.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, timeout=1)
            if response.status_code == 200:
                return devnet
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    devnet.stop()
    raise RuntimeError(f"anvil did not answer on port {port} within {timeout:.0f} s")

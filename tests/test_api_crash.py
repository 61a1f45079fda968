"""Crash consistency of uploads (issue 10): `kill -9` the backend mid-upload 50 times.

After every kill the backend restarts: a fresh process, forked from tests/app_zygote.py so that
imports are paid once. At the end: nothing is left spooled, every upload that was answered 201
is in the content store byte for byte, and every upload that got no answer succeeds when
retried, with the CID its bytes determine (so a retry is idempotent).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.devnet import Devnet, free_port
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store
from provenant.store.cid import cid_for_bytes
from test_auth import signed

KILLS = 50
ZYGOTE = Path(__file__).with_name("app_zygote.py")


class Backend:
    """`provenant app`, each start a fresh process forked from tests/app_zygote.py (imports done once)."""

    def __init__(self, rpc_url: str, home: Path, log: Path) -> None:
        self.rpc_url, self.home, self.log = rpc_url, home, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.pid: int | None = None
        env = {**os.environ, "PROVENANT_RPC_URL": rpc_url, "PROVENANT_HOME": str(home)}
        self.zygote = subprocess.Popen([sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env)
        self._expect("ready")

    def _expect(self, prefix: str) -> str:
        assert self.zygote.stdout is not None
        line = self.zygote.stdout.readline().strip()
        assert line.startswith(prefix), f"app zygote said {line!r}, not {prefix!r}; see {self.log}"
        return line[len(prefix):].strip()

    def start(self) -> None:
        assert self.zygote.stdin is not None
        self.zygote.stdin.write(f"go {self.port} {self.log}\n")
        self.zygote.stdin.flush()
        self.pid = int(self._expect("pid"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/v1/config", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"backend did not start; see {self.log}")

    def kill(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        assert self._expect("exit") == str(-signal.SIGKILL)
        self.pid = None

    def close(self) -> None:
        if self.pid is not None:
            self.kill()
        assert self.zygote.stdin is not None
        self.zygote.stdin.close()
        self.zygote.wait(timeout=30)

    def token(self, index: int) -> str:
        class Clock:
            now = time.time()

        class Sync:
            def get(self_, path: str) -> httpx.Response:  # noqa: N805
                return httpx.get(self.base + path)

        body = signed(Sync(), dev_accounts()[index], Clock(), domain=f"localhost:{self.port}")  # type: ignore[arg-type]
        return httpx.post(self.base + "/v1/auth/login", json=body).json()["token"]


@pytest.fixture()
def backend(anvil: Devnet, chain: ChainClient, deployed: Contracts, tmp_path: Path) -> Iterator[tuple[Backend, int]]:
    home = tmp_path / "home"
    datanet_id = DatanetService(chain, deployed, open_store(str(home / "store"))).create(
        dev_accounts()[2], {"name": "crash", "task": "classification", "labels": ["billing", "technical"],
                            "max_rows_per_file": 20_000})
    b = Backend(anvil.rpc_url, home, tmp_path / "app.log")
    yield b, datanet_id
    b.close()


def _file(i: int) -> bytes:
    # ~100 KB, so a kill lands while the body streams, while it is validated or while it is stored.
    rows = (json.dumps({"text": f"upload {i} row {r}: the order {i * 100_000 + r} was charged twice",
                        "label": "billing"}) + "\n" for r in range(1_300))
    return "".join(rows).encode()


def test_kill_9_during_uploads_loses_and_half_writes_nothing(backend: tuple[Backend, int]) -> None:
    server, datanet_id = backend
    rng = random.Random(20261125)
    server.start()
    # Sessions survive restarts (they are kept in the home's SQLite), so one sign-in serves all.
    headers = {"Authorization": f"Bearer {server.token(3)}", "Content-Type": "application/x-ndjson"}
    started = time.monotonic()
    r = httpx.post(f"{server.base}/v1/datanets/{datanet_id}/uploads", content=_file(-1), headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    upload_s = time.monotonic() - started  # kills land anywhere from before the body to after the answer
    answered: dict[int, str] = {}
    unanswered: list[int] = []
    for i in range(KILLS):
        if i:
            server.start()
        result: dict[str, httpx.Response] = {}

        def upload() -> None:
            try:
                result["r"] = httpx.post(f"{server.base}/v1/datanets/{datanet_id}/uploads", content=_file(i),
                                         headers=headers, timeout=60)
            except httpx.HTTPError:
                pass

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(rng.uniform(0.0, 1.3 * upload_s))
        server.kill()
        thread.join()
        if "r" in result and result["r"].status_code == 201:
            answered[i] = result["r"].json()["cid"]
        else:
            assert "r" not in result, result["r"].text  # an answer other than 201 would be a bug
            unanswered.append(i)

    server.start()
    assert list((server.home / "uploads").glob("upload-*")) == []
    store = open_store(str(server.home / "store"))
    for i, cid in answered.items():
        assert store.get(cid) == _file(i)
    for i in unanswered:
        r = httpx.post(f"{server.base}/v1/datanets/{datanet_id}/uploads", content=_file(i), headers=headers, timeout=60)
        assert r.status_code == 201 and r.json()["cid"] == cid_for_bytes(_file(i))
    print({"kills": KILLS, "upload_s": round(upload_s, 3), "answered_before_kill": len(answered),
           "retried": len(unanswered)})
    assert unanswered, "no kill landed during an upload: the test would prove nothing"

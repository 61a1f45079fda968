"""A training job survives `kill -9` of the backend (issues 5 and 10): after a restart it resumes
from its last epoch checkpoint and ends with the adapter an uninterrupted job produces."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.devnet import Devnet
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store
from test_api_crash import Backend

SAMPLES = Path(__file__).resolve().parents[1] / "backend" / "provenant" / "demo" / "samples"
JOB = {"datanet_ids": [1], "lora": {"epochs": 4, "max_length": 16, "batch_size": 16, "seed": 3, "dropout": 0.1}}

pytestmark = pytest.mark.slow


@pytest.fixture()
def backend(anvil: Devnet, chain: ChainClient, deployed: Contracts, tmp_path: Path) -> Iterator[Backend]:
    home = tmp_path / "home"
    service = DatanetService(chain, deployed, open_store(str(home / "store")))
    datanet = service.create(dev_accounts()[2], {"name": "tickets", "task": "classification",
                                                  "labels": ["billing", "technical", "shipping", "account"]})
    record = service.contribute(dev_accounts()[4], datanet, SAMPLES / "alice_1.jsonl")
    service.approve(dev_accounts()[2], datanet, [record.contribution_id])
    b = Backend(anvil.rpc_url, home, tmp_path / "app.log")
    yield b
    b.close()


def _job(server: Backend, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{server.base}/v1/jobs/{job_id}", timeout=30).json()


def _wait(server: Backend, job_id: str, until: Any, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _job(server, job_id)
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id}: {job}")


def test_a_killed_training_resumes_to_the_same_adapter(backend: Backend) -> None:
    server = backend
    server.start()
    headers = {"Authorization": f"Bearer {server.token(6)}"}
    straight = httpx.post(f"{server.base}/v1/jobs", json={**JOB, "name": "straight"}, headers=headers, timeout=30)
    done = _wait(server, straight.json()["job_id"], lambda j: j["state"] in ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]

    killed = httpx.post(f"{server.base}/v1/jobs", json={**JOB, "name": "killed"}, headers=headers, timeout=30)
    job_id = killed.json()["job_id"]
    # Kill in the middle of epoch 2: epoch 1's checkpoint is on disk, epoch 2's work is lost.
    _wait(server, job_id, lambda j: j["progress"].get("epoch") == 2 and j["progress"].get("stage") == "train")
    server.kill()
    assert (server.home / "jobs" / job_id / "checkpoint.pt").exists()
    assert _job_file_state(server, job_id) == "running"

    server.start()  # the runner finds the job running and resumes it
    resumed = _wait(server, job_id, lambda j: j["state"] in ("succeeded", "failed"))
    assert resumed["state"] == "succeeded", resumed["error"]
    assert resumed["result"]["adapter_hash"] == done["result"]["adapter_hash"]
    assert resumed["result"]["metrics"]["train_loss"] == done["result"]["metrics"]["train_loss"]
    assert resumed["contribution_ids"] == done["contribution_ids"]


def _job_file_state(server: Backend, job_id: str) -> str:
    import json

    return json.loads((server.home / "jobs" / job_id / "job.json").read_text())["state"]

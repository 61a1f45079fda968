"""Model Factory jobs over HTTP on a real anvil: launch, follow, cancel, register from the result."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from provenant.api.app import AppSettings, create_app
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store
from test_api_app import _login

SAMPLES = Path(__file__).resolve().parents[1] / "backend" / "provenant" / "demo" / "samples"
SMALL = {"epochs": 1, "max_length": 16, "batch_size": 32}

pytestmark = pytest.mark.slow


@pytest.fixture()
def api(anvil, chain: ChainClient, deployed: Contracts, tmp_path: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    service = DatanetService(chain, deployed, open_store(str(home / "store")))
    curator = dev_accounts()[2]
    datanet = service.create(curator, {"name": "tickets", "task": "classification",
                                       "labels": ["billing", "technical", "shipping", "account"]})
    record = service.contribute(dev_accounts()[4], datanet, SAMPLES / "alice_1.jsonl")
    service.approve(curator, datanet, [record.contribution_id])
    with TestClient(create_app(AppSettings(rpc_url=anvil.rpc_url, home=home, follow_chain=False))) as client:
        yield client


def _wait(api: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")


def test_a_job_trains_and_its_result_registers_from_the_wallet(api: TestClient, chain: ChainClient,
                                                               deployed: Contracts) -> None:
    owner = dev_accounts()[6]
    headers = _login(api, owner)
    assert api.post("/v1/jobs", json={"name": "tickets-v1", "datanet_ids": [1]}).status_code == 401
    r = api.post("/v1/jobs", json={"name": "tickets-v1", "datanet_ids": [1], "lora": SMALL}, headers=headers)
    assert r.status_code == 202, r.text
    job = _wait(api, r.json()["job_id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    assert job["contribution_ids"] == [1] and job["progress"]["stage"] in ("epoch", "eval")
    history = job["progress_history"]  # every step's loss, whatever the UI's polling rate
    last = history[-1]
    assert len(history) == last["epochs"] * last["steps"] and all(h["loss"] > 0 for h in history)
    assert [(h["epoch"], h["step"]) for h in history] == sorted((h["epoch"], h["step"]) for h in history)
    spec = job["result"]["registration"]
    assert spec["server"] == owner.address and spec["contributionIds"] == [1]
    # What the wallet sends: the registration fields as they are.
    abi = next(f for f in deployed.models.abi if f.get("name") == "registerModel")["inputs"][0]["components"]
    assert list(spec) == [c["name"] for c in abi]
    values = [bytes.fromhex(v[2:]) if k in ("lineageRoot", "configHash", "adapterHash") else
              int(v) if k == "pricePerCall" else v for k, v in spec.items()]
    chain.transact(owner, deployed.models.functions.registerModel(tuple(values)))
    assert deployed.models.functions.modelCount().call() == 1
    assert [j["job_id"] for j in api.get("/v1/jobs").json()] == [job["job_id"]]


def test_cancel_is_for_the_owner_and_stops_the_training(api: TestClient) -> None:
    owner, stranger = dev_accounts()[6], dev_accounts()[7]
    headers = _login(api, owner)
    r = api.post("/v1/jobs", json={"name": "long", "datanet_ids": [1], "lora": {**SMALL, "epochs": 100}},
                 headers=headers)
    job_id = r.json()["job_id"]
    _wait(api, job_id, ("running",))
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=_login(api, stranger)).status_code == 403
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
    job = _wait(api, job_id, ("cancelled", "failed", "succeeded"))
    assert job["state"] == "cancelled" and "cancelled at epoch" in job["error"]


def test_bad_jobs_are_refused_naming_the_problem(api: TestClient) -> None:
    headers = _login(api, dev_accounts()[6])
    r = api.post("/v1/jobs", json={"name": "q", "datanet_ids": [1], "load_in_4bit": True}, headers=headers)
    assert r.status_code == 422 and "4-bit" in r.json()["detail"]
    with pytest.MonkeyPatch.context() as env:  # the server's own device setting is malformed
        env.setenv("PROVENANT_DEVICE", "banana")
        r = api.post("/v1/jobs", json={"name": "q", "datanet_ids": [1], "load_in_4bit": True}, headers=headers)
    assert r.status_code == 422 and "unknown device 'banana'" in r.json()["detail"]
    r = api.post("/v1/jobs", json={"name": "bad", "datanet_ids": [1], "lora": {"rank": 0}}, headers=headers)
    assert r.status_code == 422
    r = api.post("/v1/jobs", json={"name": "nothing", "datanet_ids": [99], "lora": SMALL}, headers=headers)
    job = _wait(api, r.json()["job_id"], ("failed", "succeeded"))
    assert job["state"] == "failed" and "no approved contributions" in job["error"]
    assert api.get("/v1/jobs/nope").status_code == 404


def test_an_lm_job_trains_on_text_rows_with_per_datanet_metrics_and_verifies(api: TestClient, chain: ChainClient,
                                                                             deployed: Contracts, tmp_path: Path) -> None:
    from provenant.verify import verify_model

    store = open_store(str(tmp_path / "home" / "store"))
    service = DatanetService(chain, deployed, store)
    curator = dev_accounts()[2]
    datanet = service.create(curator, {"name": "answers", "task": "prompt_completion"})
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(f'{{"prompt": "q{i}?", "completion": " a{i}"}}\n' for i in range(8)), encoding="utf-8")
    record = service.contribute(dev_accounts()[4], datanet, rows)
    service.approve(curator, datanet, [record.contribution_id])

    owner = dev_accounts()[6]
    headers = _login(api, owner)
    body = {"name": "answers-lm", "datanet_ids": [datanet], "base_model": "tiny-llama",
            "lora": {"epochs": 1, "max_length": 24, "batch_size": 8}, "filters": {"held_out": 0.25}}
    r = api.post("/v1/jobs", json={**body, "filters": {"weights": {str(datanet): 0}}}, headers=headers)
    assert r.status_code == 422 and "weight for Datanet" in r.json()["detail"]
    r = api.post("/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["settings"]["target_modules"] == ["q_proj", "v_proj"]  # the base's default
    job = _wait(api, r.json()["job_id"], ("succeeded", "failed"))
    assert job["state"] == "succeeded", job["error"]
    assert job["result"]["task"] == "causal-lm" and job["selection_cid"]
    metrics = api.get(f"/v1/jobs/{job['job_id']}").json()["result"]["per_datanet"][str(datanet)]
    assert metrics["held_out_rows"] == 2 and metrics["train_rows"] == 6 and metrics["eval_loss"] > 0
    spec = job["result"]["registration"]
    values = [bytes.fromhex(v[2:]) if k in ("lineageRoot", "configHash", "adapterHash") else
              int(v) if k == "pricePerCall" else v for k, v in spec.items()]
    chain.transact(owner, deployed.models.functions.registerModel(tuple(values)))
    verdict = verify_model(chain, deployed, store, 1)
    assert verdict.ok, verdict.reasons

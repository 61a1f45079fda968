"""The backend app on a real anvil deployment: config, SIWE-protected uploads and hostile input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from provenant.api.app import AppSettings, create_app
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService
from provenant.store import open_store
from test_auth import signed

ROW = {"text": "my card was charged twice this month", "label": "billing"}
GOOD = (json.dumps(ROW) + "\n").encode() * 3
DOMAIN = "localhost:8000"


class _Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()


@pytest.fixture()
def home(deployed: Contracts, tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture()
def datanet_ids(chain: ChainClient, deployed: Contracts, home: Path) -> dict[str, int]:
    service = DatanetService(chain, deployed, open_store(str(home / "store")))
    owner = dev_accounts()[2]
    meta = {"name": "tickets", "task": "classification", "labels": ["billing", "technical"],
            "max_bytes_per_file": 4096, "max_rows_per_file": 50}
    open_id = service.create(owner, meta)
    # DatanetService creates open Datanets; an allow-listed one goes through the contract.
    fn = deployed.datanets.functions.createDatanet(service.get(open_id).metadata_cid, "", [owner.address],
                                                    "0x0000000000000000000000000000000000000000", 0, True, False)
    chain.transact(owner, fn)
    return {"open": open_id, "allowlisted": open_id + 1}


@pytest.fixture()
def api(anvil, deployed: Contracts, home: Path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    app = create_app(AppSettings(rpc_url=anvil.rpc_url, home=home, domain=DOMAIN, follow_chain=False))
    with TestClient(app) as client:
        yield client


def _login(api: TestClient, wallet: LocalAccount) -> dict[str, str]:
    clock = _Clock()
    body = signed(api, wallet, clock)
    r = api.post("/v1/auth/login", json=body)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _upload(api: TestClient, datanet_id: int, data: bytes, headers: dict[str, str], **extra: str):  # type: ignore[no-untyped-def]
    return api.post(f"/v1/datanets/{datanet_id}/uploads", content=data,
                    headers={"Content-Type": "application/x-ndjson", "X-Filename": "tickets.jsonl", **headers, **extra})


def test_config_names_the_chain_and_contracts(api: TestClient, deployed: Contracts) -> None:
    body = api.get("/v1/config").json()
    assert body["chain_id"] == 31337 and body["domain"] == DOMAIN
    assert body["contracts"]["settlement"] == deployed.settlement.address


def test_upload_needs_a_session_then_stores_by_cid(api: TestClient, datanet_ids: dict[str, int], home: Path) -> None:
    wallet = dev_accounts()[5]
    r = _upload(api, datanet_ids["open"], GOOD, {})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]
    headers = _login(api, wallet)
    r = _upload(api, datanet_ids["open"], GOOD, headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["row_count"] == 3 and body["size"] == len(GOOD) and body["contributor"] == wallet.address
    assert open_store(str(home / "store")).get(body["cid"]) == GOOD
    import hashlib

    assert body["content_hash"] == "0x" + hashlib.sha256(GOOD).hexdigest()
    assert list((home / "uploads").iterdir()) == []  # nothing left spooled


@pytest.mark.parametrize(("data", "extra", "status", "needle"), [
    (b'{"text": "x", "label": "nope"}\n', {}, 422, "label"),
    (b"\xff\xfe not utf-8\n", {}, 422, "line"),
    (GOOD * 200, {}, 413, "limit of 4096"),
    (b"PK\x03\x04" + bytes(200), {"Content-Type": "application/zip"}, 415, "not a JSONL"),
    (GOOD, {"Content-Type": "multipart/form-data; boundary=x"}, 415, "raw request body"),
    (GOOD, {"Content-Encoding": "gzip"}, 415, "compressed"),
    (GOOD, {"X-Filename": "../../etc/passwd"}, 400, "path"),
    (GOOD, {"X-Filename": "a\x07b.jsonl"}, 400, "control"),
    (b"", {}, 422, "empty"),
])
def test_hostile_uploads_are_refused_and_store_nothing(api: TestClient, datanet_ids: dict[str, int], home: Path,
                                                       data: bytes, extra: dict[str, str], status: int,
                                                       needle: str) -> None:
    headers = _login(api, dev_accounts()[5])
    store_dir = home / "store"
    before = sorted(p.name for p in store_dir.rglob("*")) if store_dir.exists() else []
    r = _upload(api, datanet_ids["open"], data, headers, **extra)
    assert r.status_code == status, r.text
    assert needle in json.dumps(r.json()["detail"]), r.text
    after = sorted(p.name for p in store_dir.rglob("*")) if store_dir.exists() else []
    assert after == before
    assert not (home / "uploads").exists() or list((home / "uploads").iterdir()) == []


def test_repeats_of_recorded_rows_are_flagged(api: TestClient, chain: ChainClient, deployed: Contracts,
                                              datanet_ids: dict[str, int]) -> None:
    wallet = dev_accounts()[5]
    headers = _login(api, wallet)
    first = _upload(api, datanet_ids["open"], GOOD, headers).json()
    assert [f["of_contribution"] for f in first["duplicates"]] == [None, None]  # lines 2, 3 repeat line 1
    # The wallet records it on chain; the next upload of the same row is flagged against it.
    chain.transact(wallet, deployed.datanets.functions.contribute(
        datanet_ids["open"], bytes.fromhex(first["content_hash"][2:]), first["cid"], first["size"], first["row_count"]))
    again = _upload(api, datanet_ids["open"], (json.dumps({**ROW, "text": ROW["text"].upper()}) + "\n").encode(),
                    headers).json()
    assert again["duplicates"] == [{"line": 1, "kind": "exact", "of_contribution": 1, "of_line": 1, "similarity": 1.0}]


def test_unknown_and_allowlisted_datanets(api: TestClient, datanet_ids: dict[str, int]) -> None:
    headers = _login(api, dev_accounts()[5])
    assert _upload(api, 999, GOOD, headers).status_code == 404
    r = _upload(api, datanet_ids["allowlisted"], GOOD, headers)
    assert r.status_code == 403 and "allow-list" in r.json()["detail"]


def test_oversized_and_deeply_nested_json_bodies_are_4xx(api: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    r = api.post("/v1/auth/login", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested" in r.json()["detail"]
    r = api.post("/v1/auth/login", content=b"x" * 2_000_000, headers={"Content-Type": "application/json"})
    assert r.status_code == 413


def test_index_routes_are_mounted(api: TestClient) -> None:
    assert api.get("/v1/index/datanets").status_code == 200


def test_datanet_record_metadata_and_content(api: TestClient, datanet_ids: dict[str, int], home: Path) -> None:
    body = api.get(f"/v1/datanets/{datanet_ids['open']}").json()
    assert body["metadata"]["name"] == "tickets" and body["rules"]["labels"] == ["billing", "technical"]
    assert body["allowlisted"] is False
    assert api.get("/v1/datanets/99").status_code == 404
    content = api.get(f"/v1/content/{body['metadata_cid']}")
    assert content.status_code == 200 and json.loads(content.content)["name"] == "tickets"
    assert api.get("/v1/content/not-a-cid").status_code == 422
    assert api.get("/v1/content/bafkreiaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").status_code == 404

    meta = {"name": "new one", "task": "classification", "labels": ["a", "b"]}
    assert api.post("/v1/datanets/metadata", json=meta).status_code == 401
    headers = _login(api, dev_accounts()[6])
    stored = api.post("/v1/datanets/metadata", json=meta, headers=headers)
    assert stored.status_code == 201, stored.text
    assert json.loads(open_store(str(home / "store")).get(stored.json()["cid"]))["labels"] == ["a", "b"]
    refused = api.post("/v1/datanets/metadata", json={**meta, "labels": ["a", "a"]}, headers=headers)
    assert refused.status_code == 422 and "duplicate labels" in refused.json()["detail"]


def test_serving_routes_mount_in_the_backend(anvil, deployed: Contracts, home: Path, chain: ChainClient) -> None:  # type: ignore[no-untyped-def]
    from provenant.serving.calllog import CallLog
    from provenant.serving.service import ServingService

    service = ServingService(chain, deployed, open_store(str(home / "store")), dev_accounts()[8], CallLog(home / "calls"))
    app = create_app(AppSettings(rpc_url=anvil.rpc_url, home=home, follow_chain=False, run_jobs=False, serving=service))
    with TestClient(app) as client:
        models = client.get("/v1/models").json()
        assert {m["id"] for m in models["data"]} >= {"tiny-llama", "minilm"}
        r = client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code in (402, 404), r.text  # the serving layer's own errors, through this app
        assert client.get("/v1/config").status_code == 200  # and the backend's routes beside them

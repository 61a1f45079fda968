"""Sign-In with Ethereum sessions: real EIP-4361 messages signed by real keys, checked over HTTP."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from provenant.api.auth import Session, SiweSessions, create_auth_router, session_dependency

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from siwe import SiweMessage

DOMAIN, CHAIN_ID = "localhost:8000", 31337


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def client(clock: Clock) -> TestClient:
    sessions = SiweSessions(domain=DOMAIN, chain_id=CHAIN_ID, max_session_s=3600, clock=clock)
    app = FastAPI()
    app.include_router(create_auth_router(sessions))
    require = session_dependency(sessions)

    @app.post("/write")
    def write(session: Session = Depends(require)) -> dict[str, str]:
        return {"by": session.address}

    return TestClient(app)


@pytest.fixture()
def wallet() -> LocalAccount:
    return Account.create()


def signed(client: TestClient, wallet: LocalAccount, clock: Clock, *, signer: LocalAccount | None = None,
           nonce: str | None = None, **overrides: object) -> dict[str, str]:
    now = datetime.fromtimestamp(clock.now, tz=timezone.utc)
    fields: dict[str, object] = {
        "domain": DOMAIN, "address": wallet.address, "uri": f"http://{DOMAIN}/", "version": "1",
        "chain_id": CHAIN_ID, "nonce": nonce or client.get("/v1/auth/nonce").json()["nonce"],
        "issued_at": now.isoformat().replace("+00:00", "Z"), "statement": "Sign in to Provenant",
        "expiration_time": (now + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
    }
    fields.update(overrides)
    fields = {k: v for k, v in fields.items() if v is not None}
    message = SiweMessage(**fields).prepare_message()
    signature = (signer or wallet).sign_message(encode_defunct(text=message)).signature.hex()
    return {"message": message, "signature": signature if signature.startswith("0x") else "0x" + signature}


def test_login_gives_a_session_that_authorises_writes(client: TestClient, wallet: LocalAccount, clock: Clock) -> None:
    assert client.post("/write").status_code == 401
    nonce = client.get("/v1/auth/nonce").json()
    assert nonce["domain"] == DOMAIN and nonce["chain_id"] == CHAIN_ID
    r = client.post("/v1/auth/login", json=signed(client, wallet, clock))
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.post("/write", headers=headers).json() == {"by": wallet.address}
    assert client.get("/v1/auth/session", headers=headers).json()["address"] == wallet.address
    assert client.post("/v1/auth/logout", headers=headers).status_code == 204
    r = client.post("/write", headers=headers)
    assert r.status_code == 401 and "sign in again" in r.json()["detail"]


def test_a_replayed_message_never_logs_in_twice(client: TestClient, wallet: LocalAccount, clock: Clock) -> None:
    body = signed(client, wallet, clock)
    assert client.post("/v1/auth/login", json=body).status_code == 200
    r = client.post("/v1/auth/login", json=body)
    assert r.status_code == 401 and "already used" in r.json()["detail"]


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"domain": "evil.example"}, "domain 'evil.example'"),
    ({"chain_id": 1}, "chain id 1"),
    ({"expiration_time": None}, "no Expiration Time"),
    ({"expiration_time": "2026-11-27T12:00:00Z"}, "more than 3600 s"),
    ({"nonce": "0123456789abcdef"}, "nonce unknown"),
    ({"not_before": "2026-11-25T13:00:00Z"}, "message rejected"),
])
def test_wrong_messages_are_refused_naming_the_problem(client: TestClient, wallet: LocalAccount, clock: Clock,
                                                       overrides: dict[str, object], expected: str) -> None:
    r = client.post("/v1/auth/login", json=signed(client, wallet, clock, **overrides))
    assert r.status_code == 401 and expected in r.json()["detail"], r.text


def test_a_signature_by_another_key_is_refused(client: TestClient, wallet: LocalAccount, clock: Clock) -> None:
    r = client.post("/v1/auth/login", json=signed(client, wallet, clock, signer=Account.create()))
    assert r.status_code == 401 and f"not by {wallet.address}" in r.json()["detail"]


def test_expiry_of_message_nonce_and_session(client: TestClient, wallet: LocalAccount, clock: Clock) -> None:
    body = signed(client, wallet, clock)
    clock.now += 301  # nonce lives 300 s
    r = client.post("/v1/auth/login", json=body)
    assert r.status_code == 401 and "nonce expired" in r.json()["detail"]

    body = signed(client, wallet, clock)
    token = client.post("/v1/auth/login", json=body).json()["token"]
    clock.now += 31 * 60  # the message said 30 minutes
    r = client.post("/write", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "session expired" in r.json()["detail"]


@pytest.mark.parametrize("body", [
    {"message": "hello", "signature": "0x" + "11" * 65},
    {"message": "x" * 5000, "signature": "0x" + "11" * 65},
    {"message": "hello", "signature": "0x1234"},
    {"signature": "0x" + "11" * 65},
])
def test_malformed_logins_are_4xx_never_5xx(client: TestClient, body: dict[str, str]) -> None:
    r = client.post("/v1/auth/login", json=body)
    assert 400 <= r.status_code < 500, r.text


def test_a_garbage_token_is_refused(client: TestClient) -> None:
    r = client.post("/write", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    r = client.post("/write", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]

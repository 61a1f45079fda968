"""API keys on a real anvil and the real serving app: a SIWE session mints a key backed by a capped
voucher; the official openai client spends it concurrently within the cap; the chain is charged
exactly the answered calls' fees (UsageEscrow.chargeUpTo), which the audit list shows with receipts."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import httpx
import openai
import pytest
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from provenant.api.auth import SiweSessions, _siwe
from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet, free_port
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.api import create_app
from provenant.serving.api_keys import ApiKeyBook
from provenant.serving.devstack import PRICE, ServingStack, build_stack, fresh_consumer
from provenant.serving.models import ModelRecord
from provenant.serving.receipts import Receipt, check_receipt
from provenant.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def stack(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    from provenant.demo.thread import _serve

    probe = ChainClient(anvil.rpc_url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    s = build_stack(anvil.rpc_url, tmp_path_factory.mktemp("apikeys"), 2,
                    ServingSettings(rate_per_s=1000, rate_burst=1000, max_new_tokens=8), prefix="keys")
    port = free_port()
    sessions = SiweSessions(domain=f"127.0.0.1:{port}", chain_id=s.client.chain_id)
    s._http = _serve(create_app(s.service, sessions), port)
    s.url = f"http://127.0.0.1:{port}"
    yield s
    s.stop()
    probe.w3.provider.make_request("evm_revert", [snapshot])


def _login(s: ServingStack, wallet: LocalAccount) -> dict[str, str]:
    SiweMessage = _siwe().SiweMessage  # imported as auth.py does, with its grammar warnings silenced
    domain = s.url.removeprefix("http://")
    now = datetime.now(timezone.utc)
    message = SiweMessage(
        domain=domain, address=wallet.address, uri=s.url + "/", version="1", chain_id=s.client.chain_id,
        nonce=httpx.get(s.url + "/v1/auth/nonce").json()["nonce"],
        issued_at=now.isoformat().replace("+00:00", "Z"), statement="Mint an API key",
        expiration_time=(now + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
    ).prepare_message()
    signature = "0x" + wallet.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")
    r = httpx.post(s.url + "/v1/auth/login", json={"message": message, "signature": signature})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _spent(s: ServingStack, who: str, model_id: int) -> int:
    return int(s.client.call(s.contracts.escrow.functions.spentOf(who, model_id)))


def _mint(s: ServingStack, consumer: LocalAccount, session: dict[str, str], model_ids: list[int], cap: int,
          expires_in: float = 600, signer: LocalAccount | None = None, extra: int = 0) -> httpx.Response:
    expires_at = time.time() + expires_in
    deadline = int(max(expires_at, s.client.latest_timestamp())) + 3600
    vouchers = []
    for model_id in model_ids:
        v = Voucher(consumer=consumer.address, model_id=model_id,
                    cumulative_amount=_spent(s, consumer.address, model_id) + cap + extra, deadline=deadline)
        sig = sign_voucher(signer or consumer, s.client.chain_id, s.contracts.escrow.address, v)
        vouchers.append({"voucher": v.to_json(), "signature": "0x" + sig.hex()})
    body: dict[str, Any] = {"models": [str(m) for m in model_ids], "cap": str(cap), "expires_at": expires_at}
    body.update(vouchers[0] if len(vouchers) == 1 else {"vouchers": vouchers})
    return httpx.post(s.url + "/v1/api-keys", json=body, headers=session, timeout=60)


def _consumer(s: ServingStack) -> tuple[LocalAccount, dict[str, str]]:
    c = fresh_consumer()
    s.fund(c, [m.model_id for m in s.models], deposit=PRICE * 20)
    return c, _login(s, c)


def _oai(s: ServingStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key=key, max_retries=0, timeout=120)


def _call(oai: openai.OpenAI, model: str, i: int) -> dict[str, Any]:
    """One paid call of four shapes: completion, chat, streamed chat, streamed completion."""
    kind = i % 4
    if kind == 0:
        return oai.completions.create(model=model, prompt=f"call {i}", max_tokens=3).model_extra["provenance"]
    if kind == 1:
        return oai.chat.completions.create(model=model, messages=[{"role": "user", "content": f"hi {i}"}],
                                           max_tokens=3).model_extra["provenance"]
    if kind == 2:
        chunks = list(oai.chat.completions.create(model=model, messages=[{"role": "user", "content": f"s {i}"}],
                                                  max_tokens=3, stream=True))
        return chunks[-1].model_extra["provenance"]
    chunks = list(oai.completions.create(model=model, prompt=f"stream {i}", max_tokens=3, stream=True))
    return chunks[-1].model_extra["provenance"]


def test_openai_client_spends_a_key_concurrently_and_the_chain_charges_what_was_answered(
        stack: ServingStack) -> None:
    s, model = stack, stack.models[0]
    consumer, session = _consumer(s)
    base = _spent(s, consumer.address, model.model_id)
    minted = _mint(s, consumer, session, [model.model_id], cap=8 * PRICE)
    assert minted.status_code == 201, minted.text
    key, key_id = minted.json()["key"], minted.json()["id"]
    assert key.startswith("pvk_") and minted.json()["remaining"] == str(8 * PRICE)
    listed = httpx.get(s.url + "/v1/api-keys", headers=session).json()["data"]
    assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]  # shown once, stored hashed
    oai = _oai(s, key)

    with ThreadPoolExecutor(8) as pool:
        receipts = list(pool.map(lambda i: _call(oai, model.name, i), range(8)))
    record = ModelRecord.fetch(s.client, s.contracts, model.model_id)
    for raw in receipts:
        receipt = Receipt.from_json(raw)
        assert check_receipt(receipt, record.server, record.lineage_root, record.adapter_hash) == []
        assert receipt.consumer == consumer.address and receipt.fee == PRICE

    with pytest.raises(openai.APIStatusError) as refused:  # one call beyond the cap
        _call(oai, model.name, 0)
    assert refused.value.status_code == 402 and "cap" in refused.value.message

    audit = httpx.get(f"{s.url}/v1/api-keys/{key_id}/calls", headers=session).json()
    assert sorted(c["call_id"] for c in audit["data"]) == sorted(r["call_id"] for r in receipts)
    assert all(c["receipt"]["call_id"] == c["call_id"] and c["charge_seq"] is None for c in audit["data"])
    # Each call holds one position of the consumer's spent total: base + k * PRICE, k = 1..8.
    assert sorted(int(c["cumulative"]) for c in audit["data"]) == [base + k * PRICE for k in range(1, 9)]

    fees_before = int(s.client.call(s.contracts.escrow.functions.unsettledFees(model.model_id)))
    assert s.service.charge_pending(model.model_id) == 1
    answered = sum(int(c["fee"]) for c in audit["data"])
    assert answered == 8 * PRICE
    assert _spent(s, consumer.address, model.model_id) - base == answered
    assert int(s.client.call(s.contracts.escrow.functions.unsettledFees(model.model_id))) - fees_before == answered
    seq = int(s.client.call(s.contracts.escrow.functions.chargeSeq(model.model_id)))
    [event] = s.contracts.escrow.events.Charged().get_logs(
        from_block=s.client.w3.eth.block_number, argument_filters={"consumer": consumer.address})
    assert (event["args"]["amount"], event["args"]["cumulativeAmount"], event["args"]["seq"]) == \
        (answered, base + answered, seq)
    # The key itself may read its audit too; every call now names the charge that paid for it.
    again = httpx.get(f"{s.url}/v1/api-keys/{key_id}/calls", headers={"Authorization": f"Bearer {key}"}).json()
    assert {c["charge_seq"] for c in again["data"]} == {seq} and again["key"]["charged"] == str(answered)
    assert s.service.charge_pending(model.model_id) == 0  # nothing answered since: nothing to charge
    # A restarted server finds the key (by its hash) and what was answered and charged under it.
    reopened = ApiKeyBook(s.client, s.contracts, s.service.call_log.directory / "api_keys.sqlite",
                          s.service.vouchers, s.server_key)
    account = reopened.ledger.account(reopened.authenticate(key))
    assert (account.answered, account.channels[model.model_id].charged) == (answered, answered)
    assert key not in (s.service.call_log.directory / "api_keys.sqlite").read_bytes().decode("latin-1")


def test_concurrent_calls_never_exceed_the_cap(stack: ServingStack) -> None:
    s, model = stack, stack.models[1]
    consumer, session = _consumer(s)
    base = _spent(s, consumer.address, model.model_id)
    key = _mint(s, consumer, session, [model.model_id], cap=3 * PRICE).json()["key"]
    oai = _oai(s, key)

    def attempt(i: int) -> int:
        try:
            oai.completions.create(model=model.name, prompt=f"race {i}", max_tokens=2)
            return 200
        except openai.APIStatusError as exc:
            assert "cap" in exc.message
            return exc.status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert sorted(statuses) == [200] * 3 + [402] * 5
    s.service.charge_pending(model.model_id)
    assert _spent(s, consumer.address, model.model_id) - base == 3 * PRICE


def test_expired_revoked_out_of_scope_and_unknown_keys_are_refused(stack: ServingStack) -> None:
    s = stack
    consumer, session = _consumer(s)
    m0, m1 = s.models
    # Long enough for the checks below on a loaded machine; then we wait for it to pass.
    short = _mint(s, consumer, session, [m0.model_id], cap=2 * PRICE, expires_in=4)
    assert short.status_code == 201, short.text
    with pytest.raises(openai.APIStatusError) as scope:
        _oai(s, short.json()["key"]).completions.create(model=m1.name, prompt="x", max_tokens=1)
    assert scope.value.status_code == 402 and "not scoped to model" in scope.value.message
    # A second key on the same spending channel is refused while the first is live.
    assert _mint(s, consumer, session, [m0.model_id], cap=PRICE).status_code == 409
    time.sleep(max(0.0, short.json()["expires_at"] - time.time()) + 0.1)
    with pytest.raises(openai.APIStatusError) as expired:
        _oai(s, short.json()["key"]).completions.create(model=m0.name, prompt="x", max_tokens=1)
    assert expired.value.status_code == 402 and "expired" in expired.value.message

    live = _mint(s, consumer, session, [m1.model_id], cap=2 * PRICE).json()
    oai = _oai(s, live["key"])
    oai.completions.create(model=m1.name, prompt="once", max_tokens=1)
    base = _spent(s, consumer.address, m1.model_id)
    revoked = httpx.delete(f"{s.url}/v1/api-keys/{live['id']}", headers=session)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert _spent(s, consumer.address, m1.model_id) == base + PRICE  # revocation charges what was answered
    with pytest.raises(openai.AuthenticationError) as gone:
        oai.completions.create(model=m1.name, prompt="again", max_tokens=1)
    assert "revoked" in gone.value.message
    with pytest.raises(openai.AuthenticationError):
        _oai(s, "pvk_" + "x" * 43).completions.create(model=m1.name, prompt="x", max_tokens=1)
    # Someone else's session sees no such key.
    _, other_session = _consumer(s)
    assert httpx.get(f"{s.url}/v1/api-keys/{live['id']}/calls", headers=other_session).status_code == 404


def test_mint_refuses_bad_vouchers_and_missing_sessions(stack: ServingStack) -> None:
    s, model = stack, stack.models[0]
    consumer, session = _consumer(s)
    forged = _mint(s, consumer, session, [model.model_id], cap=PRICE, signer=fresh_consumer())
    assert forged.status_code == 402 and "not signed by its consumer" in forged.json()["error"]["message"]
    over = _mint(s, consumer, session, [model.model_id], cap=PRICE, extra=PRICE)
    assert over.status_code == 402 and "spent on chain" in over.json()["error"]["message"]
    broke = _mint(s, consumer, session, [model.model_id], cap=PRICE * 1000)
    assert broke.status_code == 402 and "does not cover" in broke.json()["error"]["message"]
    other, other_session = _consumer(s)
    stolen = _mint(s, consumer, other_session, [model.model_id], cap=PRICE)  # someone else's voucher
    assert stolen.status_code == 403
    assert _mint(s, consumer, {}, [model.model_id], cap=PRICE).status_code == 401
    # Both models in one key, one voucher each; the voucher header path waits while the key is live.
    both = _mint(s, other, other_session, [m.model_id for m in s.models], cap=2 * PRICE)
    assert both.status_code == 201, both.text
    wallet = s.wallet(other)
    wallet.cumulative[model.model_id] = _spent(s, other.address, model.model_id)
    refused = httpx.post(s.url + "/v1/completions", json={"model": model.name, "prompt": "x", "max_tokens": 1},
                         headers=wallet.pay(model.model_id, PRICE), timeout=60)
    assert refused.status_code == 402 and both.json()["id"] in refused.json()["error"]["message"]

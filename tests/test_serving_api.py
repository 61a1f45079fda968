"""The OpenAI-compatible API on a real anvil: the official openai client, receipts, 402, limits, admin."""

from __future__ import annotations

import json
from typing import Iterator

import httpx
import openai
import pytest

from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet
from provenant.chain.keys import dev_accounts
from provenant.serving.devstack import PRICE, ServingStack, build_stack, fresh_consumer
from provenant.serving.lm_engine import MultiLoraModel
from provenant.serving.lm_models import register_lm_models
from provenant.serving.lora import parse_adapter
from provenant.serving.models import ModelRecord
from provenant.serving.payment_header import HEADER
from provenant.serving.receipts import Receipt, check_receipt
from provenant.serving.service import decode_text
from provenant.serving.settings import ServingSettings

ADMIN_TOKEN = "test-admin-" + "x" * 24


@pytest.fixture(scope="module")
def stack(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingStack]:
    workdir = tmp_path_factory.mktemp("serving")
    client_probe = ChainClient(anvil.rpc_url)
    snapshot = client_probe.w3.provider.make_request("evm_snapshot", [])["result"]
    settings = ServingSettings(adapter_budget_bytes=2 * 1_200_000, admin_token=ADMIN_TOKEN, rate_per_s=1000,
                               rate_burst=1000, max_new_tokens=64, max_body_bytes=32_000)
    stack = build_stack(anvil.rpc_url, workdir, 4, settings)
    stack.start_http()
    yield stack
    stack.stop()
    client_probe.w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture(scope="module")
def consumer(stack: ServingStack):  # type: ignore[no-untyped-def]
    account = dev_accounts(12)[9]
    stack.fund(account, [m.model_id for m in stack.models])
    return account


def _oai(stack: ServingStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _expected(stack: ServingStack, model_index: int, prompt: str, max_tokens: int) -> str:
    """The same greedy answer computed directly on the engine, outside HTTP."""
    engine = stack.service.engine("tiny-llama")
    m = stack.models[model_index]
    weights = parse_adapter(m.adapter_bytes, m.config, engine.base.model)
    out: list[int] = []
    MultiLoraModel(engine.base).generate([engine.base.tokenizer.encode(prompt)], [weights], [max_tokens],
                                         lambda _, t: out.append(t), stop_tokens=[engine.base.eos_token_id])
    return decode_text(engine.base, out)


def _verify(stack: ServingStack, raw: dict, model_index: int) -> Receipt:
    receipt = Receipt.from_json(raw)
    record = ModelRecord.fetch(stack.client, stack.contracts, stack.models[model_index].model_id)
    assert check_receipt(receipt, record.server, record.lineage_root, record.adapter_hash) == []
    assert receipt.model_id == record.model_id and receipt.fee == PRICE
    assert receipt.attribution["method"] == "lineage-prior" and receipt.attribution["contributions"]
    return receipt


def test_models_lists_bases_and_registered_models_with_parent(stack: ServingStack) -> None:
    models = _oai(stack).models.list().data
    ids = [m.id for m in models]
    assert ids[:2] == ["tiny-llama", "minilm"] and ids[2:] == [m.name for m in stack.models]
    assert all(m.model_extra["parent"] == "tiny-llama" for m in models[2:])


def test_openai_client_completions_and_receipt(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    wallet = stack.wallet(consumer)
    wallet.cumulative[stack.models[0].model_id] = 0
    oai = _oai(stack)
    result = oai.completions.create(model=stack.models[0].name, prompt="The data says", max_tokens=10,
                                    extra_headers=wallet.pay(stack.models[0].model_id, PRICE))
    assert result.choices[0].text == _expected(stack, 0, "The data says", 10)
    assert result.usage.prompt_tokens == len("The data says") + 1  # bytes + BOS
    receipt = _verify(stack, result.model_extra["provenance"], 0)
    assert result.id == "cmpl-" + receipt.call_id[2:]
    again = httpx.get(f"{stack.url}/v1/receipts/{receipt.call_id}").json()
    assert again == result.model_extra["provenance"]
    # by on-chain id too
    by_id = oai.completions.create(model=str(stack.models[0].model_id), prompt="The data says", max_tokens=10,
                                   extra_headers=wallet.pay(stack.models[0].model_id, PRICE))
    assert by_id.choices[0].text == result.choices[0].text


def test_openai_client_chat_streaming_and_not(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    wallet, model = stack.wallet(consumer), stack.models[1]
    oai = _oai(stack)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "héllo, world"}]
    whole = oai.chat.completions.create(model=model.name, messages=messages, max_tokens=12,
                                        extra_headers=wallet.pay(model.model_id, PRICE))
    assert whole.choices[0].message.role == "assistant"
    _verify(stack, whole.model_extra["provenance"], 1)
    stream = oai.chat.completions.create(model=model.name, messages=messages, max_tokens=12, stream=True,
                                         stream_options={"include_usage": True},
                                         extra_headers=wallet.pay(model.model_id, PRICE))
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer, token by token
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    streamed = _verify(stack, chunks[-1].model_extra["provenance"], 1)
    assert streamed.call_id != whole.model_extra["provenance"]["call_id"]


def test_streaming_completion_raw_sse_ends_with_done(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    wallet, model = stack.wallet(consumer), stack.models[2]
    wallet.cumulative[model.model_id] = int(stack.client.call(
        stack.contracts.escrow.functions.spentOf(consumer.address, model.model_id)))
    body = {"model": model.name, "prompt": "stream me", "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{stack.url}/v1/completions", json=body, headers=wallet.pay(model.model_id, PRICE),
                      timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == _expected(stack, 2, "stream me", 8)
    _verify(stack, chunks[-1]["provenance"], 2)
    assert all("provenance" not in c for c in chunks[:-1])


def test_payment_required_paths(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    oai, model = _oai(stack), stack.models[3]
    pending_before = stack.service.vouchers.pending(model.model_id)
    with pytest.raises(openai.APIStatusError) as missing:
        oai.completions.create(model=model.name, prompt="free?", max_tokens=4)
    assert missing.value.status_code == 402 and HEADER in missing.value.message
    with pytest.raises(openai.APIStatusError) as streamed:  # refused before the stream starts
        oai.chat.completions.create(model=model.name, messages=[{"role": "user", "content": "x"}], stream=True)
    assert streamed.value.status_code == 402
    wallet = stack.wallet(consumer)
    wallet.cumulative[model.model_id] = PRICE * 5  # skips ahead: not "previous + price"
    with pytest.raises(openai.APIStatusError) as wrong:
        oai.completions.create(model=model.name, prompt="x", max_tokens=4, extra_headers=wallet.pay(model.model_id, PRICE))
    assert wrong.value.status_code == 402 and "cumulative amount" in wrong.value.message
    broke = fresh_consumer()  # signs a valid voucher but has no deposit
    with pytest.raises(openai.APIStatusError) as unfunded:
        oai.completions.create(model=model.name, prompt="x", max_tokens=4,
                               extra_headers=stack.wallet(broke).pay(model.model_id, PRICE))
    assert unfunded.value.status_code == 402 and "deposit" in unfunded.value.message
    garbage = httpx.post(f"{stack.url}/v1/completions", headers={HEADER: "not-a-voucher"},
                         json={"model": model.name, "prompt": "x"})
    assert garbage.status_code == 402 and "well-formed" in garbage.json()["error"]["message"]
    assert stack.service.vouchers.pending(model.model_id) == pending_before  # nothing was accepted


def test_bad_input_gets_clear_4xx_and_the_server_keeps_serving(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    url, model = stack.url, stack.models[0]
    cases = [
        ({"model": "no-such-model", "prompt": "x"}, 404),
        ({"model": "999999", "prompt": "x"}, 404),
        ({"model": model.name, "prompt": "x", "max_tokens": 10_000}, 400),
        ({"model": model.name, "prompt": "x", "n": 3}, 400),
        ({"model": model.name, "prompt": ["a", "b"]}, 400),
        ({"model": model.name}, 400),
        ({"model": model.name, "prompt": "x" * 20_000}, 400),
        ({"model": 12, "prompt": None}, 400),
    ]
    wallet = stack.wallet(consumer)
    for body, status in cases:
        response = httpx.post(f"{url}/v1/completions", json=body, headers=wallet.pay(model.model_id, PRICE))
        wallet.refund(model.model_id, PRICE)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]
    assert httpx.post(f"{url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 400
    assert httpx.post(f"{url}/v1/completions", content=b"x" * 40_000).status_code == 413
    chat_on_classifier_route = httpx.post(f"{url}/v1/classifications", json={
        "model": model.name, "input": "x", "payment": {"voucher": {"consumer": consumer.address, "model_id": 1,
                                                                   "cumulative_amount": "1", "deadline": 1},
                                                       "signature": "0x" + "11" * 65}})
    assert chat_on_classifier_route.status_code == 400
    assert httpx.get(f"{url}/v1/receipts/0x{'00' * 32}").status_code == 404
    assert httpx.get(f"{url}/v1/models").status_code == 200  # still alive


def test_rate_limit_per_consumer(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    from provenant.serving.limits import RateLimiter

    model, saved = stack.models[0], stack.service.rate_limiter
    wallet = stack.wallet(consumer)
    # spent on chain + what this server holds uncharged: where this consumer's next voucher starts
    wallet.cumulative[model.model_id] = stack.service.vouchers._expected_previous(model.model_id, consumer.address)
    stack.service.rate_limiter = RateLimiter(rate=0.001, burst=1)
    try:
        ok = httpx.post(f"{stack.url}/v1/completions", json={"model": model.name, "prompt": "a", "max_tokens": 2},
                        headers=wallet.pay(model.model_id, PRICE), timeout=60)
        assert ok.status_code == 200
        limited = httpx.post(f"{stack.url}/v1/completions", json={"model": model.name, "prompt": "a", "max_tokens": 2},
                             headers=wallet.pay(model.model_id, PRICE))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    finally:
        stack.service.rate_limiter = saved


def test_admin_endpoints_need_the_token(stack: ServingStack) -> None:
    model = stack.models[3]
    url = f"{stack.url}/v1/admin/adapters"
    assert httpx.post(f"{url}/{model.name}/load").status_code == 401
    assert httpx.post(f"{url}/{model.name}/pin", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = httpx.get(url, headers={"Authorization": "Bearer wrong"})
    assert ADMIN_TOKEN not in response.text
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert httpx.post(f"{url}/{model.name}/pin", headers=auth).json()["pinned"] is True
    listed = httpx.get(url, headers=auth).json()
    assert {"model_id": model.model_id, "pinned": True} .items() <= next(
        a for a in listed["adapters"] if a["model_id"] == model.model_id).items()
    assert httpx.post(f"{url}/{model.name}/unpin", headers=auth).json()["pinned"] is False
    assert httpx.post(f"{url}/{model.name}/unload", headers=auth).json()["unloaded"] is True
    assert httpx.post(f"{url}/no-such/load", headers=auth).status_code == 404


def test_model_registered_after_start_is_served_without_restart(stack: ServingStack, consumer) -> None:  # type: ignore[no-untyped-def]
    keys = dev_accounts(12)
    [late] = register_lm_models(stack.client, stack.contracts, stack.store, stack.builder, keys[6], keys[7],
                                stack.server_key.address, 1, PRICE, prefix="late", first_seed=77)
    stack.fund(consumer, [late.model_id])
    out = _oai(stack).completions.create(model=late.name, prompt="new", max_tokens=4,
                                         extra_headers=stack.wallet(consumer).pay(late.model_id, PRICE))
    assert out.model == late.name
    assert late.name in [m.id for m in _oai(stack).models.list().data]


def test_lru_budget_below_adapter_set_under_concurrent_http_load(stack: ServingStack) -> None:
    """Budget = 2 adapters, 4 models, 16 concurrent paid streams: all answers exact, no in-use eviction."""
    from concurrent.futures import ThreadPoolExecutor

    consumers = [fresh_consumer() for _ in range(4)]
    for c in consumers:
        stack.fund(c, [m.model_id for m in stack.models])
    expected = {i: _expected(stack, i, f"load {i}", 6) for i in range(4)}
    evictions_before = len(stack.service.adapters.stats.evictions)

    def stream(job: int) -> list[str]:
        consumer, i = consumers[job // 4], job % 4
        wallet, oai = stack.wallet(consumer), _oai(stack)
        return [oai.completions.create(model=stack.models[i].name, prompt=f"load {i}", max_tokens=6,
                                       extra_headers=wallet.pay(stack.models[i].model_id, PRICE)).choices[0].text
                for _ in range(2)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(stream, range(16)))
    assert all(texts == [expected[job % 4]] * 2 for job, texts in enumerate(results))
    stats = stack.service.adapters.stats
    assert len(stats.evictions) > evictions_before
    assert all(in_use == 0 for _, in_use in stats.evictions)
    assert stats.peak_bytes <= stack.service.adapters.budget_bytes
    # The vouchers of every answered call are charged on chain in one transaction per model.
    model = stack.models[0]
    stack.service.charge_pending(model.model_id)
    assert int(stack.client.call(stack.contracts.escrow.functions.spentOf(consumers[0].address,
                                                                           model.model_id))) == 2 * PRICE

"""x402 on the OpenAI-compatible LM endpoints: /v1/completions and /v1/chat/completions (also
streamed) answer 402 in the x402 v2 format and are paid by the official `x402` client; each paid
call is one charge in the model's escrowed fees, logged with its authorization's nonce."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Iterator

import pytest
import requests
from eth_account.signers.local import LocalAccount
from x402 import x402ClientSync
from x402.http.clients import x402_requests
from x402.http.utils import decode_payment_required_header
from x402.mechanisms.evm.exact import ExactEvmClientScheme

from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet
from provenant.serving.calllog import CallLog
from provenant.serving.devstack import PRICE, ServingStack, build_stack, fresh_consumer
from provenant.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def stack(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServingStack, Path]]:
    probe = ChainClient(anvil.rpc_url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    workdir = tmp_path_factory.mktemp("x402lm")
    s = build_stack(anvil.rpc_url, workdir, 1, ServingSettings(rate_per_s=1000, rate_burst=1000, max_new_tokens=8),
                    prefix="x402lm")
    s.start_http()
    yield s, workdir
    s.stop()
    probe.w3.provider.make_request("evm_revert", [snapshot])


def _payer(s: ServingStack) -> LocalAccount:
    payer = fresh_consumer()
    s.client.w3.provider.make_request("anvil_setBalance", [payer.address, hex(10**18)])
    s.client.transact(s.admin, s.contracts.token.functions.transfer(payer.address, 10**18))
    return payer


def _session(payer: LocalAccount, token: str) -> requests.Session:
    x402 = x402ClientSync()
    x402.register("eip155:31337", ExactEvmClientScheme(payer))
    x402.set_spend_controls({"allowed_assets": [{"network": "eip155:31337", "asset": token}]})
    return x402_requests(x402)


def test_unpaid_completion_answers_402_with_requirements(stack: tuple[ServingStack, Path]) -> None:
    s, _ = stack
    model = s.models[0]
    response = requests.post(s.url + "/v1/completions", json={"model": model.name, "prompt": "hi", "max_tokens": 2},
                             timeout=60)
    assert response.status_code == 402
    required = decode_payment_required_header(response.headers["PAYMENT-REQUIRED"])
    [req] = required.accepts
    assert (req.scheme, req.amount, req.network) == ("exact", str(PRICE), "eip155:31337")
    assert req.pay_to == s.client.call(s.contracts.x402.functions.vaultOf(model.model_id))


@pytest.mark.parametrize(("path", "body", "stream"), [
    ("/v1/completions", {"prompt": "The river", "max_tokens": 3}, False),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}, False),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "stream it"}], "max_tokens": 3}, True),
])
def test_official_client_pays_lm_calls(stack: tuple[ServingStack, Path], path: str, body: dict,
                                       stream: bool) -> None:
    s, workdir = stack
    model = s.models[0]
    payer = _payer(s)
    escrow, token = s.contracts.escrow.functions, s.contracts.token.functions
    seq = int(s.client.call(escrow.chargeSeq(model.model_id)))
    response = _session(payer, s.contracts.token.address).post(
        s.url + path, json={"model": model.name, **body, "stream": stream}, timeout=120)
    assert response.status_code == 200, response.text
    settle = json.loads(base64.b64decode(response.headers["PAYMENT-RESPONSE"]))
    assert settle["success"] and settle["payer"] == payer.address and settle["amount"] == str(PRICE)
    if stream:
        chunks = [json.loads(line[6:]) for line in response.text.splitlines()
                  if line.startswith("data: {")]
        receipt = chunks[-1]["provenance"]
    else:
        receipt = response.json()["provenance"]
    assert receipt["consumer"] == payer.address
    assert int(s.client.call(escrow.chargeSeq(model.model_id))) == seq + 1
    assert int(s.client.call(token.balanceOf(payer.address))) == 10**18 - PRICE
    nonce = json.loads(base64.b64decode(response.request.headers["PAYMENT-SIGNATURE"]))["payload"]["authorization"]["nonce"]
    logged = {r.call_id: r for r in CallLog(workdir / "calls").read(model.model_id)}
    assert logged[receipt["call_id"]].cumulative == int(nonce, 16)


def test_runtime_routes_the_declared_royalty_after_an_earning_answer(stack: tuple[ServingStack, Path]) -> None:
    """The agent runtime's answer step with "route": true sends the owed royalty on chain; the
    model's fees rise by exactly it and `verify action` checks the RoyaltyRouted event."""
    from eth_account import Account

    from provenant.agents.registry import RegistrationFile, register_agent
    from provenant.agents.runtime import AgentRuntime, Step, Tools
    from provenant.agents.sdk import AgentSession
    from provenant.agents.verify import verify_action

    s, _ = stack
    model = s.models[0]
    wallet = _payer(s)
    s.fund(wallet, [model.model_id], deposit=10 * PRICE)
    operator = Account.create()
    agent = register_agent(s.client, s.contracts, s.store, wallet,
                           RegistrationFile(name="router-bot", description="routes", operator=operator.address))
    session = AgentSession.open(s.client, s.contracts, operator, agent.agent_id)
    fees = s.contracts.escrow.functions.unsettledFees
    before = int(s.client.call(fees(model.model_id)))
    run = AgentRuntime(session, Tools(s.client, s.contracts, s.url, wallet)).run([
        Step("call_model", {"model": model.name, "prompt": "rivers", "max_tokens": 2}),
        Step("answer", {"text": "{step0}", "earned": 10**17, "royalty_ppm": 250_000, "route": True}),
    ])
    assert run.royalty is not None and run.royalty.amounts == {model.model_id: 10**17 // 4}
    assert int(s.client.call(fees(model.model_id))) == before + 10**17 // 4
    verdict = verify_action(s.client, s.contracts, s.store, run.bundle)
    assert verdict.ok, verdict.reasons
    assert any("RoyaltyRouted events route exactly" in c for c in verdict.checks)

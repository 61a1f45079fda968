"""The agent page (web/src/pages/agents.tsx) in real headless Chromium against the real backend and a
real anvil: two served models, a registered ERC-8004 agent whose scripted run (every step real: paid
model calls with receipts, a token transfer, a result that earns and routes a royalty) is published
under the home, plus a tampered copy that the backend must refuse to show.

The backend is `provenant.api.app.create_app` served by uvicorn in a subprocess, which
mounts the agents router (backend/provenant/api/agents.py).
Screenshots at desktop and phone width go to build/web-screenshots/ (the committed copies are in
docs/screenshots/agents-*.png).
"""

from __future__ import annotations

import json
import sys
import urllib.error
from dataclasses import dataclass
from typing import Iterator

import pytest
from eth_account import Account

from provenant.agents.publish import agent_dir, publish_bundle
from provenant.agents.receipts import PPM
from provenant.agents.registry import RegistrationFile, register_agent
from provenant.agents.runtime import AgentRuntime, Step, Tools
from provenant.agents.sdk import AgentSession
from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet, free_port
from provenant.chain.keys import dev_accounts
from provenant.serving.devstack import ServingStack, build_stack
from provenant.serving.settings import ServingSettings
from web_support import PHONE, SHOTS, browser, get, new_page, open_page, page_overflow, require_browser_tools, \
    serve_backend, shots_on_failure  # noqa: F401 - fixture used by name

EARNED = 5 * 10**18
ROYALTY_PPM = 250_000

LAUNCH = r"""
import sys
from pathlib import Path

import uvicorn

from provenant.api.app import AppSettings, create_app

rpc, home, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
settings = AppSettings(rpc_url=rpc, home=home, domain=f"127.0.0.1:{port}", follow_chain=False, run_jobs=False)
app = create_app(settings)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


@dataclass
class AgentStack:
    url: str
    serving: ServingStack
    agent_id: int
    actions: list[str]  # hashes, in signing order
    model_names: list[str]
    tampered_file: str


def _plan(models: list[str], payee: str) -> list[Step]:
    """Two roots (one call per model), a fan-in call, a payment, and a result resting on both."""
    a, b = models
    return [
        Step("call_model", {"model": a, "prompt": "Where do rivers go?", "max_tokens": 4}, after=()),
        Step("call_model", {"model": b, "prompt": "Where do rivers start?", "max_tokens": 4}, after=()),
        Step("call_model", {"model": a, "prompt": "Combine {step0} and {step1}", "max_tokens": 4}, after=(0, 1)),
        Step("transfer", {"to": payee, "amount": 10**15}, after=(2,)),
        Step("answer", {"text": "{step2}", "question": "rivers", "earned": EARNED, "royalty_ppm": ROYALTY_PPM},
             after=(2, 3)),
    ]


@pytest.fixture(scope="module")
def stack(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentStack]:
    require_browser_tools()
    probe = ChainClient(anvil.rpc_url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    workdir = tmp_path_factory.mktemp("web-agents")
    serving = build_stack(anvil.rpc_url, workdir, 2, ServingSettings(rate_per_s=1000, rate_burst=1000,
                                                                     max_new_tokens=8), prefix="weblm")
    home = workdir / "home"
    (home / "store").symlink_to(workdir / "store")  # the app reads <home>/store; the stack wrote ./store
    serving.start_http()
    keys = dev_accounts(12)
    owner, wallet = keys[10], keys[11]
    serving.fund(wallet, [m.model_id for m in serving.models])
    serving.client.transact(serving.admin, serving.contracts.token.functions.transfer(wallet.address, 10**18))
    operator = Account.create()
    agent = register_agent(serving.client, serving.contracts, serving.store, owner, RegistrationFile(
        name="river-researcher", description="answers questions about rivers", operator=operator.address,
        services=({"name": "web", "endpoint": serving.url},)))
    session = AgentSession.open(serving.client, serving.contracts, operator, agent.agent_id)
    tools = Tools(serving.client, serving.contracts, serving.url, wallet)
    names = [m.name for m in serving.models]
    run = AgentRuntime(session, tools).run(_plan(names, keys[4].address))
    assert run.bundle is not None
    publish_bundle(home, run.bundle)
    tampered = run.bundle.to_json()
    middle = next(a for a in tampered["actions"] if a["seq"] == 3)
    middle["value_moved"] = "1"  # an altered copy published beside the real one: never shown
    tampered_file = "0x" + "ee" * 32 + ".json"
    (agent_dir(home, agent.agent_id) / tampered_file).write_text(json.dumps(tampered))

    port = free_port()
    try:
        with serve_backend([sys.executable, "-c", LAUNCH, anvil.rpc_url, str(home), str(port)], port,
                           workdir / "app.log", "the backend") as url:
            yield AgentStack(url=url, serving=serving, agent_id=agent.agent_id, actions=[a.hash for a in run.actions],
                             model_names=names, tampered_file=tampered_file)
    finally:
        serving.stop()
        probe.w3.provider.make_request("evm_revert", [snapshot])


@pytest.fixture()
def page(browser, stack: AgentStack, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    pg = new_page(browser, timeout_ms=30_000)
    with shots_on_failure(request, {request.node.name: pg}):
        yield pg
    pg.context.close()


def _open(page, stack: AgentStack, route: str) -> None:  # type: ignore[no-untyped-def]
    # The agent page keeps a role=status notice (a bundle that did not verify): only the rest is loading.
    open_page(page, stack, route, loading="main [role=status]:not(.notice)")


def _json(url: str) -> dict:
    return json.loads(get(url, timeout=60))


def test_api_serves_only_verified_actions_and_names_the_refused_bundle(stack: AgentStack) -> None:
    base = f"{stack.url}/v1/agents/{stack.agent_id}"
    info = _json(base)
    assert info["registration"]["name"] == "river-researcher" and info["actions"] == 5
    assert info["earned_wei"] == str(EARNED) and info["royalty_wei"] == str(EARNED * ROYALTY_PPM // PPM)
    refused = [b for b in info["bundles"] if not b["ok"]]
    assert [b["file"] for b in refused] == [stack.tampered_file] and "altered" in refused[0]["reasons"][0]
    dag = _json(f"{base}/actions")
    assert [a["hash"] for a in dag["actions"]] == stack.actions
    assert [len(a["parents"]) for a in dag["actions"]] == [0, 0, 2, 1, 2]
    assert "salt" not in next(iter(dag["model_calls"].values()))
    detail = _json(f"{base}/actions/{stack.actions[-1]}")
    assert detail["ok"] and detail["beneath"] == 5
    owed = detail["ancestry"]["owed"]
    assert int(detail["ancestry"]["royalty_pool_wei"]) == EARNED * ROYALTY_PPM // PPM
    assert {r["role"] for r in owed} >= {"model", "contributor", "curator", "owner", "protocol"}
    for missing, code in ((f"{stack.url}/v1/agents/999", 404), (f"{base}/actions/0x" + "ab" * 32, 404),
                          (f"{base}/actions/0x12", 422)):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(missing, timeout=30)
        assert err.value.code == code, missing


def test_agent_page_shows_the_graph_and_an_actions_ancestry(page, stack: AgentStack) -> None:  # type: ignore
    SHOTS.mkdir(parents=True, exist_ok=True)
    _open(page, stack, "agents")
    listed = page.locator("main table").inner_text()
    assert "river-researcher" in listed
    page.screenshot(path=str(SHOTS / "agents-desktop.png"), full_page=True)
    page.get_by_role("link", name=f"#{stack.agent_id}").click()
    page.get_by_test_id("agent-graph").wait_for()
    page.get_by_test_id("action-detail").wait_for()
    assert "river-researcher" in page.get_by_test_id("agent-title").inner_text()
    nodes = page.get_by_test_id("action-node")
    assert nodes.count() == 5 and page.get_by_test_id("agent-edge").count() == 5
    kinds = [nodes.nth(i).get_attribute("data-kind") for i in range(5)]
    assert sorted(kinds) == ["model_call", "model_call", "model_call", "payment", "result"]
    # the default selection is the final result: verified, its ancestry over the whole DAG, its royalty owed
    assert page.get_by_test_id("action-verdict").inner_text().startswith("Verified")
    assert page.get_by_test_id("agent-earned").inner_text() == "5 PVN"
    assert page.get_by_test_id("royalty-pool").inner_text() == "1.25 PVN"
    ancestry = page.get_by_test_id("ancestry").inner_text()
    assert "Datanet" in ancestry and "%" in ancestry and all(n in ancestry or "model" in ancestry.lower()
                                                              for n in ("Models", "Contributors"))
    owed = page.get_by_test_id("owed").inner_text()
    assert "contributor" in owed and "protocol" in owed and "curator" in owed
    assert "did not verify" in page.locator("main .notice").inner_text()
    page.screenshot(path=str(SHOTS / f"agents-{stack.agent_id}-desktop.png"), full_page=True)

    # open the fan-in model call: its receipt's attribution (contributions, contributors, Datanets)
    page.locator(f"[data-testid=action-node][data-seq='3']").click()
    page.wait_for_url(f"**/#/agents/{stack.agent_id}/{stack.actions[2]}")
    page.get_by_test_id("model-call").wait_for()
    call = page.get_by_test_id("model-call").inner_text()
    assert stack.model_names[0] in call and "Datanet" in call and "#" in call and "%" in call
    assert "over 3 actions" in page.locator("#ancestry").inner_text()
    page.screenshot(path=str(SHOTS / f"agents-{stack.agent_id}-call-desktop.png"), full_page=True)

    page.set_viewport_size(PHONE)
    _open(page, stack, f"agents/{stack.agent_id}")
    page.get_by_test_id("action-detail").wait_for()
    overflow = page_overflow(page)
    assert overflow <= 1, f"the agent page is {overflow}px wider than the phone viewport"
    page.screenshot(path=str(SHOTS / f"agents-{stack.agent_id}-phone.png"), full_page=True)
    assert page.console.errors == []


def test_keyboard_opens_an_action(page, stack: AgentStack) -> None:  # type: ignore[no-untyped-def]
    _open(page, stack, f"agents/{stack.agent_id}")
    page.get_by_test_id("action-detail").wait_for()
    page.locator("[data-testid=action-node][data-seq='1']").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/#/agents/{stack.agent_id}/{stack.actions[0]}")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=action-detail]')?.textContent.includes('Action #1')")
    assert page.console.errors == []

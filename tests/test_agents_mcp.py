"""The MCP server (`provenant agent mcp`) driven by the `mcp` package's own client, over stdio and
over streamable HTTP, against a real anvil and two really served models: answers come with receipts
that verify, the agent's actions are signed and publish as a bundle that `verify action` accepts,
and bad input (unknown model, malformed receipt or bundle, unknown call id) is a clear tool error."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from provenant.agents.bundle import ActionBundle
from provenant.agents.publish import agent_dir, next_seq
from provenant.agents.registry import AgentInfo, RegistrationFile, register_agent
from provenant.agents.verify import verify_action
from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet, free_port
from provenant.chain.keys import dev_accounts
from provenant.serving.devstack import ServingStack, build_stack
from provenant.serving.settings import ServingSettings

PROVENANT = str(Path(sys.executable).parent / "provenant")
TOOLS = {"list_models", "call_model", "get_receipt", "verify_receipt", "verify_action", "record_action",
         "publish_actions"}


@dataclass
class McpWorld:
    stack: ServingStack
    workdir: Path
    wallet: LocalAccount
    operator: LocalAccount
    agent: AgentInfo

    def args(self, transport: str, *extra: str) -> list[str]:
        return ["agent", "mcp", "--transport", transport, "--serving-url", self.stack.url,
                "--rpc-url", self.stack.client.rpc_url, "--home", str(self.workdir / "home"),
                "--agent-id", str(self.agent.agent_id), *extra]

    def env(self) -> dict[str, str]:
        # keys reach the server through its environment only, never through a tool argument
        return {**os.environ, "PROVENANT_KEY": self.wallet.key.hex(), "PROVENANT_OPERATOR_KEY": self.operator.key.hex(),
                "PROVENANT_STORE": str(self.workdir / "store"), "PROVENANT_MCP_TOKEN": MCP_TOKEN}


MCP_TOKEN = "test-bearer-" + "7" * 24  # the HTTP transport's shared secret (its tools spend the wallet)


@pytest.fixture(scope="module")
def world(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpWorld]:
    probe = ChainClient(anvil.rpc_url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    workdir = tmp_path_factory.mktemp("mcp")
    stack = build_stack(anvil.rpc_url, workdir, 2, ServingSettings(rate_per_s=1000, rate_burst=1000,
                                                                   max_new_tokens=16), prefix="mcplm")
    stack.start_http()
    keys = dev_accounts(12)
    owner, wallet = keys[10], keys[11]
    stack.fund(wallet, [m.model_id for m in stack.models])
    operator = Account.create()
    agent = register_agent(stack.client, stack.contracts, stack.store, owner, RegistrationFile(
        name="mcp-agent", description="an MCP-capable agent", operator=operator.address,
        services=({"name": "MCP", "endpoint": "stdio"},)))
    yield McpWorld(stack=stack, workdir=workdir, wallet=wallet, operator=operator, agent=agent)
    stack.stop()
    probe.w3.provider.make_request("evm_revert", [snapshot])


def _data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


def _error(result: Any) -> str:
    assert result.is_error
    return result.content[0].text


async def _exercise(client: Client, world: McpWorld) -> dict[str, Any]:
    """The same session over either transport: models, paid calls, receipts, actions, bad input."""
    names = {t.name for t in (await client.list_tools()).tools}
    assert TOOLS <= names
    models = _data(await client.call_tool("list_models", {}))["models"]
    by_name = {m["name"]: m for m in models}
    assert set(by_name) == {m.name for m in world.stack.models}
    calls = []
    for m in world.stack.models:
        out = _data(await client.call_tool("call_model", {"model": m.name, "prompt": "Where do rivers go?",
                                                          "max_tokens": 4}))
        receipt = out["receipt"]
        assert isinstance(out["answer"], str) and receipt["model_id"] == m.model_id
        assert receipt["consumer"] == world.wallet.address
        assert int(receipt["fee"]) == int(by_name[m.name]["price_per_call"])
        assert out["verification"]["ok"], out["verification"]["reasons"]
        assert receipt["attribution"]["contributions"], "the receipt names the data behind the answer"
        action = out["action"]
        assert action["kind"] == "model_call" and action["model_call_ids"] == [receipt["call_id"]]
        calls.append(out)
    fetched = _data(await client.call_tool("get_receipt", {"call_id": calls[0]["receipt"]["call_id"]}))["receipt"]
    assert fetched == calls[0]["receipt"]
    assert _data(await client.call_tool("verify_receipt", {"receipt": fetched}))["ok"]
    tampered = {**fetched, "fee": str(int(fetched["fee"]) + 1)}
    verdict = _data(await client.call_tool("verify_receipt", {"receipt": tampered}))
    assert not verdict["ok"] and verdict["reasons"]

    final = _data(await client.call_tool("record_action", {
        "kind": "result", "input": "rivers", "output": calls[-1]["answer"], "value_earned": str(10**18),
        "royalty_ppm": 100_000, "parents": [c["action"]["hash"] for c in calls]}))["action"]
    published = _data(await client.call_tool("publish_actions", {}))
    assert published["head"] == final["hash"] and published["verification"]["ok"]
    owed = published["verification"]["ancestry"]["owed"]
    assert int(published["verification"]["ancestry"]["royalty_pool_wei"]) == 10**17
    assert {r["role"] for r in owed} >= {"model", "contributor", "protocol"}
    # checked again here, in this process, from the file the server published for the web app
    path = Path(published["path"])
    assert path.parent == agent_dir(world.workdir / "home", world.agent.agent_id)
    local = verify_action(world.stack.client, world.stack.contracts, world.stack.store, ActionBundle.load(path))
    assert local.ok and len(local.actions) == 3
    assert _data(await client.call_tool("verify_action", {"bundle": published["bundle"]}))["ok"]

    # bad input: clear tool errors, nothing signed or paid
    assert "unknown model 'no-such-model'" in _error(await client.call_tool(
        "call_model", {"model": "no-such-model", "prompt": "hi"}))
    assert "malformed receipt" in _error(await client.call_tool("verify_receipt", {"receipt": {"call_id": "0x12"}}))
    bad_hash = {**fetched, "prompt_hash": "0xnothex"}
    assert "malformed receipt" in _error(await client.call_tool("verify_receipt", {"receipt": bad_hash}))
    assert "malformed action bundle" in _error(await client.call_tool("verify_action", {"bundle": {"head": "0x1"}}))
    assert "no receipt for call" in _error(await client.call_tool("get_receipt", {"call_id": "0x" + "ab" * 32}))
    refused = await client.call_tool("record_action", {"kind": "launch", "input": "", "output": ""})
    assert "not one of" in _error(refused)
    after = _data(await client.call_tool("call_model", {"model": world.stack.models[0].name, "prompt": "again",
                                                        "max_tokens": 2}))
    assert after["verification"]["ok"]  # the refused calls left the wallet's vouchers in step
    altered = json.loads(json.dumps(published["bundle"]))
    altered["actions"][0]["value_earned"] = "1"
    broken = _data(await client.call_tool("verify_action", {"bundle": altered}))
    assert not broken["ok"] and "altered" in broken["reasons"][0]
    return {"published": published, "final": final}


def test_mcp_over_stdio(world: McpWorld) -> None:
    params = StdioServerParameters(command=PROVENANT, args=world.args("stdio"), env=world.env())

    async def run() -> dict[str, Any]:
        async with Client(params, read_timeout_seconds=120) as client:
            return await _exercise(client, world)

    result = asyncio.run(run())
    assert result["final"]["seq"] == 3


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the MCP server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the MCP server did not listen in time")


def test_mcp_over_streamable_http(world: McpWorld, tmp_path: Path) -> None:
    first = next_seq(world.workdir / "home", world.agent.agent_id)
    for m in world.stack.models:  # the serving side's batch: a new wallet process starts from the escrow
        world.stack.service.charge_pending(m.model_id)
    port = free_port()
    log = (tmp_path / "mcp.log").open("wb")
    proc = subprocess.Popen([PROVENANT, *world.args("http", "--port", str(port))], env=world.env(),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/mcp"
        hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}):  # no token, a wrong one
            refused = httpx.post(url, json=hello, headers={**headers, "Accept": "application/json, text/event-stream"},
                                 timeout=30)
            assert refused.status_code == 401 and "bearer" in refused.headers.get("www-authenticate", "").lower()

        async def run() -> dict[str, Any]:
            http = create_mcp_http_client(headers={"Authorization": f"Bearer {MCP_TOKEN}"})
            async with http, Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120) as client:
                return await _exercise(client, world)

        result = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    # a restarted server continues the agent's sequence from what it published: no replayed seq
    assert result["final"]["seq"] == first + 2
    text = (tmp_path / "mcp.log").read_text(errors="replace")
    assert world.wallet.key.hex()[2:] not in text and world.operator.key.hex()[2:] not in text
    assert MCP_TOKEN not in text

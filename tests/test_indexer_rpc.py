"""RPC limits (a proxy with a 1,000-block eth_getLogs cap, 429s and 503s), the adaptive range,
and the fast ABI decoder against eth_abi on every event the project emits."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from provenant.chain.devnet import Devnet
from provenant_indexer import Indexer
from provenant_indexer.abi import CompiledEvent, EventTable, event_specs
from provenant_indexer.api import create_app
from provenant_indexer.ranges import AdaptiveRange
from provenant_indexer.rpc import Backoff, JsonRpc
from provenant_indexer.workload import World
from test_indexer_support import (  # noqa: F401 - fixtures
    Databases, act, assert_equals_fresh, config_for, mine, rpc, sqlite_dbs, world,
)


class LimitingProxy:
    """Forwards JSON-RPC to anvil like a hosted node would: at most `cap` blocks per eth_getLogs,
    HTTP 429 on every 5th request and HTTP 503 on every 7th."""

    def __init__(self, upstream: str, cap: int = 1000) -> None:
        self.upstream, self.cap = upstream, cap
        self.http = httpx.Client()
        self.requests = self.refused_ranges = self.rate_limited = self.failed = 0
        self.largest_served = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.requests % 5 == 2:
            self.rate_limited += 1
            return httpx.Response(429, text="Too Many Requests")
        if self.requests % 7 == 3:
            self.failed += 1
            return httpx.Response(503, text="Service Unavailable")
        payload = json.loads(request.content)
        if isinstance(payload, dict) and payload["method"] == "eth_getLogs":
            f = payload["params"][0]
            span = int(f["toBlock"], 16) - int(f["fromBlock"], 16) + 1
            if span > self.cap:
                self.refused_ranges += 1
                return httpx.Response(200, json={"jsonrpc": "2.0", "id": payload["id"], "error": {
                    "code": -32600, "message": f"block range too large: {span} > {self.cap}"}})
            self.largest_served = max(self.largest_served, span)
        upstream = self.http.post(self.upstream, content=request.content, headers={"content-type": "application/json"})
        return httpx.Response(upstream.status_code, content=upstream.content)


def test_a_capped_rate_limited_node_misses_no_event(world: World, rpc: JsonRpc, anvil: Devnet,
                                                    sqlite_dbs: Databases) -> None:
    act(world, 40)
    rpc.call("anvil_mine", [hex(1200)])  # a quiet stretch: a 2,000-block range is over the cap
    act(world, 30)
    proxy = LimitingProxy(anvil.rpc_url)
    limited = JsonRpc(anvil.rpc_url, client=httpx.Client(transport=httpx.MockTransport(proxy)),
                      backoff=Backoff(retries=20, base_s=0.001, max_s=0.01))
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, range_max=4000), rpc=limited)
    indexer.fetcher.rate_limit_pause_s = 0.001
    indexer.run_until_head()
    assert proxy.refused_ranges > 0 and proxy.rate_limited > 0 and proxy.failed > 0
    assert proxy.largest_served <= 1000
    assert_equals_fresh(engine, sqlite_dbs, world.c, anvil.rpc_url)


def test_adaptive_range_halves_and_grows_back() -> None:
    r = AdaptiveRange(start=2000, maximum=2000, grow_after=2)
    assert r.refused() and r.size == 1000
    assert r.refused() and r.size == 500
    r.succeeded()
    assert r.size == 500
    r.succeeded()
    assert r.size == 1000
    r.succeeded(), r.succeeded()
    assert r.size == 2000
    r.succeeded(), r.succeeded()
    assert r.size == 2000
    tiny = AdaptiveRange(start=1, maximum=1)
    assert not tiny.refused()


def test_fast_decoder_equals_eth_abi_on_every_project_event(world: World, rpc: JsonRpc) -> None:
    act(world, 80)
    table = EventTable.from_artifacts({**world.c.manifest.addresses, **world.c.manifest.extras()})
    logs = rpc.get_logs(world.c.manifest.block_number, rpc.block_number(), table.addresses)
    seen = set()
    for entry in logs:
        event = table.lookup(entry["address"], entry["topics"][0])
        assert event.decode(entry["topics"], entry["data"]) == event.decode_with_eth_abi(entry["topics"], entry["data"])
        seen.add(event.name)
    assert {"ContributionSubmitted", "ModelLineage", "Charged", "EpochSettled", "Claimed", "Transfer"} <= seen


@pytest.mark.parametrize("value", [0, 1, -1, 2**255 - 1, -(2**255), -12345])
def test_signed_and_fallback_decoding(value: int) -> None:
    from eth_abi import encode

    abi = [{"type": "event", "name": "E", "anonymous": False, "inputs": [
        {"name": "a", "type": "int256", "indexed": True}, {"name": "b", "type": "int8", "indexed": False},
        {"name": "c", "type": "bool", "indexed": False}, {"name": "d", "type": "bytes", "indexed": False},
        {"name": "e", "type": "uint256[2]", "indexed": False}]}]
    (spec,) = event_specs("X", abi)
    event = CompiledEvent(spec)
    topic = "0x" + encode(["int256"], [value]).hex()
    data = "0x" + encode(["int8", "bool", "bytes", "uint256[2]"], [-3, True, b"\x01\x02", [5, 6]]).hex()
    decoded = event.decode([spec.topic0, topic], data)
    assert decoded == {"a": value, "b": -3, "c": True, "d": "0x0102", "e": [5, 6]}
    assert decoded == event.decode_with_eth_abi([spec.topic0, topic], data)


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_following_the_head_and_reporting_a_stall(world: World, rpc: JsonRpc, anvil: Devnet,
                                                  sqlite_dbs: Databases) -> None:
    engine = sqlite_dbs.engine()
    indexer = Indexer(engine, config_for(world.c, anvil.rpc_url, poll_interval=0.02, stall_polls=3))
    stop = threading.Event()
    runner = threading.Thread(target=indexer.follow, args=(stop,), daemon=True)
    runner.start()
    try:
        act(world, 6)
        assert _wait(lambda: indexer.status.indexed_head == rpc.block_number())
        health = TestClient(create_app(engine, status=indexer.status, rpc_url=anvil.rpc_url)).get("/health").json()
        assert health["ok"] and health["lag"] == 0 and not health["stalled"]
    finally:
        stop.set()
        runner.join(10)

    def broken(request: httpx.Request) -> httpx.Response:  # eth_getLogs always fails; the rest works
        payload = json.loads(request.content)
        if isinstance(payload, dict) and payload["method"] == "eth_getLogs":
            return httpx.Response(503)
        upstream = httpx.post(anvil.rpc_url, content=request.content, headers={"content-type": "application/json"})
        return httpx.Response(200, content=upstream.content)

    failing = JsonRpc(anvil.rpc_url, client=httpx.Client(transport=httpx.MockTransport(broken)),
                      backoff=Backoff(retries=1, base_s=0.001))
    stalled = Indexer(engine, config_for(world.c, anvil.rpc_url, poll_interval=0.01, stall_polls=3), rpc=failing)
    act(world, 2)
    stop = threading.Event()
    runner = threading.Thread(target=stalled.follow, args=(stop,), daemon=True)
    runner.start()
    try:
        assert _wait(lambda: stalled.status.stalled)
        health = TestClient(create_app(engine, status=stalled.status)).get("/health").json()
        assert health["stalled"] and not health["ok"] and "503" in health["last_error"]
    finally:
        stop.set()
        runner.join(10)

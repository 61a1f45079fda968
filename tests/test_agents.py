"""Agents on a real anvil: an ERC-8004 registered agent runs 12 signed actions over real model-call
receipts from two served models; `verify action` passes, and fails naming the broken link for an
altered action, an unknown parent, a forged signature, an unregistered key and replays."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Iterator

import pytest
from eth_account import Account

from provenant.agents.ancestry import BPS
from provenant.agents.bundle import ActionBundle
from provenant.agents.receipts import PPM, ActionReceipt
from provenant.agents.registry import agent_info, load_registration, registry_of
from provenant.agents.sdk import AgentSession, OperatorNotRegistered
from provenant.agents.verify import ActionVerdict, verify_action
from provenant.chain.client import ChainClient
from provenant.chain.devnet import Devnet
from provenant.chain.errors import TransactionReverted
from test_agents_support import EARNED, ROYALTY_PPM, AgentWorld, build_world


@pytest.fixture(scope="module")
def world(anvil: Devnet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentWorld]:
    probe = ChainClient(anvil.rpc_url)
    snapshot = probe.w3.provider.make_request("evm_snapshot", [])["result"]
    w = build_world(anvil.rpc_url, tmp_path_factory.mktemp("agents"))
    yield w
    w.stack.stop()
    probe.w3.provider.make_request("evm_revert", [snapshot])


def _verify(w: AgentWorld, bundle: dict | ActionBundle | Path) -> ActionVerdict:
    return verify_action(w.stack.client, w.stack.contracts, w.stack.store, bundle)


def _session(w: AgentWorld, first_seq: int) -> AgentSession:
    return AgentSession.open(w.stack.client, w.stack.contracts, w.operator, w.agent.agent_id, first_seq=first_seq)


def _extend(w: AgentWorld, action: ActionReceipt) -> dict:
    """The run's bundle with one more action as its head."""
    bundle = w.run.bundle
    assert bundle is not None
    return ActionBundle(head=action.hash, actions={**bundle.actions, action.hash: action},
                        model_calls=bundle.model_calls).to_json()


def _failure(verdict: ActionVerdict) -> str:
    assert not verdict.ok and verdict.ancestry is None
    assert len(verdict.reasons) == 1  # the walk stops at the first broken link
    return verdict.reasons[0]


def test_registered_agent_has_its_registration_file_and_operator(world: AgentWorld) -> None:
    info = agent_info(world.stack.client, world.stack.contracts, world.agent.agent_id)
    assert info.owner == world.owner.address and info.operator == world.operator.address
    assert info.agent_uri.startswith("ipfs://") and info.agent_uri == world.agent.agent_uri
    registration = load_registration(world.stack.store, info)
    assert registration.operator == world.operator.address
    assert registration.services[0]["endpoint"] == world.stack.url


def test_twelve_actions_over_real_model_calls_verify(world: AgentWorld, tmp_path: Path) -> None:
    run = world.run
    assert len(run.actions) == 12 and run.bundle is not None
    kinds = [a.kind for a in run.actions]
    assert kinds.count("model_call") == 7 and kinds.count("tool_call") == 3 and kinds[5] == "payment"
    assert kinds[-1] == "result" and len(run.bundle.model_calls) == 7
    path = run.bundle.save(tmp_path / "final.json")
    verdict = _verify(world, path)
    assert verdict.ok, verdict.reasons
    assert [a.hash for a in verdict.actions][0] == run.bundle.head and len(verdict.actions) == 12
    ancestry = verdict.ancestry
    assert ancestry is not None
    a, b = (m.model_id for m in world.stack.models)
    # Same price per call: fee weighting gives model a 4 of the 7 calls, model b 3 (floored ppm).
    assert ancestry.shares["models"] == {str(a): 4 * PPM // 7, str(b): 3 * PPM // 7}
    assert ancestry.unattributed["models"] == PPM - 4 * PPM // 7 - 3 * PPM // 7
    assert ancestry.fees_by_model == {str(a): 4 * 10**15, str(b): 3 * 10**15}
    contributors = ancestry.shares["contributors"]
    assert contributors and sum(contributors.values()) <= PPM
    pool = EARNED * ROYALTY_PPM // PPM
    assert ancestry.pool_wei == pool
    roles = [r for r in ancestry.owed if r.role != "model"]
    assert sum(r.amount_wei for r in roles) + ancestry.dust_wei == pool and ancestry.dust_wei >= 0
    protocol = next(r for r in roles if r.role == "protocol")
    assert protocol.amount_wei == pool * 500 // BPS  # the deployment's default split
    # the payment step moved real tokens: its receipt commits to the transaction hash
    assert run.actions[5].value_moved == 10**15 and run.actions[5].output_hash != run.actions[4].output_hash


def test_tampered_middle_action_fails_naming_it(world: AgentWorld) -> None:
    bundle = world.run.bundle
    assert bundle is not None
    raw = bundle.to_json()
    middle = raw["actions"][5]
    tampered = copy.deepcopy(raw)
    tampered["actions"][5]["value_moved"] = str(int(middle["value_moved"]) * 10)
    reason = _failure(_verify(world, tampered))
    assert middle["hash"] in reason and "altered" in reason and "seq 6" in reason
    untouched = _verify(world, raw)  # the original still verifies: nothing was changed by the check
    assert untouched.ok


def test_tampered_model_call_receipt_fails_naming_it(world: AgentWorld) -> None:
    raw = world.run.bundle.to_json()  # type: ignore[union-attr]
    call = raw["model_calls"][2]
    call["fee"] = str(int(call["fee"]) + 1)
    reason = _failure(_verify(world, raw))
    assert call["call_id"] in reason and "altered" in reason


def test_unknown_parent_is_refused(world: AgentWorld) -> None:
    orphan = _session(world, 1000).result("orphan", parents=["0x" + os.urandom(32).hex()])
    reason = _failure(_verify(world, _extend(world, orphan)))
    assert "missing from the bundle (unknown parent)" in reason and orphan.hash in reason


def test_missing_model_call_receipt_is_refused(world: AgentWorld) -> None:
    raw = world.run.bundle.to_json()  # type: ignore[union-attr]
    gone = raw["model_calls"].pop(0)["call_id"]
    reason = _failure(_verify(world, raw))
    assert gone in reason and "missing" in reason


def test_forged_signature_is_refused(world: AgentWorld) -> None:
    raw = world.run.bundle.to_json()  # type: ignore[union-attr]
    head = next(a for a in raw["actions"] if a["hash"] == raw["head"])
    sig = bytearray(bytes.fromhex(head["signature"][2:]))
    sig[40] ^= 0x01  # one bit of s
    head["signature"] = "0x" + sig.hex()
    reason = _failure(_verify(world, raw))
    assert raw["head"] in reason and "forged" in reason


def test_unregistered_operator_key_is_refused(world: AgentWorld) -> None:
    stranger = Account.create()
    with pytest.raises(OperatorNotRegistered, match="not agent .* registered operator"):
        AgentSession.open(world.stack.client, world.stack.contracts, stranger, world.agent.agent_id)
    registry = registry_of(world.stack.contracts)
    rogue = AgentSession(stranger, world.agent.agent_id, world.stack.client.chain_id, registry.address,
                         first_seq=2000)
    last = world.run.actions[-1]
    action = rogue.result("I speak for the agent", parents=[last.hash])
    reason = _failure(_verify(world, _extend(world, action)))
    assert stranger.address in reason and "does not know" in reason and world.operator.address in reason


def test_replayed_model_call_receipt_is_refused(world: AgentWorld) -> None:
    bundle = world.run.bundle
    assert bundle is not None
    reused = next(iter(bundle.model_calls.values()))
    session = _session(world, 3000)
    replay = session.add_model_receipt(reused, "same prompt", "same answer", parents=[world.run.actions[-1].hash])
    reason = _failure(_verify(world, _extend(world, replay)))
    assert f"reuses model call {reused.call_id}" in reason and replay.hash in reason


def test_replayed_sequence_number_is_refused(world: AgentWorld) -> None:
    last = world.run.actions[-1]
    session = _session(world, last.seq - 3)  # a sequence number the run already used
    replay = session.result("second answer", parents=[last.hash])
    reason = _failure(_verify(world, _extend(world, replay)))
    assert "not older" in reason or "reuses sequence number" in reason
    sibling = _session(world, 2).result("equivocation", parents=[world.run.actions[0].hash])
    head = _session(world, 4000).result("fan-in", parents=[last.hash, sibling.hash])
    raw = _extend(world, sibling)
    raw["actions"].append(head.to_json())
    raw["head"] = head.hash
    reason = _failure(_verify(world, raw))
    assert "reuses sequence number 2" in reason


def test_receipt_for_another_registry_is_refused(world: AgentWorld) -> None:
    elsewhere = AgentSession(world.operator, world.agent.agent_id, world.stack.client.chain_id,
                             "0x" + "42" * 20, first_seq=5000)
    action = elsewhere.result("from another deployment", parents=[world.run.actions[-1].hash])
    reason = _failure(_verify(world, _extend(world, action)))
    assert "replay from elsewhere" in reason


def test_bad_bundle_gets_a_clear_error(world: AgentWorld, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert "not readable JSON" in _verify(world, path).reasons[0]
    assert "not an action bundle" in _verify(world, {"format": "x"}).reasons[0]
    raw = world.run.bundle.to_json()  # type: ignore[union-attr]
    raw["actions"][0]["kind"] = "teleport"
    assert "teleport" in _verify(world, raw).reasons[0]


def test_operator_rotation_is_owner_only_and_dated(world: AgentWorld) -> None:
    """Rotates the operator (and puts it back at the end): earlier receipts stay valid, later ones by the old key do not."""
    client, contracts = world.stack.client, world.stack.contracts
    registry = registry_of(contracts)
    agent_id = world.agent.agent_id
    with pytest.raises(TransactionReverted, match="NotAgentOwner"):
        client.transact(world.wallet, registry.functions.setOperator(agent_id, world.wallet.address))
    # The rotation must be dated after every receipt of the run, whose clocks follow the wall clock
    # whenever the chain's lags behind it (other tests on this anvil move chain time both ways).
    signed_until = max(a.timestamp for a in world.run.actions)  # type: ignore[union-attr]
    after = max(signed_until, client.latest_timestamp()) + 30
    client.w3.provider.make_request("evm_setNextBlockTimestamp", [after])
    client.w3.provider.make_request("evm_mine", [])
    new_key = Account.create()
    client.transact(world.owner, registry.functions.setOperator(agent_id, new_key.address))
    try:
        assert _verify(world, world.run.bundle).ok  # signed while the old key was the operator
        with pytest.raises(OperatorNotRegistered):
            _session(world, 6000)
        stale = AgentSession(world.operator, agent_id, client.chain_id, registry.address,
                             clock_offset=client.latest_timestamp() + 5 - int(__import__("time").time()),
                             first_seq=6000).result("after rotation", parents=[world.run.actions[-1].hash])
        reason = _failure(_verify(world, _extend(world, stale)))
        assert "does not know" in reason and new_key.address in reason
        fresh = AgentSession.open(client, contracts, new_key, agent_id, first_seq=7000)
        ok = fresh.result("signed by the new key", parents=[world.run.actions[-1].hash])
        assert _verify(world, _extend(world, ok)).ok
    finally:
        client.transact(world.owner, registry.functions.setOperator(agent_id, world.operator.address))


def test_prov_json_export_reads_back_with_the_prov_package(world: AgentWorld) -> None:
    import io
    import json
    from collections import Counter

    from prov.model import ProvDocument
    from prov.serializers.provjson import ProvJSONSerializer

    from provenant.agents.prov import ExportRefused, export_prov

    bundle = world.run.bundle
    assert bundle is not None
    exported = export_prov(world.stack.client, world.stack.contracts, world.stack.store, bundle)
    document: ProvDocument = ProvJSONSerializer().deserialize(io.StringIO(json.dumps(exported)))

    def typed(kind: str) -> Counter:
        return Counter(str(t) for r in document.get_records() if type(r).__name__ == kind
                       for t in r.get_asserted_types())

    assert typed("ProvEntity") == Counter({"pv:ActionReceipt": 12, "pv:Answer": 7, "pv:Model": 2,
                                           "pv:Contribution": 1, "prov:Collection": 1})
    assert typed("ProvActivity") == Counter({"pv:Inference": 7, "pv:Training": 2, "pv:model_call": 7,
                                             "pv:tool_call": 3, "pv:payment": 1, "pv:result": 1})
    records = Counter(type(r).__name__ for r in document.get_records())
    parents = sum(len(a.parents) for a in world.run.actions)
    assert records["ProvCommunication"] == parents and records["ProvDerivation"] == parents
    assert records["ProvDelegation"] == 1 and records["ProvMembership"] == 1
    assert records["ProvInfluence"] == 7  # each answer influenced by the contribution its receipt credits
    agents = {str(r.identifier) for r in document.get_records() if type(r).__name__ == "ProvAgent"}
    assert f"pv:agent_{world.agent.agent_id}" in agents
    assert f"pv:account_{world.owner.address.lower()}" in agents
    out = io.StringIO()
    ProvJSONSerializer(document).serialize(out)
    assert ProvJSONSerializer().deserialize(io.StringIO(out.getvalue())) == document  # round trip
    raw = bundle.to_json()
    raw["actions"][3]["input_hash"] = "0x" + "00" * 32
    with pytest.raises(ExportRefused, match="altered"):
        export_prov(world.stack.client, world.stack.contracts, world.stack.store, ActionBundle.from_json(raw))


def test_cli_verify_show_register_and_export(world: AgentWorld, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from provenant.agents.cli import agent_app

    monkeypatch.setenv("PROVENANT_STORE", str(world.workdir / "store"))
    common = ["--rpc-url", world.stack.client.rpc_url, "--home", str(world.workdir / "home")]
    runner = CliRunner()
    good = world.run.bundle.save(tmp_path / "final.json")  # type: ignore[union-attr]
    result = runner.invoke(agent_app, ["verify", str(good), *common], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "VERIFIED" in result.output and "who is owed what" in result.output
    raw = json.loads(good.read_text())
    raw["actions"][4]["output_hash"] = "0x" + "11" * 32
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    result = runner.invoke(agent_app, ["verify", str(bad), *common], terminal_width=200)
    assert result.exit_code == 1 and "NOT VERIFIED" in result.output and raw["actions"][4]["hash"] in result.output
    shown = runner.invoke(agent_app, ["show", str(world.agent.agent_id), *common])
    assert shown.exit_code == 0 and world.operator.address in shown.output
    out = tmp_path / "prov.json"
    exported = runner.invoke(agent_app, ["export-prov", str(good), "--out", str(out), *common])
    assert exported.exit_code == 0 and "pv:agent_1" in json.loads(out.read_text())["agent"]
    operator = Account.create().address
    registered = runner.invoke(agent_app, ["register", "helper", "--operator", operator, "--endpoint",
                                           "web=http://127.0.0.1:1", "--dev-account", "3", *common])
    assert registered.exit_code == 0 and f"operator {operator}" in registered.output
    refused = runner.invoke(agent_app, ["register", "helper", "--operator", "nobody", "--dev-account", "3", *common])
    assert refused.exit_code != 0


def test_demo_agent_step_over_real_receipts(world: AgentWorld, tmp_path: Path) -> None:
    from rich.console import Console

    from provenant.agents.demo import run_demo_agent
    from provenant.chain.keys import dev_accounts

    bundle = world.run.bundle
    assert bundle is not None
    calls = [(f"prompt {i}", f"answer {i}", r) for i, r in enumerate(bundle.model_calls.values())]
    console = Console(record=True, width=160)
    run = run_demo_agent(world.stack.client, world.stack.contracts, world.stack.store, dev_accounts(12)[2], calls,
                         console, earned=10**18, royalty_ppm=50_000, out=tmp_path / "demo.json")
    assert run.verdict.ok and len(run.verdict.actions) == len(calls) + 2
    assert run.agent.agent_id != world.agent.agent_id
    text = console.export_text()
    assert "data ancestry" in text and "who is owed what" in text and "VERIFIED" in text
    assert ActionBundle.load(tmp_path / "demo.json").head == run.bundle.head


def test_runtime_refuses_a_bad_plan(world: AgentWorld) -> None:
    from provenant.agents.runtime import AgentRuntime, PlanError, Step, Tools

    tools = Tools(world.stack.client, world.stack.contracts, world.stack.url, world.wallet, world.indexer_url)
    runtime = AgentRuntime(_session(world, 8000), tools)
    with pytest.raises(PlanError, match="unknown tool 'teleport'"):
        runtime.run([Step("query_indexer", {"path": "/models"}), Step("teleport", {})])
    assert runtime.session.actions == []  # refused before any step ran
    with pytest.raises(PlanError, match="quotes a step that has not run yet"):
        runtime.run([Step("call_model", {"model": world.stack.models[0].name, "prompt": "{step3}"})])
    with pytest.raises(PlanError, match="no model named 'nope'"):
        runtime.run([Step("call_model", {"model": "nope", "prompt": "hi"})])
    assert runtime.session.actions == []

"""Settlement with three attributor processes and a 2-of-3 quorum, on a real anvil.

Tests run in file order on one world (test_settlement_support.py): each leaves the chain in a
state the next builds on, which keeps the suite to one training run and three process starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Iterator

import pytest
from typer.testing import CliRunner
from web3 import HTTPProvider

from provenant.chain.client import ChainClient, TransactionReverted
from provenant.chain.deploy import Contracts
from provenant.chain.devnet import free_port
from provenant.chain.keys import dev_accounts
from provenant.chain.typed_data import settlement_domain
from provenant.datanets.service import canonical_json
from provenant.serving.calllog import CallLog
from provenant.settlement.attestation import Refusal, SignedProposal
from provenant.settlement.attributor import Attributor, AttributorNotRegistered, settled_results
from provenant.settlement.claims import claim_all, claimable
from provenant.settlement.epoch import payout_tree
from provenant.settlement.loop import SettlementLoop
from provenant.settlement.membership import EpochPolicy
from provenant.settlement.quorum import LocalPeer, QuorumNotReached, is_settled, post_settlement, settle_with_quorum
from provenant.settlement.rpc import RpcUnavailable, connect
from provenant.settlement.worker import WorkerError
from provenant.verify import verify_epoch, verify_receipt
from test_settlement_support import DriftingAttributor, World, app, build_world, chain_args, queries, run_cli

pytestmark = pytest.mark.slow
QUERIES = queries()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("settlement"))
    yield w
    w.close()


def test_three_processes_settle_several_epochs_for_two_models(world: World) -> None:
    served: dict[str, list[str]] = {"router-a": [], "router-b": []}
    for round_ in range(3):
        for model in served:
            paid = world.serve(model, 0, 2, QUERIES) + world.serve(model, 1, 1, QUERIES)
            world.charge(model)
            # Answered but not yet charged: these must wait for the next epoch, not be lost.
            pending = world.serve(model, 0, 1, QUERIES)
            served[model] += [r.call_id for r in paid + pending]
        if round_ == 1:  # a direct fee payment (royalty, x402 sweep) settles like a charge, with no calls
            token, escrow = world.contracts.token.functions, world.contracts.escrow.functions
            world.client.transact(world.cast.admin, token.approve(world.contracts.escrow.address, 10**18 + 7))
            world.client.transact(world.cast.admin, escrow.payFees(world.models["router-a"], 10**18 + 7))
        world.sync_logs()
        for j, model in enumerate(served):
            settled = world.settle(model, proposer=(round_ + j) % 3)
            assert len(settled.signatures) == 2 and not settled.refusals
    for model in served:  # the last pending calls
        world.charge(model)
    world.sync_logs()
    for model in served:
        world.settle(model, proposer=0)

    for model, calls in served.items():
        epochs = world.epoch_call_ids(model)
        assert len(epochs) == 4 == world.last_epoch(model)
        flat = [c for e in epochs for c in e]
        assert len(flat) == len(set(flat)), "a call was counted in two epochs"
        assert sorted(flat) == sorted(calls), "a call was lost"
        assert len(epochs[0]) == 3 and all(len(e) == 4 for e in epochs[1:3]) and len(epochs[3]) == 1


def test_every_wei_paid_in_is_claimed_claimable_or_held(world: World) -> None:
    c, token, settlement, escrow = world.client, world.contracts.token.functions, \
        world.contracts.settlement.functions, world.contracts.escrow.functions
    cast = world.cast
    claimants = [*cast.contributors, *cast.curators[:2]]  # curators[2] leaves its allocations unclaimed
    balance = lambda a: int(c.call(token.balanceOf(a)))  # noqa: E731
    claimed = 0
    for account in claimants:
        items = claimable(c, world.contracts, world.store, account.address)
        if items:
            before = balance(account.address)
            claim_all(c, world.contracts, account, items)
            assert balance(account.address) - before == sum(i.amount for i in items)
            claimed += sum(i.amount for i in items)
            assert claimable(c, world.contracts, world.store, account.address) == []
    assert claimed > 0
    remaining = unsettled = dust = deposits = owner = protocol = 0
    for model_id in world.models.values():
        for e in range(1, int(c.call(settlement.lastEpoch(model_id))) + 1):
            remaining += int(c.call(settlement.epochs(model_id, e))[1])  # (root prefix, unclaimed)
        dust += int(c.call(settlement.carriedDust(model_id)))
        unsettled += int(c.call(escrow.unsettledFees(model_id)))
        deposits += sum(int(c.call(escrow.depositOf(x.address, model_id))) for x in cast.consumers)
    for r in settled_results(c, world.contracts, world.store):
        owner += int(r["owner_amount"])
        protocol += int(r["protocol_amount"])
    assert remaining > 0  # curators[2]'s
    assert balance(cast.treasury.address) == protocol
    fees_in = world.total_fees_in()
    assert claimed + remaining + dust + owner + protocol + unsettled == fees_in
    assert balance(world.contracts.settlement.address) == remaining + dust
    assert balance(world.contracts.escrow.address) == deposits + unsettled


def test_tampered_call_log_makes_honest_attributors_refuse_and_nothing_is_posted(world: World) -> None:
    model = "router-a"
    world.serve(model, 0, 2, QUERIES)
    world.charge(model)
    world.sync_logs()
    log = world.worker_calls(0) / f"model-{world.models[model]}.jsonl"
    lines = log.read_text().splitlines()
    victim = json.loads(lines[-1])
    lines[-1] = json.dumps({**victim, "prompt": victim["prompt"] + " (tampered)"}, sort_keys=True)
    log.write_text("\n".join(lines) + "\n")
    before = world.last_epoch(model)

    with pytest.raises(QuorumNotReached) as refused:
        world.settle(model, proposer=0)
    assert world.last_epoch(model) == before
    assert len(refused.value.refusals) == 2
    for refusal in refused.value.refusals:
        assert isinstance(refusal, Refusal) and refusal.call_id == victim["call_id"], refusal
        assert "prompt_hash" in refusal.reason and refusal.account is not None
    for i in (1, 2):  # both honest processes logged the first differing call
        assert victim["call_id"] in (world.root / f"attributor-{i}.log").read_text()

    # An honest proposer still settles: the tampered attributor refuses, the third co-signs.
    settled = settle_with_quorum(world.client, world.contracts, world.peers[1], [world.peers[0], world.peers[2]],
                                 world.models[model])
    assert [r.signer for r in settled.refusals] == [world.peers[0].address]
    assert set(settled.signatures) == {world.peers[1].address, world.peers[2].address}
    assert world.last_epoch(model) == before + 1
    world.sync_logs()


def test_cosigners_accept_float_noise_within_the_tolerance_and_refuse_more(world: World) -> None:
    model = "router-b"
    world.serve(model, 0, 2, QUERIES)
    world.charge(model)
    world.sync_logs()
    proposer = DriftingAttributor(world.client, world.contracts, world.store, world.cast.attributors[0],
                                  CallLog(world.worker_calls(0)))
    calls = proposer.epoch_calls(proposer.reader.open_context(world.models[model]))
    top = max(((k, v) for c in calls for k, v in c.scores.items()), key=lambda kv: kv[1])[0]
    proposer.drift = lambda k: 0.05 if k == top else 0.0  # shifts money to one contribution
    with pytest.raises(QuorumNotReached) as refused:
        settle_with_quorum(world.client, world.contracts, LocalPeer(proposer), world.peers[1:], world.models[model])
    assert all("scores differ beyond the tolerance" in r.reason and r.account for r in refused.value.refusals)
    proposer.drift = lambda k: 1e-6 * (-1) ** k  # another machine's rounding
    settled = settle_with_quorum(world.client, world.contracts, LocalPeer(proposer), world.peers[1:],
                                 world.models[model])
    published = [c["scores"] for c in json.loads(world.store.get(settled.proposal.attestation.results_cid))["calls"]]
    drifted = proposer.epoch_calls(proposer.reader.settled_context(world.models[model], world.last_epoch(model)))
    as_json = lambda cs: [{str(k): v for k, v in c.scores.items()} for c in cs]  # noqa: E731
    assert published == as_json(drifted) != as_json(calls)  # the proposer's quantised shares were adopted


def test_restarted_attributor_proposes_the_same_epoch(world: World) -> None:
    model = "router-b"
    world.serve(model, 1, 2, QUERIES)
    world.charge(model)
    world.sync_logs()
    first = world.peers[2].propose(world.models[model])
    world.peers[2].kill()  # dies mid-epoch, before anything is posted
    world.peers[2] = world.start_peer(2)
    again = world.peers[2].propose(world.models[model])
    assert again.attestation.results_cid == first.attestation.results_cid
    assert again.attestation.payout_root == first.attestation.payout_root
    world.settle(model, proposer=2)
    assert len(world.epoch_call_ids(model)[-1]) == 2


def test_results_are_public_and_match_the_chain(world: World) -> None:
    for model, model_id in world.models.items():
        logs = world.contracts.settlement.events.EpochSettled.get_logs(
            from_block=world.contracts.manifest.block_number, argument_filters={"modelId": model_id})
        for log in logs:
            results = json.loads(world.store.get(log["args"]["resultsCid"]))
            assert results["payout_root"] == "0x" + bytes(log["args"]["payoutRoot"]).hex()
            assert results["rules"]["score_rtol"] == 1e-4
            for call in results["calls"]:
                assert "prompt" not in call and call["prompt_hash"].startswith("0x")


def test_a_reorg_that_drops_a_settlement_is_detected_and_reposted(world: World) -> None:
    model = "router-a"
    world.serve(model, 1, 3, QUERIES)
    world.charge(model)
    world.sync_logs()
    loop = SettlementLoop(world.client, world.contracts, world.store, proposer=world.peers[1],
                          peers=[world.peers[2], world.peers[0]], call_log=CallLog(world.server_log),
                          policy=EpochPolicy(max_calls=2), confirmations=3)
    rpc = world.client.w3.provider.make_request
    snapshot = rpc("evm_snapshot", [])["result"]
    [done] = loop.tick([world.models[model]])
    epoch = done.proposal.attestation.epoch
    assert world.last_epoch(model) == epoch
    rpc("evm_revert", [snapshot])  # the blocks holding the settlement are gone
    assert world.last_epoch(model) == epoch - 1
    assert loop.recheck() == [f"reposted model {world.models[model]} epoch {epoch}"]
    assert world.last_epoch(model) == epoch and is_settled(world.client, world.contracts, done.proposal)
    for _ in range(3):
        rpc("evm_mine", [])
    assert loop.recheck() == [] and loop.watched == []
    assert loop.tick([world.models[model]]) == []  # nothing new charged: the policy keeps it open


def test_verify_epoch_recomputes_every_settled_epoch_from_public_data(world: World) -> None:
    for model_id in world.models.values():
        for epoch in range(1, int(world.client.call(world.contracts.settlement.functions.lastEpoch(model_id))) + 1):
            verdict = verify_epoch(world.client, world.contracts, world.store, model_id, epoch)
            assert verdict.ok, (model_id, epoch, verdict.reasons)
    result = CliRunner().invoke(app(), ["verify", "epoch", str(world.models["router-a"]), "2", *chain_args(world)])
    assert result.exit_code == 0 and "VERIFIED" in result.output, result.output
    missing = verify_epoch(world.client, world.contracts, world.store, world.models["router-a"], 99)
    assert not missing.ok and "no settled epoch 99" in missing.reasons[0]


def test_verify_receipt_checks_signature_lineage_and_settlement(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    check = lambda raw: verify_receipt(world.client, world.contracts, world.store, raw)  # noqa: E731
    good = world.receipts[0].to_json()
    verdict = check(good)
    assert verdict.ok, verdict.reasons
    assert any("settled in epoch 1" in c for c in verdict.checks)
    forged = check({**good, "fee": "1"})
    assert not forged.ok and any("not the model's registered server" in r for r in forged.reasons)
    other_root = check({**good, "lineage_root": "0x" + "00" * 32})
    assert any("lineage root differs" in r for r in other_root.reasons)
    assert not check({**good, "chain_id": 1}).ok
    assert not check({"call_id": "0x12"}).ok
    unsettled = world.serve("router-b", 1, 1, QUERIES)[0]
    pending = check(unsettled.to_json())
    assert not pending.ok and "none of model" in pending.reasons[-1]
    file = tmp_path / "receipt.json"
    file.write_text(json.dumps({"provenance": good}))
    assert CliRunner().invoke(app(), ["verify", "receipt", str(file), *chain_args(world)]).exit_code == 0
    file.write_text(json.dumps({**good, "output_hash": "0x" + "00" * 32}))
    result = CliRunner().invoke(app(), ["verify", "receipt", str(file), *chain_args(world)])
    assert result.exit_code == 1 and "NOT VERIFIED" in result.output


def test_unregistered_or_missing_keys_are_refused(world: World) -> None:
    outsider = world.cast.outsider
    with pytest.raises(AttributorNotRegistered, match=outsider.address):
        Attributor(world.client, world.contracts, world.store, outsider, CallLog(world.root / "x"))
    unregistered = world.start_peer(3, key=outsider)
    keyless = world.start_peer(4, key=outsider, with_key=False)
    with pytest.raises(WorkerError, match="not registered"):
        unregistered.wait_ready()
    with pytest.raises(WorkerError, match="PROVENANT_KEY is not set"):
        keyless.wait_ready()
    # The contract refuses an unregistered signer too, whatever the client does.
    world.serve("router-a", 0, 1, QUERIES)
    world.charge("router-a")
    world.sync_logs()
    signed = world.peers[0].propose(world.models["router-a"])
    domain = settlement_domain(world.client.chain_id, world.contracts.settlement.address)
    signatures = {signed.signer: signed.signature, outsider.address: signed.attestation.sign(outsider, domain)}
    with pytest.raises(TransactionReverted, match="NotAttributor"):
        post_settlement(world.client, world.contracts, world.cast.admin, signed, signatures)


def test_a_dead_rpc_fails_with_a_clear_error_after_retries(world: World, capsys) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RpcUnavailable, match=f"{dead} did not answer while connecting after 4 attempts"):
        connect(dead)
    assert time.monotonic() - started >= 1.5  # it retried before giving up
    client = ChainClient(world.devnet.rpc_url)
    attributor = Attributor(client, Contracts.load(client, world.home), world.store, world.cast.attributors[0],
                            CallLog(world.worker_calls(0)))
    client.w3.provider = HTTPProvider(dead)  # the node goes away mid-run
    with pytest.raises(RpcUnavailable, match="did not answer while reading"):
        attributor.propose(world.models["router-a"])
    with pytest.raises(SystemExit) as exited:
        run_cli(["verify", "epoch", "1", "1", "--rpc-url", dead, "--home", str(world.home)])
    assert exited.value.code == 1
    err = capsys.readouterr().err  # rich may wrap the one line at the terminal width
    assert err.startswith("error: RPC endpoint") and "Traceback" not in err and err.count("error:") == 1


def test_the_command_line_proposes_cosigns_and_posts(world: World, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """router-a has charged fees left open by the previous test: settle them by hand."""
    world.sync_logs()
    epoch = world.last_epoch("router-a") + 1
    model = str(world.models["router-a"])
    dev = {a.address: str(i) for i, a in enumerate(dev_accounts(20))}
    first, second = (["--dev-account", dev[k.address], "--calls", str(world.worker_calls(i))]
                     for i, k in enumerate(world.cast.attributors[:2]))
    runner = CliRunner()
    out = runner.invoke(app(), ["propose", model, "--out", str(tmp_path / "p.json"), *first, *chain_args(world)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app(), ["cosign", str(tmp_path / "p.json"), "--out", str(tmp_path / "s.json"), *second,
                                *chain_args(world)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app(), ["post-settlement", str(tmp_path / "p.json"), str(tmp_path / "s.json"),
                                "--dev-account", dev[world.cast.attributors[0].address], *chain_args(world)])
    assert out.exit_code == 0 and f"epoch {epoch} settled with 2 signatures" in out.output, out.output
    assert world.last_epoch("router-a") == epoch


def test_verify_epoch_catches_results_a_colluding_quorum_bent(world: World) -> None:
    """Two registered keys sign results whose totals fit but whose allocations break the rule:
    the contract cannot tell, `verify epoch` can. (Last: it leaves a bad epoch on chain.)"""
    model = "router-b"
    world.serve(model, 0, 2, QUERIES)
    world.charge(model)
    world.sync_logs()
    honest = world.peers[0].propose(world.models[model])
    document = json.loads(world.store.get(honest.attestation.results_cid))
    allocations = {a: int(v) for a, v in document["allocations"].items()}
    poor, rich = sorted(allocations, key=lambda a: (allocations[a], a))[:2]
    allocations[rich] += allocations.pop(poor)  # same total, so the contract's cap checks pass
    document["allocations"] = {a: str(v) for a, v in sorted(allocations.items())}
    document["payout_root"] = payout_tree(allocations).root
    bent = replace(honest.attestation, payout_root=document["payout_root"],
                   results_cid=world.store.put(canonical_json(document)))
    domain = settlement_domain(world.client.chain_id, world.contracts.settlement.address)
    signatures = {k.address: bent.sign(k, domain) for k in world.cast.attributors[:2]}
    post_settlement(world.client, world.contracts, world.cast.admin, SignedProposal(bent, "", b""), signatures)
    verdict = verify_epoch(world.client, world.contracts, world.store, world.models[model], bent.epoch)
    assert not verdict.ok
    assert any(poor in r for r in verdict.reasons), verdict.reasons
    assert verify_epoch(world.client, world.contracts, world.store, world.models[model], bent.epoch - 1).ok


"""The whole provenance thread, once, end to end, every stage real.

datanets -> contributions -> curation -> Model Factory (LoRA training, lineage on chain)
-> attribution index -> serving with receipts (paid with vouchers over HTTP) -> epoch
settlement (EIP-712 attestation) -> Merkle claims -> a table that must add up to the wei.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import uvicorn
from eth_account.signers.local import LocalAccount
from rich.console import Console

from provenant.attribution.aggregate import PPM
from provenant.chain.bindings import EpochView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts, deploy_all
from provenant.chain.devnet import free_port, start_anvil
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService, RejectReason
from provenant.demo.report import Ledger, render
from provenant.factory.builder import ModelFactory, ModelRequest
from provenant.factory.train import LoraSettings
from provenant.payments.deposits import deposit_with_permit
from provenant.payments.vouchers import Voucher, sign_voucher
from provenant.serving.api import create_app
from provenant.serving.calllog import CallLog
from provenant.serving.models import ModelRecord
from provenant.serving.receipts import Receipt, check_receipt
from provenant.serving.service import ServingService
from provenant.settlement.attributor import Attributor
from provenant.settlement.claims import claim_all, claimable
from provenant.store import open_store

if TYPE_CHECKING:
    from provenant.agents.demo import DemoAgentRun

WEI = 10**18
PRICE_PER_CALL = 1_234_567_890_123_456_789  # deliberately odd, so rounding dust appears and must be carried
DEPOSIT = 100 * WEI
STAKE = 5 * WEI
AGENT_EARNED = 12 * WEI  # what the demo agent's final answer earns from its client
AGENT_ROYALTY_PPM = 150_000  # the share of it the agent routes back to the data beneath its answers
AGENT_CALLS = 8  # the answers the agent's final result relies on (a readable graph in the web app)


@dataclass(frozen=True)
class DemoSettings:
    calls: int = 24
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class ThreadResult:
    """What the thread leaves behind, for the table and for tests that recheck it."""

    ledger: Ledger
    client: ChainClient
    contracts: Contracts
    store: object
    model_id: int
    rejected: list[int]
    receipts: list[Receipt]
    agent_run: "DemoAgentRun | None" = None


@dataclass
class Cast:
    """Who plays which part, by dev-account index (anvil's funded accounts)."""

    admin: LocalAccount
    treasury: LocalAccount
    curators: dict[str, LocalAccount]
    contributors: dict[str, LocalAccount]
    builder: LocalAccount
    server: LocalAccount
    attributor: LocalAccount
    consumer: LocalAccount

    @classmethod
    def from_dev_accounts(cls, datanet_names: list[str], contributor_names: list[str]) -> "Cast":
        keys = list(dev_accounts(20))
        curators = {name: keys[2 + i] for i, name in enumerate(datanet_names)}
        start = 2 + len(datanet_names)
        contributors = {name: keys[start + i] for i, name in enumerate(contributor_names)}
        rest = keys[start + len(contributor_names):]
        return cls(admin=keys[0], treasury=keys[1], curators=curators, contributors=contributors,
                   builder=rest[0], server=rest[1], attributor=rest[2], consumer=rest[3])


def samples_dir() -> Path:
    return Path(str(resources.files("provenant.demo") / "samples"))


def _serve(app, port: int) -> uvicorn.Server:  # type: ignore[no-untyped-def]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the serving API did not start within 20 s")
        time.sleep(0.05)
    return server


def run_thread(workdir: Path, rpc_url: str, settings: DemoSettings, console: Console) -> ThreadResult:
    spec = json.loads((samples_dir() / "datanets.json").read_text(encoding="utf-8"))
    datanet_specs = spec["datanets"]
    contributor_names = sorted({c for d in datanet_specs for c in d["contributors"]})
    cast = Cast.from_dev_accounts([d["name"] for d in datanet_specs], contributor_names)
    say = console.print

    client = ChainClient(rpc_url)
    store = open_store(str(workdir / "store"))
    contracts = deploy_all(client, cast.admin, workdir, protocol_treasury=cast.treasury.address)
    say(f"[1/10] deployed on chain {client.chain_id}: {contracts.manifest.addresses}")
    token = contracts.token.functions
    for account in [*cast.contributors.values(), cast.consumer]:
        client.transact(cast.admin, token.transfer(account.address, DEPOSIT + 10 * STAKE))
    role = client.call(contracts.settlement.functions.ATTRIBUTOR_ROLE())
    client.transact(cast.admin, contracts.settlement.functions.grantRole(role, cast.attributor.address))

    datanets = DatanetService(client, contracts, store)
    ids: dict[str, int] = {}
    for d in datanet_specs:
        metadata = {k: v for k, v in d.items() if k not in ("contributors", "curator_rejects", "used_by_demo_model")}
        clean = d["name"] == "support-tickets"
        ids[d["name"]] = datanets.create(cast.curators[d["name"]], metadata, stake=STAKE if clean else 0,
                                         slash_on_reject=clean)
    say(f"[2/10] created Datanets {ids} by three curator wallets; metadata stored by CID")

    contributed: dict[str, list[tuple[int, str]]] = defaultdict(list)  # datanet -> (contribution id, file)
    for d in datanet_specs:
        for name, files in d["contributors"].items():
            for file_name in files:
                record = datanets.contribute(cast.contributors[name], ids[d["name"]], samples_dir() / file_name)
                contributed[d["name"]].append((record.contribution_id, file_name))
    total = sum(len(v) for v in contributed.values())
    say(f"[3/10] {total} contributions validated, stored by CID and recorded on chain")

    rejected: list[int] = []
    for d in datanet_specs:
        curator = cast.curators[d["name"]]
        to_reject = set(d.get("curator_rejects", []))
        approve = [cid for cid, f in contributed[d["name"]] if f not in to_reject]
        datanets.approve(curator, ids[d["name"]], approve)
        for cid, f in contributed[d["name"]]:
            if f in to_reject:
                datanets.reject(curator, cid, RejectReason.SPAM)
                rejected.append(cid)
    say(f"[4/10] curators approved {total - len(rejected)} contributions and rejected {len(rejected)}")

    factory = ModelFactory(client, contracts, store, datanets)
    used = tuple(ids[d["name"]] for d in datanet_specs if d.get("used_by_demo_model"))
    started = time.monotonic()
    model = factory.build(cast.builder, ModelRequest(name="support-router", datanet_ids=used,
                                                     server=cast.server.address, price_per_call=PRICE_PER_CALL,
                                                     settings=settings.lora))
    say(f"[5/10] trained and indexed model {model.model_id} on Datanets {list(used)} in "
        f"{time.monotonic() - started:.0f} s; {len(model.manifest.contributions)} contributions, lineage root "
        f"{model.manifest.lineage_root[:18]}…, adapter {model.manifest.adapter_cid}")

    service = ServingService(client, contracts, store, cast.server, CallLog(workdir / "calls"))
    service.model(model.model_id)
    port = free_port()
    http_server = _serve(create_app(service), port)
    deposit_with_permit(client, contracts, cast.consumer, model.model_id, DEPOSIT)
    query_lines = (samples_dir() / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line) for line in query_lines if line]
    receipts: list[Receipt] = []
    answered: list[tuple[str, str, Receipt]] = []  # (prompt, answer, receipt): what the agent step signs over
    correct = 0
    cumulative = 0
    deadline = client.latest_timestamp() + 86_400
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        for query in queries[: settings.calls]:
            cumulative += PRICE_PER_CALL
            voucher = Voucher(cast.consumer.address, model.model_id, cumulative, deadline)
            signature = sign_voucher(cast.consumer, client.chain_id, contracts.escrow.address, voucher)
            response = http.post("/v1/classifications", json={
                "model": "support-router", "input": query["text"],
                "payment": {"voucher": voucher.to_json(), "signature": "0x" + signature.hex()},
            })
            response.raise_for_status()
            body = response.json()
            receipts.append(Receipt.from_json(body["provenance"]))
            answered.append((query["text"], body["label"], receipts[-1]))
            correct += body["label"] == query["label"]
    bad = [r.call_id for r in receipts
           if check_receipt(r, ModelRecord.fetch(client, contracts, model.model_id).server,
                            model.manifest.lineage_root, model.manifest.adapter_hash)]
    if bad:
        raise RuntimeError(f"{len(bad)} receipts failed verification")
    service.charge_pending(model.model_id)
    http_server.should_exit = True
    say(f"[6/10] served {len(receipts)} paid calls over HTTP ({correct}/{len(receipts)} correct); every receipt "
        f"verified against the on-chain serving key; vouchers charged in one transaction")

    attributor = Attributor(client, contracts, store, cast.attributor, CallLog(workdir / "calls"))
    proposal = attributor.propose(model.model_id)
    attributor.post(cast.attributor, proposal, {cast.attributor.address: attributor.sign(proposal)})
    say(f"[7/10] epoch {proposal.result.epoch} settled: {len(proposal.result.allocations)} allocations, root "
        f"{proposal.result.payout_root[:18]}…, results {proposal.results_cid}")

    claimed: dict[str, int] = {}
    claimants = [*cast.contributors.values(), *cast.curators.values()]
    for account in claimants:
        items = claimable(client, contracts, store, account.address)
        if items:
            before = int(client.call(token.balanceOf(account.address)))
            claim_all(client, contracts, account, items)
            claimed[account.address] = int(client.call(token.balanceOf(account.address))) - before
    say(f"[8/10] {len(claimed)} accounts claimed with Merkle proofs")

    ledger = _ledger(client, contracts, cast, ids, proposal, claimed, datanet_specs)
    agent_run = _agent_step(client, contracts, store, cast, answered, workdir, console)
    say("[10/10] done")
    render(ledger, console)
    return ThreadResult(ledger=ledger, client=client, contracts=contracts, store=store, model_id=model.model_id,
                        rejected=rejected, receipts=receipts, agent_run=agent_run)


def _agent_step(client: ChainClient, contracts: Contracts, store: object, cast: Cast,
                answered: list[tuple[str, str, Receipt]], workdir: Path, console: Console) -> "DemoAgentRun":
    """The consumer, as a registered ERC-8004 agent, signs an action per answer it relied on and a final
    result that earns revenue; the final action is verified and its ancestry printed. It runs after
    the ledger is read, so the totals table is the thread's alone (routing royalties on chain is the
    settlement's job; here the agent declares its royalty share and the verifier says who is owed what)."""
    from provenant.agents.demo import run_demo_agent

    started = time.monotonic()
    answered = answered[:AGENT_CALLS]
    console.print(f"[9/10] the consumer, as an ERC-8004 agent, signs an action per answer it relied on "
                  f"({len(answered)}) and a result earning {AGENT_EARNED / WEI:g} PVN with a {AGENT_ROYALTY_PPM / 10_000:g}% royalty; "
                  f"its final action's ancestry:", markup=False, highlight=False, soft_wrap=True)
    run = run_demo_agent(client, contracts, store, cast.consumer, answered, console,  # type: ignore[arg-type]
                         earned=AGENT_EARNED, royalty_ppm=AGENT_ROYALTY_PPM, home=workdir)
    if not run.verdict.ok:
        raise RuntimeError(f"the demo agent's final action does not verify: {run.verdict.reasons[0]}")
    console.print(f"      agent {run.agent.agent_id} signed {len(run.bundle.actions)} actions over "
                  f"{len(answered)} paid answers in {time.monotonic() - started:.1f} s; final action verified, "
                  f"bundle {run.bundle_path}", markup=False, highlight=False, soft_wrap=True)
    return run


def _ledger(client: ChainClient, contracts: Contracts, cast: Cast, ids: dict[str, int], proposal, claimed,  # type: ignore[no-untyped-def]
            datanet_specs: list[dict]) -> Ledger:
    token = contracts.token.functions
    # Fee-weighted attribution shares over the epoch's calls (the same figures the payouts used).
    fees = sum(c.fee for c in proposal.inputs.calls) or 1
    contributor_share: dict[str, float] = defaultdict(float)
    datanet_share: dict[int, float] = defaultdict(float)
    for call in proposal.inputs.calls:
        for contribution_id, ppm in call.contribution_ppm.items():
            meta = proposal.inputs.contributions[contribution_id]
            contributor_share[meta.contributor] += ppm / PPM * call.fee / fees
            datanet_share[meta.datanet_id] += ppm / PPM * call.fee / fees
    names = {account.address: name for name, account in cast.contributors.items()}
    ledger = Ledger(
        datanet_names={v: k for k, v in ids.items()},
        contributor_names=names,
        contributor_share=dict(contributor_share),
        datanet_share=dict(datanet_share),
        claimed={a: v for a, v in claimed.items() if a in names},
    )
    for d in datanet_specs:
        for name in d["contributors"]:
            ledger.datanet_of_contributor[cast.contributors[name].address].add(ids[d["name"]])
        ledger.curator_claims[ids[d["name"]]] = claimed.get(cast.curators[d["name"]].address, 0)
    ledger.paid_in = DEPOSIT
    ledger.owner_paid = proposal.result.owner_amount
    ledger.protocol_paid = proposal.result.protocol_amount
    ledger.paid_out = sum(claimed.values()) + ledger.owner_paid + ledger.protocol_paid
    escrow_balance = int(client.call(token.balanceOf(contracts.escrow.address)))
    settlement_balance = int(client.call(token.balanceOf(contracts.settlement.address)))
    ledger.held_by_contracts = escrow_balance + settlement_balance
    deposit_left = int(client.call(contracts.escrow.functions.depositOf(cast.consumer.address, proposal.result.model_id)))
    unsettled = int(client.call(contracts.escrow.functions.unsettledFees(proposal.result.model_id)))
    epoch = decode(EpochView, client.call(contracts.settlement.functions.epochs(proposal.result.model_id,
                                                                                   proposal.result.epoch)))
    unclaimed = epoch.unclaimed
    dust = int(client.call(contracts.settlement.functions.carriedDust(proposal.result.model_id)))
    ledger.left_in_escrow = deposit_left + unsettled + unclaimed + dust
    return ledger


def run_demo(settings: DemoSettings | None = None, *, rpc_url: str | None = None, workdir: Path | None = None,
             console: Console | None = None) -> ThreadResult:
    """Run the thread on a fresh anvil (or on `rpc_url`), in `workdir` (a temp folder by default)."""
    import tempfile

    console = console or Console()
    settings = settings or DemoSettings()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="provenant-demo-"))
    if rpc_url:
        return run_thread(workdir, rpc_url, settings, console)
    with start_anvil(log_path=workdir / "anvil.log") as devnet:
        return run_thread(workdir, devnet.rpc_url, settings, console)

"""`provenant`: the command line. Thin: every command calls into the packages.

Every command that talks to a chain takes --rpc-url (default: $PROVENANT_RPC_URL or a local
devnet) and --home (where the deployment manifest, content store and call log live). Keys come
from an environment variable (--key-env, default PROVENANT_KEY), a keystore file, or — on
chain id 31337 only — a dev account index (--dev-account).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from provenant.agents.cli import agent_app  # a typer sub-app; its commands import lazily
from provenant.cli_options import (DEFAULT_HOME, DEFAULT_RPC, DevOpt, HomeOpt, KeyEnvOpt, KeystoreOpt, RpcOpt,
                                   Session, open_session, signer_for)
from provenant.factory.cli import register_adapter, train

app = typer.Typer(help="Provenant: Datanets, attributed LoRA models, receipts and settlement.", no_args_is_help=True)
datanet_app = typer.Typer(help="Create and inspect Datanets.", no_args_is_help=True)
verify_app = typer.Typer(help="Recheck models from public data.", no_args_is_help=True)
app.add_typer(datanet_app, name="datanet")
app.add_typer(verify_app, name="verify")
app.add_typer(agent_app, name="agent")
attribution_app = typer.Typer(help="Proof of Attribution: who shaped a model, and by how much.", no_args_is_help=True)
app.add_typer(attribution_app, name="attribution")
app.command()(train)
app.command("register-adapter")(register_adapter)
console = Console()
err = Console(stderr=True)



@app.command()
def demo(calls: Annotated[int, typer.Option(help="paid inference calls to serve")] = 24,
         epochs: Annotated[int, typer.Option(help="training epochs")] = 3,
         workdir: Annotated[Optional[Path], typer.Option(help="keep the run's files here")] = None,
         rpc_url: Annotated[Optional[str], typer.Option("--rpc-url", help="use this devnet (e.g. `npx hardhat "
                                                       "node`) instead of starting anvil")] = None) -> None:
    """Run the whole provenance thread on a fresh local anvil and print the final table."""
    from provenant.demo.thread import DemoSettings, run_demo
    from provenant.factory.train import LoraSettings

    result = run_demo(DemoSettings(calls=calls, lora=LoraSettings(epochs=epochs)), rpc_url=rpc_url, workdir=workdir,
                      console=console)
    if not result.ledger.balanced:
        raise RuntimeError("the totals do not add up: paid in != paid out + left in escrow")


@app.command()
def devnet(accounts: Annotated[int, typer.Option(help="funded dev accounts")] = 20) -> None:
    """Start a local anvil devnet (chain id 31337) and keep it running until Ctrl-C."""
    import time

    from provenant.chain.devnet import start_anvil

    with start_anvil(accounts=accounts) as net:
        console.print(f"anvil listening on {net.rpc_url} (chain id 31337); Ctrl-C to stop")
        try:
            while net.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


@app.command()
def deploy(rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
           keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Compile and deploy the contracts; write the deployment manifest for this chain id."""
    from provenant.chain.deploy import deploy_all

    session = open_session(rpc_url, home)
    contracts = deploy_all(session.client, signer_for(session, key_env, keystore, dev_account), home)  # type: ignore[arg-type]
    console.print_json(json.dumps(contracts.manifest.addresses))


@datanet_app.command("create")
def datanet_create(metadata: Annotated[Path, typer.Argument(help="JSON: name, description, license, task, labels")],
                   stake: Annotated[int, typer.Option(help="stake per contribution, wei")] = 0,
                   slash_on_reject: bool = False,
                   rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
                   keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Create a Datanet curated by the signer; its metadata goes to the content store."""
    from provenant.datanets.service import DatanetService

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    spec = json.loads(metadata.read_text())
    service = DatanetService(session.client, session.contracts, session.store)  # type: ignore[arg-type]
    console.print(f"datanet {service.create(signer, spec, stake=stake, slash_on_reject=slash_on_reject)}")


@datanet_app.command("show")
def datanet_show(datanet_id: int, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Show a Datanet's metadata and contributions."""
    from provenant.datanets.service import DatanetService

    session = open_session(rpc_url, home)
    service = DatanetService(session.client, session.contracts, session.store)  # type: ignore[arg-type]
    info = service.get(datanet_id)
    console.print_json(json.dumps({"id": datanet_id, "owner": info.owner, "metadata": info.metadata,
                                   "contributions": [{"id": c.contribution_id, "contributor": c.contributor,
                                                      "cid": c.cid, "rows": c.row_count, "status": c.status.name}
                                                     for c in service.contributions(datanet_id)]}))


@app.command()
def contribute(datanet_id: int, file: Path, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
               key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Validate a JSONL file, store it by CID and record the contribution on chain."""
    from provenant.datanets.service import DatanetService

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    service = DatanetService(session.client, session.contracts, session.store)  # type: ignore[arg-type]
    flags = service.duplicate_index(datanet_id).check(service.validate(datanet_id, file).rows)
    record = service.contribute(signer, datanet_id, file)
    console.print(f"contribution {record.contribution_id}: {record.cid} ({record.row_count} rows)")
    for flag in flags:  # reported, not refused: the curators decide
        where = f"line {flag.of_line}" if flag.of_contribution is None else \
            f"contribution {flag.of_contribution} line {flag.of_line}"
        console.print(f"  line {flag.line}: {flag.kind} duplicate of {where} (similarity {flag.similarity:.2f})")


@app.command()
def approve(datanet_id: int, contribution_ids: list[int], rpc_url: RpcOpt = DEFAULT_RPC,
            home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None,
            dev_account: DevOpt = None) -> None:
    """Approve pending contributions of a Datanet (curators only)."""
    from provenant.datanets.service import DatanetService

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    DatanetService(session.client, session.contracts, session.store).approve(signer, datanet_id, contribution_ids)  # type: ignore[arg-type]
    console.print(f"approved {contribution_ids}")


@app.command()
def reject(contribution_id: int, reason: Annotated[str, typer.Option(help="spam|off_topic|duplicate|low_quality")] = "spam",
           rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
           keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Reject a pending contribution (curators only)."""
    from provenant.datanets.service import DatanetService, RejectReason

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    DatanetService(session.client, session.contracts, session.store).reject(  # type: ignore[arg-type]
        signer, contribution_id, RejectReason[reason.upper()])
    console.print(f"rejected {contribution_id}")


@app.command()
def serve(port: int = 8000, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
          key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None,
          domain: Annotated[Optional[str], typer.Option(help="host[:port] SIWE messages must name "
                                                             "(default localhost:PORT)")] = None) -> None:
    """Serve registered models over an OpenAI-compatible HTTP API with receipts signed by the serving key.
    Consumers pay per call with a voucher header, or sign in (SIWE) and mint an API key backed by one
    capped voucher (POST /v1/api-keys) for the `openai` client.

    Limits and the adapter cache come from env (PROVENANT_ADAPTER_BUDGET_MB, PROVENANT_MAX_BATCH,
    PROVENANT_MAX_NEW_TOKENS, PROVENANT_RATE_PER_S, PROVENANT_RATE_BURST); the admin endpoints are
    enabled only when PROVENANT_ADMIN_TOKEN is set (their bearer token)."""
    import uvicorn

    from provenant.api.auth import SiweSessions
    from provenant.serving.api import create_app
    from provenant.serving.calllog import CallLog
    from provenant.serving.service import ServingService
    from provenant.serving.settings import ServingSettings

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    service = ServingService(session.client, session.contracts, session.store, signer, CallLog(home / "calls"),  # type: ignore[arg-type]
                             ServingSettings.from_env())
    sessions = SiweSessions(domain=domain or f"localhost:{port}", chain_id=session.client.chain_id,  # type: ignore[attr-defined]
                            path=home / "serving-sessions.sqlite")
    uvicorn.run(create_app(service, sessions), host="127.0.0.1", port=port)


@app.command("app")
def backend_app(port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 8000,
                domain: Annotated[Optional[str], typer.Option(help="host[:port] SIWE messages must name "
                                                                   "(default localhost:<port>)")] = None,
                index_db: Annotated[Optional[str], typer.Option(help="index database URL or SQLite path")] = None,
                serve: Annotated[bool, typer.Option(help="also serve models, signing receipts with the serving "
                                                         "key (--key-env / --keystore / --dev-account)")] = False,
                rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
                keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Run the backend for the web app: config, SIWE sign-in, uploads, Datanets, training jobs, the
    index API, claims, the built UI, and with --serve the model-serving API."""
    import uvicorn

    from provenant.api.app import AppSettings, create_app

    service = None
    if serve:
        from provenant.serving.calllog import CallLog
        from provenant.serving.service import ServingService
        from provenant.serving.settings import ServingSettings

        session = open_session(rpc_url, home)
        signer = signer_for(session, key_env, keystore, dev_account)
        service = ServingService(session.client, session.contracts, session.store, signer,  # type: ignore[arg-type]
                                 CallLog(home / "calls"), ServingSettings.from_env())
    settings = AppSettings(rpc_url=rpc_url, home=home, domain=domain or f"localhost:{port}", index_db=index_db,
                           serving=service)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


@app.command()
def settle(model_id: int, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
           key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Compute, sign and post the next epoch of a model (registered attributor key)."""
    from provenant.serving.calllog import CallLog
    from provenant.settlement.attributor import Attributor

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    attributor = Attributor(session.client, session.contracts, session.store, signer, CallLog(home / "calls"))  # type: ignore[arg-type]
    proposal = attributor.propose(model_id)
    attributor.post(signer, proposal, {signer.address: attributor.sign(proposal)})
    console.print(f"model {model_id} epoch {proposal.result.epoch}: root {proposal.result.payout_root}, "
                  f"results {proposal.results_cid}")


@app.command()
def claim(rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
          keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Claim everything the signer's account may claim, across models and epochs, in one transaction."""
    from provenant.settlement.claims import claim_all, claimable
    from provenant.settlement.claims_index import ClaimsIndex

    session = open_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    contracts, store = session.contracts, session.store
    index = ClaimsIndex.in_home(home, session.client, contracts, store)  # type: ignore[arg-type]
    items = claimable(session.client, contracts, store, signer.address, index)  # type: ignore[arg-type]
    if not items:
        console.print("nothing to claim")
        return
    claim_all(session.client, session.contracts, signer, items)  # type: ignore[arg-type]
    console.print(f"claimed {sum(i.amount for i in items)} wei from {len(items)} epoch(s)")


@verify_app.command("model")
def verify_model_cmd(model_id: int, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Recompute a model's lineage root from the content store and check it against the chain."""
    from provenant.verify import verify_model

    session = open_session(rpc_url, home)
    _print_verdict(verify_model(session.client, session.contracts, session.store, model_id))  # type: ignore[arg-type]


def _settlement_session(rpc_url: str, home: Path) -> Session:
    """Like _session, but the first contact is retried (settlement services may start before their node)."""
    from provenant.settlement.rpc import connect

    return Session(client=connect(rpc_url), home=home)


def _attributor(session: Session, calls: Path | None, key_env: str, keystore: Path | None, dev_account: int | None):  # type: ignore[no-untyped-def]
    from provenant.serving.calllog import CallLog
    from provenant.settlement.attributor import Attributor

    signer = signer_for(session, key_env, keystore, dev_account)
    return Attributor(session.client, session.contracts, session.store, signer,  # type: ignore[arg-type]
                      CallLog(calls or session.home / "calls"))


CallsOpt = Annotated[Optional[Path], typer.Option("--calls", help="this attributor's copy of the call log "
                                                                  "(default: <home>/calls)")]


@app.command()
def propose(model_id: int, upto_seq: Annotated[Optional[int], typer.Option(help="last charge to settle "
                                                                                   "(default: all charged)")] = None,
            out: Annotated[Optional[Path], typer.Option(help="write the signed proposal here")] = None,
            calls: CallsOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
            key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Compute a model's next epoch, store its results by CID and sign it (first of a quorum)."""
    session = _settlement_session(rpc_url, home)
    proposal = _attributor(session, calls, key_env, keystore, dev_account).propose(model_id, upto_seq=upto_seq)
    text = json.dumps(proposal.signed.to_json(), indent=2)
    if not out:
        console.print_json(text)
        return
    out.write_text(text)
    console.print(f"model {model_id} epoch {proposal.result.epoch}: {len(proposal.inputs.calls)} calls, root "
                  f"{proposal.result.payout_root}, results {proposal.results_cid} -> {out}")


@app.command()
def cosign(proposal_file: Path, out: Annotated[Optional[Path], typer.Option(help="write the signature here")] = None,
           calls: CallsOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
           key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Recompute another attributor's proposal from public data and this call log; sign only if equal."""
    from provenant.settlement.attestation import Refusal, SignedProposal

    session = _settlement_session(rpc_url, home)
    attributor = _attributor(session, calls, key_env, keystore, dev_account)
    answer = attributor.cosign(SignedProposal.from_json(json.loads(proposal_file.read_text())))
    if isinstance(answer, Refusal):
        raise RuntimeError(f"refused: {answer.reason}")
    text = json.dumps(answer.to_json())
    if out:
        out.write_text(text)
    console.print(text if not out else f"signed by {answer.signer} -> {out}")


@app.command("post-settlement")
def post_settlement_cmd(proposal_file: Path, signature_files: list[Path], rpc_url: RpcOpt = DEFAULT_RPC,
                        home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
                        keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Post a proposal with co-signatures (files from `cosign`); the proposer's own signature is in the proposal."""
    from provenant.settlement.attestation import SignedProposal
    from provenant.settlement.quorum import post_settlement

    session = _settlement_session(rpc_url, home)
    signer = signer_for(session, key_env, keystore, dev_account)
    proposal = SignedProposal.from_json(json.loads(proposal_file.read_text()))
    signatures = {proposal.signer: proposal.signature}
    for path in signature_files:
        raw = json.loads(path.read_text())
        signatures[raw["signer"]] = bytes.fromhex(raw["signature"].removeprefix("0x"))
    tx = post_settlement(session.client, session.contracts, signer, proposal, signatures)  # type: ignore[arg-type]
    console.print(f"model {proposal.attestation.model_id} epoch {proposal.attestation.epoch} settled "
                  f"with {len(signatures)} signatures: {tx}")


@app.command("attributor-worker")
def attributor_worker(calls: Annotated[Path, typer.Option("--calls", help="this attributor's copy of the call log")],
                      rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
                      key_env: KeyEnvOpt = "PROVENANT_KEY") -> None:
    """Run an attributor process that answers propose/cosign/post requests as JSON lines on stdio."""
    from provenant.settlement import worker

    worker.configure_logging()
    raise typer.Exit(worker.serve(lambda: worker.make_attributor(rpc_url, home, calls, key_env)))


@app.command("settle-loop")
def settle_loop(config: Annotated[Optional[Path], typer.Option("--config", help="JSON: models, policy, peers "
                                                                "(each {key_env, calls, transport}), interval_s")] = None,
                model: Annotated[Optional[list[int]], typer.Option("--model", help="watch only these models "
                                                                   "(repeatable; default: every registered one)")] = None,
                max_calls: Annotated[Optional[int], typer.Option(help="close an epoch after this many paid calls")] = None,
                max_age: Annotated[Optional[int], typer.Option(help="... or once its oldest charge is this old (s)")] = None,
                interval: Annotated[Optional[float], typer.Option(help="seconds between passes")] = None,
                max_ticks: Annotated[Optional[int], typer.Option(help="stop after this many passes")] = None,
                calls: CallsOpt = None, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
                key_env: KeyEnvOpt = "PROVENANT_KEY") -> None:
    """Run the settlement loop: close epochs by policy, gather M-of-N co-signatures, post, watch for reorgs."""
    from provenant.settlement.membership import EpochPolicy
    from provenant.settlement.service import ServiceConfig, run_service
    from provenant.settlement.worker import configure_logging

    configure_logging()
    policy = EpochPolicy(max_calls, max_age) if max_calls is not None or max_age is not None else None
    settings = ServiceConfig.load(config, rpc_url=rpc_url, home=home, calls=calls, key_env=key_env,
                                  model_ids=tuple(model) if model else None, policy=policy, interval_s=interval,
                                  max_ticks=max_ticks)
    raise typer.Exit(run_service(settings))


def _print_verdict(verdict) -> None:  # type: ignore[no-untyped-def]
    for line in verdict.checks:
        console.print(f"  ok   {line}", markup=False, highlight=False)
    for line in verdict.reasons:
        console.print(f"  FAIL {line}", markup=False, highlight=False)
    for line in getattr(verdict, "notes", []):
        console.print(f"  note {line}", markup=False, highlight=False)
    console.print(f"{verdict.subject}: {'VERIFIED' if verdict.ok else 'NOT VERIFIED'}")
    if not verdict.ok:
        raise typer.Exit(1)


@verify_app.command("epoch")
def verify_epoch_cmd(model_id: int, epoch: int, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Recompute a settled epoch from public data and compare it with the on-chain root and totals."""
    from provenant.verify import verify_epoch

    session = _settlement_session(rpc_url, home)
    _print_verdict(verify_epoch(session.client, session.contracts, session.store, model_id, epoch))  # type: ignore[arg-type]


@verify_app.command("receipt")
def verify_receipt_cmd(file: Path, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Check a receipt (JSON file): signature vs the model's serving key, lineage, and its settled epoch."""
    from provenant.verify import verify_receipt

    try:
        raw = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeError(f"receipt file {file} is not readable JSON: {exc}") from None
    session = _settlement_session(rpc_url, home)
    _print_verdict(verify_receipt(session.client, session.contracts, session.store,  # type: ignore[arg-type]
                                  raw.get("provenance", raw)))


@verify_app.command("action")
def verify_action_cmd(file: Path, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Check an agent's action bundle: every signature, the DAG down through the model-call receipts to
    the models' lineage, and who is owed what; fails naming the first broken link."""
    from provenant.agents.cli import print_action_verification

    session = _settlement_session(rpc_url, home)
    if not print_action_verification(session.client, session.contracts, session.store, file, console):
        raise typer.Exit(1)


@attribution_app.command("report")
def attribution_report_cmd(model_id: int,
                           out: Annotated[Path, typer.Option(help="folder for report.txt, report.svg, report.json")]
                           = Path("attribution-report"),
                           eval_file: Annotated[Optional[Path], typer.Option(help="JSONL rows to value against "
                                                                             "(default: the model's held-out split)")]
                           = None,
                           rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Each contribution's, contributor's and Datanet's share of the model's value (influence on its
    held-out loss), as a table, an SVG chart and JSON."""
    from provenant.attribution.report import report_model

    session = open_session(rpc_url, home)
    files = report_model(session.client, session.contracts, session.store, model_id, out, eval_file)
    console.print(files.table, markup=False, highlight=False, soft_wrap=True)
    console.print("wrote " + ", ".join(str(p) for p in files.paths))


def main() -> None:
    """Entry point: one-line errors, never a traceback (and never a key), non-zero exit."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is one readable line
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

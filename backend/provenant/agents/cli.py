"""`provenant agent ...`: register agents, rotate operators, run a scripted agent, verify and export.

A typer sub-app; the main CLI mounts it with `app.add_typer(agent_app, name="agent")`. Keys follow
the main CLI's rules: an environment variable (--key-env), a keystore file, or on chain 31337 a
dev account index; they never appear in output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console

from provenant.cli_options import (DEFAULT_HOME, DEFAULT_RPC, DevOpt, HomeOpt, KeyEnvOpt, KeystoreOpt, RpcOpt,
                                   load_signer, store_path)

agent_app = typer.Typer(help="ERC-8004 agents: identities, signed action receipts, verification.",
                        no_args_is_help=True)
console = Console()



def _context(rpc_url: str, home: Path) -> tuple[Any, Any, Any]:
    from provenant.chain.client import ChainClient
    from provenant.chain.deploy import Contracts
    from provenant.store import open_store

    client = ChainClient(rpc_url)
    return client, Contracts.load(client, home), open_store(store_path(home))


def _key(client: Any, key_env: str, keystore: Path | None, dev_account: int | None) -> LocalAccount:
    return load_signer(client, key_env, keystore, dev_account)


@agent_app.command("register")
def register_cmd(name: str, operator: Annotated[str, typer.Option(help="address that signs the agent's receipts")],
                 description: str = "", endpoint: Annotated[Optional[list[str]], typer.Option(
                     help="service as NAME=URL (repeatable)")] = None,
                 rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
                 keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Store the agent's ERC-8004 registration file and mint its identity (the signer owns it)."""
    from web3 import Web3

    from provenant.agents.registry import RegistrationFile, register_agent

    client, contracts, store = _context(rpc_url, home)
    services = []
    for item in endpoint or []:
        service, sep, url = item.partition("=")
        if not sep or not service or not url:
            raise typer.BadParameter(f"--endpoint {item!r} is not NAME=URL")
        services.append({"name": service, "endpoint": url})
    if not Web3.is_address(operator):
        raise typer.BadParameter(f"--operator {operator!r} is not an address")
    registration = RegistrationFile(name=name, description=description, operator=Web3.to_checksum_address(operator),
                                    services=tuple(services))
    info = register_agent(client, contracts, store, _key(client, key_env, keystore, dev_account), registration)
    console.print(f"agent {info.agent_id} registered: owner {info.owner}, operator {info.operator}, "
                  f"{info.agent_uri}", markup=False, highlight=False, soft_wrap=True)


@agent_app.command("show")
def show_cmd(agent_id: int, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """An agent's owner, operator, URI and registration file."""
    from provenant.agents.registry import agent_info, load_registration

    client, contracts, store = _context(rpc_url, home)
    info = agent_info(client, contracts, agent_id)
    console.print_json(json.dumps({"agent_id": agent_id, "owner": info.owner, "operator": info.operator,
                                   "agent_uri": info.agent_uri,
                                   "registration": load_registration(store, info).to_json()}))


@agent_app.command("set-operator")
def set_operator_cmd(agent_id: int, operator: str, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME,
                     key_env: KeyEnvOpt = "PROVENANT_KEY", keystore: KeystoreOpt = None,
                     dev_account: DevOpt = None) -> None:
    """Rotate (or, with the zero address, revoke) the agent's operator key; owner only."""
    from provenant.agents.registry import registry_of

    client, contracts, _ = _context(rpc_url, home)
    owner = _key(client, key_env, keystore, dev_account)
    client.transact(owner, registry_of(contracts).functions.setOperator(agent_id, operator))
    console.print(f"agent {agent_id}: operator is now {operator}", markup=False, highlight=False, soft_wrap=True)


@agent_app.command("verify")
def verify_cmd(file: Path, rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Same as `provenant verify action FILE`."""
    client, contracts, store = _context(rpc_url, home)
    if not print_action_verification(client, contracts, store, file, console):
        raise typer.Exit(1)


@agent_app.command("export-prov")
def export_prov_cmd(file: Path, out: Annotated[Path, typer.Option(help="where to write the PROV-JSON")],
                    rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME) -> None:
    """Export a verified action bundle's history as W3C PROV-JSON."""
    from provenant.agents.bundle import ActionBundle
    from provenant.agents.prov import export_prov

    client, contracts, store = _context(rpc_url, home)
    out.write_text(json.dumps(export_prov(client, contracts, store, ActionBundle.load(file)), indent=1))
    console.print(f"wrote {out}", markup=False, highlight=False, soft_wrap=True)


@agent_app.command("run")
def run_cmd(agent_id: int, plan: Annotated[Path, typer.Option(help="JSON list of {tool, args, after?} steps")],
            serving_url: Annotated[str, typer.Option(help="the OpenAI-compatible serving API")],
            out: Annotated[Path, typer.Option(help="where to write the action bundle")],
            indexer_url: Annotated[Optional[str], typer.Option(help="the indexer's query API")] = None,
            operator_key_env: Annotated[str, typer.Option(help="env var holding the operator key")] =
            "PROVENANT_OPERATOR_KEY",
            rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
            keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Run a scripted plan (every step for real), signing a receipt per step; the paying wallet is
    the --key-env/--keystore/--dev-account key, the operator key comes from --operator-key-env."""
    from provenant.agents.runtime import AgentRuntime, Step, Tools
    from provenant.agents.sdk import AgentSession
    from provenant.chain import keys

    client, contracts, store = _context(rpc_url, home)
    try:
        steps = [Step(s["tool"], dict(s.get("args", {})), tuple(s["after"]) if "after" in s else None)
                 for s in json.loads(plan.read_text())]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"plan {plan} is not a list of steps: {exc}") from None
    operator = keys.account_from_env(operator_key_env)
    wallet = _key(client, key_env, keystore, dev_account)
    session = AgentSession.open(client, contracts, operator, agent_id)
    result = AgentRuntime(session, Tools(client, contracts, serving_url, wallet, indexer_url)).run(steps)
    assert result.bundle is not None
    result.bundle.save(out)
    console.print(f"{len(result.actions)} actions signed; bundle {out} (head {result.bundle.head})",
                  markup=False, highlight=False, soft_wrap=True)


@agent_app.command("mcp")
def mcp_cmd(serving_url: Annotated[str, typer.Option(help="the serving API (OpenAI-compatible) to call models on")],
            transport: Annotated[str, typer.Option(help="stdio or http (streamable HTTP at /mcp)")] = "stdio",
            host: Annotated[str, typer.Option(help="http: address to listen on")] = "127.0.0.1",
            port: Annotated[int, typer.Option(help="http: port to listen on")] = 8765,
            agent_id: Annotated[Optional[int], typer.Option(help="sign actions as this agent (needs the "
                                                                   "operator key)")] = None,
            operator_key_env: Annotated[str, typer.Option(help="env var holding the agent's operator key")] =
            "PROVENANT_OPERATOR_KEY",
            no_wallet: Annotated[bool, typer.Option("--no-wallet", help="serve without a paying wallet "
                                                                        "(verification and receipts only)")] = False,
            token_env: Annotated[str, typer.Option(help="http: env var holding the bearer token every "
                                                        "request must send (>= 16 characters)")] =
            "PROVENANT_MCP_TOKEN",
            rpc_url: RpcOpt = DEFAULT_RPC, home: HomeOpt = DEFAULT_HOME, key_env: KeyEnvOpt = "PROVENANT_KEY",
            keystore: KeystoreOpt = None, dev_account: DevOpt = None) -> None:
    """Serve Provenant's models, receipts, verification and agent receipts as MCP tools. The paying wallet
    is the --key-env/--keystore/--dev-account key; with --agent-id, every model call and recorded action
    is signed by the operator key from --operator-key-env. Keys never come from tool arguments."""
    from provenant.agents.mcp_server import McpContext, ProvenantTools, serve
    from provenant.chain import keys

    if transport not in ("stdio", "http"):
        raise typer.BadParameter(f"--transport {transport!r} is not stdio or http")
    token = os.environ.get(token_env, "") if transport == "http" else None
    if transport == "http" and len(token or "") < 16:
        raise typer.BadParameter(f"--transport http needs a bearer token of >= 16 characters in ${token_env}: "
                                 "the server's tools spend its wallet", param_hint="--token-env")
    client, contracts, store = _context(rpc_url, home)
    wallet = None if no_wallet else _key(client, key_env, keystore, dev_account)
    operator = keys.account_from_env(operator_key_env) if agent_id is not None else None
    tools = ProvenantTools(McpContext(client=client, contracts=contracts, store=store, home=home,
                                      serving_url=serving_url, wallet=wallet, operator=operator, agent_id=agent_id))
    if transport == "http":  # stdout belongs to the protocol under stdio: say nothing there
        console.print(f"MCP server (streamable HTTP) at http://{host}:{port}/mcp", markup=False, highlight=False)
    serve(tools, transport, host, port, bearer_token=token)


def print_action_verification(client: Any, contracts: Any, store: Any, file: Path, out: Console) -> bool:
    """Verify an action bundle and print the ancestry, who is owed what, the checks and the verdict."""
    from provenant.agents.verify import render_action_verdict, verify_action

    verdict = verify_action(client, contracts, store, file)
    render_action_verdict(verdict, out)
    for line in verdict.checks:
        out.print(f"  ok   {line}", markup=False, highlight=False, soft_wrap=True)
    for line in verdict.reasons:
        out.print(f"  FAIL {line}", markup=False, highlight=False, soft_wrap=True)
    out.print(f"{verdict.subject}: {'VERIFIED' if verdict.ok else 'NOT VERIFIED'}", markup=False, highlight=False, soft_wrap=True)
    return verdict.ok

"""The demo's agent step: the paid calls the demo just made, signed as an agent's actions.

The demo's consumer acts as a registered agent: each paid call it made is a `model_call` action
holding that call's real receipt, a `tool_call` reads the model's record, and a final `result`
earns revenue and declares a royalty share. The bundle is verified like any other
(`verify_action`) and its ancestry table printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from provenant.agents.bundle import ActionBundle
from provenant.agents.publish import publish_bundle
from provenant.agents.registry import AgentInfo, RegistrationFile, register_agent
from provenant.agents.sdk import AgentSession
from provenant.agents.verify import ActionVerdict, render_action_verdict, verify_action
from provenant.chain.bindings import ModelView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.receipts import Receipt
from provenant.store.blockstore import ContentStore


@dataclass
class DemoAgentRun:
    agent: AgentInfo
    bundle: ActionBundle
    verdict: ActionVerdict
    bundle_path: Path | None


def run_demo_agent(client: ChainClient, contracts: Contracts, store: ContentStore, owner: LocalAccount,
                   calls: list[tuple[str, str, Receipt]], console: Any, *, earned: int, royalty_ppm: int,
                   out: Path | None = None, operator: LocalAccount | None = None,
                   home: Path | None = None) -> DemoAgentRun:
    """Register an agent owned by `owner`, sign its actions over `calls` (prompt, output, receipt),
    verify the final action and print its ancestry and who is owed what. With `home`, the bundle is
    also published under <home>/agents/<id>/ (agents/publish.py), where the web app reads it.

    The receipts may come from causal-LM or classifier models: both carry the same attribution
    (top contributions, contributors, Datanets with ppm shares). A classifier's output is its label."""
    if len(calls) < 1:
        raise ValueError("the demo agent needs at least one model call")
    operator = operator or Account.create()
    agent = register_agent(client, contracts, store, owner, RegistrationFile(
        name="demo-agent", description="routes support tickets with Provenant models", operator=operator.address))
    session = AgentSession.open(client, contracts, operator, agent.agent_id)
    model_ids = sorted({r.model_id for _, _, r in calls})

    def read_models() -> list[dict[str, Any]]:
        records = [decode(ModelView, client.call(contracts.models.functions.getModel(m))) for m in model_ids]
        return [{"id": m, "name": r.name, "lineage_root": r.lineage_root} for m, r in zip(model_ids, records)]

    # A DAG, not a chain: every answer builds on the model records the agent read (fan-out), and the
    # final result rests on all of them (fan-in), so the result's ancestry weighs every call.
    _, read = session.tool_call("read_models", read_models)
    answers = [session.add_model_receipt(receipt, prompt, output, parents=[read.hash])
               for prompt, output, receipt in calls]
    final = session.result({"answered": len(calls)}, parents=[a.hash for a in answers], value_earned=earned,
                           royalty_ppm=royalty_ppm)
    bundle = session.bundle(final)
    if out is not None:
        bundle.save(out)
    verdict = verify_action(client, contracts, store, bundle)
    if home is not None and verdict.ok:
        out = publish_bundle(home, bundle)
    render_action_verdict(verdict, console)
    console.print(f"agent {agent.agent_id}: {len(session.actions)} signed actions; final action "
                  f"{'VERIFIED' if verdict.ok else 'NOT VERIFIED: ' + verdict.reasons[0]}",
                  markup=False, highlight=False, soft_wrap=True)
    return DemoAgentRun(agent=agent, bundle=bundle, verdict=verdict, bundle_path=out)

"""Shared set-up for the agent tests: a serving stack with two models, the indexer over it, a
registered agent, and one real agent run of >= 10 signed actions over real model-call receipts."""

from __future__ import annotations

import dataclasses

from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from provenant.agents.registry import AgentInfo, RegistrationFile, register_agent
from provenant.agents.runtime import AgentRuntime, RunResult, Step, Tools
from provenant.agents.sdk import AgentSession
from provenant.chain.keys import dev_accounts
from provenant.demo.thread import _serve
from provenant.serving.devstack import ServingStack, build_stack
from provenant.serving.settings import ServingSettings
from provenant.chain.devnet import free_port

ROYALTY_PPM = 200_000
EARNED = 3 * 10**18


@dataclass
class AgentWorld:
    stack: ServingStack
    indexer_url: str
    owner: LocalAccount
    operator: LocalAccount
    wallet: LocalAccount
    agent: AgentInfo
    run: RunResult
    workdir: Path


def start_indexer(stack: ServingStack, workdir: Path) -> str:
    """Index the deployment into SQLite up to the head, and serve the query API."""
    from provenant_indexer.api import create_app
    from provenant_indexer.config import IndexerConfig
    from provenant_indexer.db import open_index
    from provenant_indexer.indexer import Indexer

    manifest = dataclasses.asdict(stack.contracts.manifest)  # every contract, the agents' included
    engine = open_index(f"sqlite:///{workdir / 'index.sqlite'}")
    indexer = Indexer(engine, IndexerConfig.from_manifest(stack.client.rpc_url, manifest))
    indexer.run_until_head()
    indexer.close()
    port = free_port()
    _serve(create_app(engine), port)
    return f"http://127.0.0.1:{port}"


def plan(models: list[str], payee: str) -> list[Step]:
    """A research-and-answer plan: 12 steps, both models, a payment, a fan-in before the answer."""
    a, b = models
    return [
        Step("query_indexer", {"path": "/models"}),
        Step("call_model", {"model": a, "prompt": "What do the models say about rivers?", "max_tokens": 6}),
        Step("call_model", {"model": b, "prompt": "Rivers: {step1}", "max_tokens": 6}),
        Step("query_indexer", {"path": "/datanets"}),
        Step("call_model", {"model": a, "prompt": "Summarise {step2}", "max_tokens": 6}),
        Step("transfer", {"to": payee, "amount": 10**15}),
        Step("call_model", {"model": b, "prompt": "Check {step4}", "max_tokens": 6}),
        Step("call_model", {"model": a, "prompt": "Second opinion on {step4}", "max_tokens": 6}, after=(4,)),
        Step("call_model", {"model": b, "prompt": "Combine {step6} and {step7}", "max_tokens": 6}, after=(6, 7)),
        Step("query_indexer", {"path": "/models/1"}),
        Step("call_model", {"model": a, "prompt": "Final draft: {step8}", "max_tokens": 6}),
        Step("answer", {"text": "{step10}", "question": "rivers", "earned": EARNED, "royalty_ppm": ROYALTY_PPM},
             after=(10, 9)),
    ]


def build_world(rpc_url: str, workdir: Path) -> AgentWorld:
    settings = ServingSettings(rate_per_s=1000, rate_burst=1000, max_new_tokens=16)
    stack = build_stack(rpc_url, workdir, 2, settings, prefix="agentlm")
    stack.start_http()
    keys = dev_accounts(12)
    owner, wallet = keys[10], keys[11]
    operator = Account.create()  # the operator needs no gas: it only signs receipts
    stack.fund(wallet, [m.model_id for m in stack.models])
    stack.client.transact(stack.admin, stack.contracts.token.functions.transfer(wallet.address, 10**18))  # to pay with
    indexer_url = start_indexer(stack, workdir)
    registration = RegistrationFile(name="river-researcher", description="answers questions about rivers",
                                    operator=operator.address,
                                    services=({"name": "web", "endpoint": stack.url},))
    agent = register_agent(stack.client, stack.contracts, stack.store, owner, registration)
    session = AgentSession.open(stack.client, stack.contracts, operator, agent.agent_id)
    tools = Tools(stack.client, stack.contracts, stack.url, wallet, indexer_url=indexer_url)
    run = AgentRuntime(session, tools).run(plan([m.name for m in stack.models], keys[4].address))
    return AgentWorld(stack=stack, indexer_url=indexer_url, owner=owner, operator=operator, wallet=wallet,
                      agent=agent, run=run, workdir=workdir)

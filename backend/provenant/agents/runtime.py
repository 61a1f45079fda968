"""A small, readable agent runtime: a tool-using loop that signs a receipt for every step.

The loop is the usual one — look at the plan, pick the next tool, run it, remember the
observation — with four real tools:

  query_indexer(path)            GET on the indexer's query API (models, Datanets, earnings)
  call_model(model, prompt, ...) a Provenant model through the OpenAI-compatible API, paid with a
                                 voucher; its provenance receipt is kept
  transfer(to, amount)           an ERC-20 transfer of the project's token, on chain
  answer(text, earned, royalty)  the final result, with what it earned and the royalty it routes

With the tiny random-weight models that load offline the plan is scripted (a list of Steps);
every step still runs for real. A prompt may quote earlier observations as `{step3}`. With a
capable model, `choose` can be replaced by a function asking the model for the next Step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from provenant.agents.bundle import ActionBundle
from provenant.agents.receipts import ActionReceipt
from provenant.agents.sdk import AgentSession
from provenant.chain.bindings import ModelView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.wallet import VoucherWallet

TOOLS = ("query_indexer", "call_model", "transfer", "answer")


class PlanError(ValueError):
    """A plan step names an unknown tool or quotes a step that has not run yet."""


@dataclass(frozen=True)
class Step:
    tool: str
    args: dict[str, Any]
    after: tuple[int, ...] | None = None  # indices of the steps this one builds on (default: the previous)


@dataclass
class RunResult:
    observations: list[Any] = field(default_factory=list)
    actions: list[ActionReceipt] = field(default_factory=list)
    bundle: ActionBundle | None = None
    royalty: Any = None  # the RoutedRoyalty of a result step with "route": true (agents/royalty.py)


class Tools:
    """The runtime's tools, bound to one deployment, one serving API and one paying wallet."""

    def __init__(self, client: ChainClient, contracts: Contracts, serving_url: str, wallet_key: LocalAccount,
                 indexer_url: str | None = None, timeout: float = 120.0) -> None:
        import openai

        self.client, self.contracts = client, contracts
        self.indexer_url = indexer_url
        self.wallet_key = wallet_key
        self.wallet = VoucherWallet(wallet_key, client.chain_id, contracts.escrow.address,
                                    clock=client.latest_timestamp)
        self.oai = openai.OpenAI(base_url=serving_url.rstrip("/") + "/v1", api_key="voucher-paid",
                                 max_retries=0, timeout=timeout)
        self._models: dict[str, tuple[int, int]] = {}

    def model_terms(self, name: str) -> tuple[int, int]:
        """(model id, price per call) of a model by name, from the ModelRegistry."""
        if name not in self._models:
            model_id = int(self.client.call(self.contracts.models.functions.modelIdByNameHash(keccak(name.encode()))))
            if model_id == 0:
                raise PlanError(f"no model named {name!r} is registered")
            record = decode(ModelView, self.client.call(self.contracts.models.functions.getModel(model_id)))
            price = int(record.price_per_call)
            self._models[name] = (model_id, price)
        return self._models[name]

    def query_indexer(self, path: str) -> Any:
        if not self.indexer_url:
            raise PlanError("query_indexer needs an indexer URL")
        response = httpx.get(self.indexer_url.rstrip("/") + "/" + path.lstrip("/"), timeout=30)
        response.raise_for_status()
        return response.json()

    def transfer(self, to: str, amount: int) -> str:
        result = self.client.transact(self.wallet_key, self.contracts.token.functions.transfer(to, amount))
        return result.tx_hash


class AgentRuntime:
    """Runs a plan, one tool per step, each step signed into the session's receipt DAG."""

    def __init__(self, session: AgentSession, tools: Tools,
                 choose: Callable[[list[Step], RunResult], Step | None] | None = None) -> None:
        self.session, self.tools = session, tools
        self.choose = choose or _scripted

    def run(self, plan: list[Step]) -> RunResult:
        for step in plan:
            if step.tool not in TOOLS:
                raise PlanError(f"unknown tool {step.tool!r}; the tools are {', '.join(TOOLS)}")
        result = RunResult()
        while (step := self.choose(plan, result)) is not None:
            observation, action = self._act(step, result)
            result.observations.append(observation)
            result.actions.append(action)
        result.bundle = self.session.bundle()
        return result

    def _act(self, step: Step, result: RunResult) -> tuple[Any, ActionReceipt]:
        index = len(result.actions)
        after = step.after if step.after is not None else ((index - 1,) if index else ())
        if any(not 0 <= i < index for i in after):
            raise PlanError(f"step {index} builds on {list(after)}, but only steps 0..{index - 1} have run")
        parents = [result.actions[i].hash for i in after]
        args = {k: _fill(v, result.observations) for k, v in step.args.items()}
        s = self.session
        if step.tool == "call_model":
            model_id, price = self.tools.model_terms(args["model"])
            answer = s.model_call(self.tools.oai, args["model"], args["prompt"],
                                  max_tokens=int(args.get("max_tokens", 8)), parents=parents,
                                  extra_headers=self.tools.wallet.pay(model_id, price))
            return answer.text, answer.action
        if step.tool == "query_indexer":
            data, action = s.tool_call("query_indexer", self.tools.query_indexer, args["path"], parents=parents)
            return data, action
        if step.tool == "transfer":
            amount = int(args["amount"])
            tx_hash = self.tools.transfer(args["to"], amount)
            return tx_hash, s.payment(args["to"], amount, tx_hash, parents=parents)
        action = s.result(args["text"], parents=parents, value_earned=int(args.get("earned", 0)),
                          royalty_ppm=int(args.get("royalty_ppm", 0)), input_data=args.get("question", ""))
        if args.get("route") and action.value_earned * action.royalty_ppm:
            from provenant.agents.royalty import route_royalty  # the declared share goes back on chain

            result.royalty = route_royalty(self.tools.client, self.tools.contracts, self.tools.wallet_key,
                                           s.bundle(action))
        return args["text"], action


def _scripted(plan: list[Step], result: RunResult) -> Step | None:
    """The scripted policy: the next step of the plan, or None when it is done."""
    return plan[len(result.actions)] if len(result.actions) < len(plan) else None


def _fill(value: Any, observations: list[Any]) -> Any:
    """Replace `{stepN}` in strings with the (text of the) N-th observation."""
    if not isinstance(value, str) or "{step" not in value:
        return value
    for i, obs in enumerate(observations):
        value = value.replace("{step%d}" % i, str(obs)[:200])
    if "{step" in value:
        raise PlanError(f"{value!r} quotes a step that has not run yet")
    return value

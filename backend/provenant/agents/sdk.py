"""The agent SDK: wrap an external agent's tool calls and model calls, get signed action receipts.

    session = AgentSession.open(client, contracts, operator_key, agent_id)
    weather = session.tool_call("weather", get_weather, city="Oslo")           # any Python callable
    answer = session.model_call(oai, "lm-0", "Summarise: ...", max_tokens=16,  # openai client
                                extra_headers=wallet.pay(model_id, price))
    final = session.result(answer.text, value_earned=10**18, royalty_ppm=100_000)
    session.bundle().save(Path("final.json"))                                  # `verify action`

Each step is signed by the operator key, and the session refuses to start unless that key is
the one the AgentRegistry records for the agent (an unregistered key would only produce
receipts that `verify action` refuses). By default each action's parent is the previous one (a
chain); pass `parents=` for a DAG. Time is the chain's clock: how far the chain's latest block
runs ahead of this machine (if at all; a block mined a while ago is behind) is read once, so
stamping an action costs no round trip, and an action is never stamped before its parents.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from eth_account.signers.local import LocalAccount

from provenant.agents.bundle import ActionBundle
from provenant.agents.receipts import ActionReceipt, content_hash, model_receipt_hash
from provenant.agents.registry import OperatorHistory, registry_of
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.receipts import Receipt


class OperatorNotRegistered(PermissionError):
    """The session's key is not the agent's registered operator."""


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    receipt: Receipt
    action: ActionReceipt


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


class AgentSession:
    """One agent's run: a sequence counter, the actions signed so far and the model receipts used."""

    def __init__(self, operator: LocalAccount, agent_id: int, chain_id: int, agent_registry: str,
                 *, clock_offset: int = 0, first_seq: int = 1) -> None:
        self.operator, self.agent_id = operator, agent_id
        self.chain_id, self.agent_registry = chain_id, agent_registry
        self.clock_offset = clock_offset
        self.next_seq = first_seq
        self.actions: list[ActionReceipt] = []
        self.model_calls: dict[str, Receipt] = {}
        self._last_time = 0

    @classmethod
    def open(cls, client: ChainClient, contracts: Contracts, operator: LocalAccount, agent_id: int,
             *, first_seq: int = 1) -> "AgentSession":
        registry = registry_of(contracts)
        now_chain = client.latest_timestamp()
        registered = OperatorHistory(client, contracts).operator_at(agent_id, now_chain) \
            if client.call(registry.functions.exists(agent_id)) else ""
        if registered.lower() != operator.address.lower():
            raise OperatorNotRegistered(f"key {operator.address} is not agent {agent_id}'s registered operator "
                                        f"({registered or 'agent not registered'}): its receipts would not verify")
        return cls(operator, agent_id, client.chain_id, registry.address,
                   clock_offset=max(0, now_chain - int(time.time())), first_seq=first_seq)

    # -- the one primitive ------------------------------------------------------------------
    def record(self, kind: str, input_data: Any, output_data: Any, *, model_receipts: Iterable[Receipt] = (),
               parents: Iterable[str] | None = None, weights_ppm: Iterable[int] = (), value_moved: int = 0,
               value_earned: int = 0, royalty_ppm: int = 0, detail: dict[str, Any] | None = None) -> ActionReceipt:
        """Sign one action; inputs and outputs are hashed (bytes/str as is, anything else as canonical JSON)."""
        receipts = list(model_receipts)
        parents = list(parents) if parents is not None else ([self.actions[-1].hash] if self.actions else [])
        parent_times = [a.timestamp for a in self.actions if a.hash in set(parents)]
        now = max([int(time.time()) + self.clock_offset, self._last_time, *parent_times])
        action = ActionReceipt(
            agent_id=self.agent_id, seq=self.next_seq, kind=kind, input_hash=_hash(input_data),
            output_hash=_hash(output_data), model_call_ids=tuple(r.call_id for r in receipts),
            model_receipt_hashes=tuple(model_receipt_hash(r) for r in receipts), parents=tuple(parents),
            weights_ppm=tuple(weights_ppm), timestamp=now, value_moved=value_moved, value_earned=value_earned,
            royalty_ppm=royalty_ppm, chain_id=self.chain_id, verifying_contract=self.agent_registry,
            detail=dict(detail or {}),
        ).signed_by(self.operator)
        self.next_seq += 1
        self._last_time = now
        self.actions.append(action)
        self.model_calls.update({r.call_id: r for r in receipts})
        return action

    # -- wrappers ---------------------------------------------------------------------------
    def tool_call(self, name: str, fn: Callable[..., Any], /, *args: Any, parents: Iterable[str] | None = None,
                  value_moved: int = 0, **kwargs: Any) -> tuple[Any, ActionReceipt]:
        """Run a tool and sign a `tool_call` action over its arguments and its result."""
        result = fn(*args, **kwargs)
        action = self.record("tool_call", {"tool": name, "args": list(args), "kwargs": kwargs}, result,
                             parents=parents, value_moved=value_moved, detail={"tool": name})
        return result, action

    def model_call(self, oai: Any, model: str, prompt: str, *, max_tokens: int = 16,
                   parents: Iterable[str] | None = None, **create_kwargs: Any) -> ModelAnswer:
        """Call a Provenant model through the OpenAI-compatible API and sign a `model_call` action
        holding its receipt (the `provenance` field OpenAI clients ignore)."""
        response = oai.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, **create_kwargs)
        raw = (response.model_extra or {}).get("provenance")
        if raw is None:
            raise ValueError(f"model {model!r} answered without a provenance receipt")
        receipt = Receipt.from_json(raw)
        text = response.choices[0].text
        action = self.record("model_call", prompt, text, model_receipts=[receipt], parents=parents,
                             value_moved=receipt.fee, detail={"model": model, "model_id": receipt.model_id})
        return ModelAnswer(text=text, receipt=receipt, action=action)

    def add_model_receipt(self, receipt: Receipt, prompt: str, output: str,
                          parents: Iterable[str] | None = None) -> ActionReceipt:
        """Record a model call the agent made by other means (its own HTTP client, MCP) from its receipt."""
        return self.record("model_call", prompt, output, model_receipts=[receipt], parents=parents,
                           value_moved=receipt.fee, detail={"model_id": receipt.model_id})

    def payment(self, to: str, amount: int, tx_hash: str, parents: Iterable[str] | None = None) -> ActionReceipt:
        return self.record("payment", {"to": to, "amount": str(amount)}, tx_hash, parents=parents,
                           value_moved=amount, detail={"to": to})

    def result(self, output: Any, *, parents: Iterable[str] | None = None, value_earned: int = 0,
               royalty_ppm: int = 0, weights_ppm: Iterable[int] = (), input_data: Any = "") -> ActionReceipt:
        return self.record("result", input_data, output, parents=parents, value_earned=value_earned,
                           royalty_ppm=royalty_ppm, weights_ppm=weights_ppm)

    def bundle(self, head: ActionReceipt | None = None) -> ActionBundle:
        """Everything `verify action` needs for `head` (default: the last action)."""
        head = head or self.actions[-1]
        return ActionBundle.build(head, self.actions, self.model_calls.values())


def _hash(value: Any) -> str:
    if isinstance(value, (bytes, str)):
        return content_hash(value)
    return content_hash(_canonical(value))

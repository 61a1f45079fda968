"""Agents, read-only, for the web app's agent page: identities from the AgentRegistry, actions from
the bundles each agent published (agents/publish.py: <home>/agents/<id>/<head>.json).

- `GET /v1/agents`: every registered agent (from the registry's Registered events) with its name and
  how many verified actions it has published;
- `GET /v1/agents/{agent_id}`: owner, operator, URI, ERC-8004 registration file, published bundles
  (each with its verdict) and what the agent earned and routed back;
- `GET /v1/agents/{agent_id}/actions`: the agent's action DAG (nodes with their parents) and the
  model-call receipts beneath them;
- `GET /v1/agents/{agent_id}/actions/{action_hash}`: one action opened up: its model calls with their
  attribution (contributions, contributors, Datanets with ppm shares), the data ancestry of the action
  (its whole sub-DAG, by the rule in agents/ancestry.py) and who is owed what from its royalty.

Nothing published is trusted: every bundle goes through `verify action` (chain lookups; the verdict
is cached per file and modification time), and only actions of bundles that verify are served; a
bundle that does not verify is listed with the reason, its actions left out.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel

from provenant.agents.bundle import ActionBundle, BadBundle
from provenant.agents.publish import agent_dir, published_bundles
from provenant.agents.receipts import PPM, ActionReceipt
from provenant.agents.registry import AgentRegistryError, agent_info, load_registration, registry_of
from provenant.agents.verify import ActionVerdict, verify_action
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.receipts import Receipt
from provenant.store.blockstore import ContentStore

HASH_PATTERN = r"^0x[0-9a-fA-F]{64}$"
MAX_AGENT_ID = 2**64 - 1  # ids are minted one by one from 1; larger ones are typos, refused with 422


class AgentProblem(BaseModel):
    """A 4xx answer: `detail` is a sentence naming the problem (or FastAPI's field errors)."""

    detail: str | list[Any] | dict[str, Any]


NOT_FOUND = {404: {"model": AgentProblem, "description": "no such agent (or no AgentRegistry), or no such action"}}


@dataclass
class _Published:
    """The verified view of one agent's published bundles."""

    bundles: list[dict[str, Any]] = field(default_factory=list)  # file, head, ok, reasons
    actions: dict[str, ActionReceipt] = field(default_factory=dict)  # hash -> action (verified bundles only)
    calls: dict[str, Receipt] = field(default_factory=dict)


class _Verdicts:
    """verify_action per bundle file, cached by (path, mtime, size): the page polls, the chain answers once."""

    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore) -> None:
        self.client, self.contracts, self.store = client, contracts, store
        self._cache: dict[tuple[str, int, int], ActionVerdict] = {}
        self._lock = threading.Lock()

    def of(self, path: FsPath, bundle: ActionBundle) -> ActionVerdict:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        verdict = verify_action(self.client, self.contracts, self.store, bundle)
        with self._lock:
            self._cache[key] = verdict
        return verdict


def _action_json(a: ActionReceipt, h: str) -> dict[str, Any]:
    raw = a.to_json()
    raw["hash"] = h
    raw["value_moved"], raw["value_earned"] = str(a.value_moved), str(a.value_earned)
    raw["royalty_wei"] = str(a.value_earned * a.royalty_ppm // PPM)
    for key in ("signature", "chain_id", "verifying_contract"):
        raw.pop(key, None)
    return raw


def _receipt_json(r: Receipt) -> dict[str, Any]:
    raw = r.to_json()
    raw.pop("salt", None)  # the salt opens the prompt and output hashes: not the page's business
    return raw


def create_agents_router(client: ChainClient, contracts: Contracts, store: ContentStore, home: FsPath) -> APIRouter:
    router = APIRouter(tags=["agents"])
    verdicts = _Verdicts(client, contracts, store)

    def registry_or_404() -> Any:
        try:
            return registry_of(contracts)
        except AgentRegistryError as exc:
            raise HTTPException(404, str(exc)) from None

    def agent_or_404(agent_id: int) -> Any:
        registry_or_404()
        try:
            return agent_info(client, contracts, agent_id)
        except AgentRegistryError as exc:
            raise HTTPException(404, str(exc)) from None

    def published(agent_id: int) -> _Published:
        out = _Published()
        for path, bundle in published_bundles(home, agent_id):
            entry: dict[str, Any] = {"file": path.name}
            if isinstance(bundle, BadBundle):
                out.bundles.append({**entry, "head": None, "ok": False, "reasons": [str(bundle)]})
                continue
            verdict = verdicts.of(path, bundle)
            head = bundle.actions.get(bundle.head)
            if verdict.ok and (head is None or head.agent_id != agent_id):
                verdict = ActionVerdict(subject=verdict.subject, reasons=[
                    f"the bundle's head action belongs to agent {head.agent_id if head else '?'}, not {agent_id}"])
            out.bundles.append({**entry, "head": bundle.head, "ok": verdict.ok, "reasons": verdict.reasons,
                                "actions": len(verdict.actions)})
            if verdict.ok:
                for a in verdict.actions:
                    out.actions[a.hash] = a
                    out.calls.update({c: bundle.model_calls[c] for c in a.model_call_ids})
        return out

    @router.get("/v1/agents")
    def agents() -> dict[str, Any]:
        """Every registered agent, newest first, with its name and the number of verified actions published."""
        registry = registry_or_404()
        logs = registry.events.Registered.get_logs(from_block=contracts.manifest.block_number)
        rows = []
        for log in sorted(logs, key=lambda entry: -int(entry["args"]["agentId"])):
            agent_id = int(log["args"]["agentId"])
            info = agent_info(client, contracts, agent_id)
            try:
                name = load_registration(store, info).name
            except (AgentRegistryError, LookupError, ValueError, OSError):
                name = ""
            n = sum(1 for _ in agent_dir(home, agent_id).glob("0x*.json")) if agent_dir(home, agent_id).is_dir() else 0
            rows.append({"agent_id": agent_id, "name": name, "owner": info.owner, "operator": info.operator,
                         "published_bundles": n})
        return {"agents": rows}

    @router.get("/v1/agents/{agent_id}", responses=NOT_FOUND)
    def agent(agent_id: int = Path(ge=1, le=MAX_AGENT_ID)) -> dict[str, Any]:
        """The agent's identity and registration file, its published bundles and its earnings routed back."""
        info = agent_or_404(agent_id)
        try:
            registration: dict[str, Any] | None = load_registration(store, info).to_json()
            registration_error = ""
        except (AgentRegistryError, LookupError, ValueError, OSError) as exc:
            registration, registration_error = None, str(exc)
        pub = published(agent_id)
        results = [a for a in pub.actions.values() if a.value_earned > 0]
        return {"agent_id": agent_id, "owner": info.owner, "operator": info.operator, "agent_uri": info.agent_uri,
                "registration": registration, "registration_error": registration_error, "bundles": pub.bundles,
                "actions": len(pub.actions), "model_calls": len(pub.calls),
                "earned_wei": str(sum(a.value_earned for a in results)),
                "royalty_wei": str(sum(a.value_earned * a.royalty_ppm // PPM for a in results)),
                "moved_wei": str(sum(a.value_moved for a in pub.actions.values()))}

    @router.get("/v1/agents/{agent_id}/actions", responses=NOT_FOUND)
    def actions(agent_id: int = Path(ge=1, le=MAX_AGENT_ID)) -> dict[str, Any]:
        """The agent's verified actions as a DAG (oldest first; `parents` are the edges) and the
        model-call receipts they list."""
        agent_or_404(agent_id)
        pub = published(agent_id)
        ordered = sorted(pub.actions.values(), key=lambda a: (a.seq, a.timestamp))
        children: dict[str, int] = {}
        for a in ordered:
            for p in a.parents:
                children[p] = children.get(p, 0) + 1
        return {"agent_id": agent_id, "bundles": pub.bundles,
                "actions": [{**_action_json(a, a.hash), "children": children.get(a.hash, 0)} for a in ordered],
                "model_calls": {c: _receipt_json(r) for c, r in pub.calls.items()}}

    @router.get("/v1/agents/{agent_id}/actions/{action_hash}", responses=NOT_FOUND)
    def action(agent_id: int = Path(ge=1, le=MAX_AGENT_ID),
               action_hash: str = Path(pattern=HASH_PATTERN)) -> dict[str, Any]:
        """One action: its model calls with their attribution, its data ancestry over everything beneath it,
        and who is owed what from the royalty it declared (its earnings routed back)."""
        agent_or_404(agent_id)
        pub = published(agent_id)
        key = next((h for h in pub.actions if h.lower() == action_hash.lower()), None)
        if key is None:
            raise HTTPException(404, f"agent {agent_id} has published no verified action {action_hash}")
        verdict = verify_action(client, contracts, store, ActionBundle(head=key, actions=pub.actions,
                                                                       model_calls=pub.calls))
        a = pub.actions[key]
        out: dict[str, Any] = {"action": _action_json(a, key), "ok": verdict.ok, "reasons": verdict.reasons,
                               "checks": verdict.checks,
                               "model_calls": [_receipt_json(pub.calls[c]) for c in a.model_call_ids],
                               "beneath": len(verdict.actions)}
        anc = verdict.ancestry
        if anc is not None:
            out["ancestry"] = {"shares_ppm": anc.shares, "unattributed_ppm": anc.unattributed,
                               "call_weights_ppm": {c: int(w * PPM) for c, w in anc.call_weights.items()},
                               "fees_by_model": {m: str(f) for m, f in anc.fees_by_model.items()},
                               "royalty_pool_wei": str(anc.pool_wei), "dust_wei": str(anc.dust_wei),
                               "owed": [{"role": r.role, "who": r.key, "share_ppm": r.share_ppm,
                                         "amount_wei": str(r.amount_wei)} for r in anc.owed]}
        return out

    return router

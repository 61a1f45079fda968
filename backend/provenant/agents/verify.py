"""`verify action`: check an action bundle link by link and say who is owed what.

Starting at the head action and walking parents breadth-first, each action must hash to the hash
its children signed, be signed for this deployment by the key the AgentRegistry recorded as the
agent's operator at the action's time, not reuse another action's (agent, sequence number) or
model call, and be no younger than its parents. Each model-call receipt it lists must be in the
bundle, hash to the digest the action signed, and pass the same checks as `verify receipt`
(the model's registered serving key, lineage root, adapter hash, attribution hash), and the
contributions and Datanets it credits must be in the model's registered lineage. The first
broken link stops the walk and is named; nothing is computed from a chain that failed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenant.agents.ancestry import Ancestry, Split, compute_ancestry
from provenant.agents.bundle import ActionBundle, BadBundle
from provenant.agents.receipts import ActionReceipt, BadActionReceipt, model_receipt_digest, recover_digest
from provenant.agents.registry import ZERO, AgentRegistryError, OperatorHistory, registry_of
from provenant.chain.bindings import ModelView, SplitView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.receipts import Receipt, attribution_hash
from provenant.store.blockstore import ContentStore


@dataclass
class ActionVerdict:
    """Shaped like provenant.verify.Verdict (subject, reasons, checks, ok), without importing it:
    that module loads the serving stack (torch), which `verify action` never needs."""

    subject: str
    reasons: list[str] = field(default_factory=list)  # problems; empty means verified
    checks: list[str] = field(default_factory=list)  # what was checked and held
    ancestry: Ancestry | None = None
    actions: list[ActionReceipt] = field(default_factory=list)  # the verified sub-DAG, head first

    @property
    def ok(self) -> bool:
        return not self.reasons


class BrokenLink(Exception):
    """The first link of the DAG that does not hold (the message names it)."""


def describe(h: str, action: ActionReceipt | None) -> str:
    if action is None:
        return f"action {h}"
    return f"action {h} (agent {action.agent_id}, seq {action.seq}, {action.kind})"


@dataclass
class _Lineage:
    record: ModelView
    contribution_ids: frozenset[str]
    datanet_ids: frozenset[str]


class _Walker:
    """State of one verification: chain lookups cached, replays tracked."""

    def __init__(self, client: ChainClient, contracts: Contracts, bundle: ActionBundle) -> None:
        self.client, self.contracts, self.bundle = client, contracts, bundle
        self.registry = registry_of(contracts)
        self.history = OperatorHistory(client, contracts)
        self.agents: dict[int, bool] = {}
        self.models: dict[int, _Lineage] = {}
        self.seqs: dict[tuple[int, int], str] = {}
        self.call_users: dict[str, str] = {}
        self.signers: set[str] = set()

    def walk(self) -> list[ActionReceipt]:
        order: list[ActionReceipt] = []
        seen: set[str] = set()
        queue: deque[tuple[str, str | None]] = deque([(self.bundle.head, None)])
        while queue:
            h, child = queue.popleft()
            if h in seen:
                continue
            seen.add(h)
            action = self.bundle.actions.get(h)
            if action is None:
                if child is None:
                    raise BrokenLink(f"the head action {h} is not in the bundle")
                raise BrokenLink(f"{describe(child, self.bundle.actions[child])} lists parent {h}, which is "
                                 f"missing from the bundle (unknown parent)")
            self._check_action(h, action)
            for p in action.parents:
                parent = self.bundle.actions.get(p)
                if parent is not None and (parent.timestamp > action.timestamp or (
                        parent.agent_id == action.agent_id and parent.seq >= action.seq)):
                    raise BrokenLink(f"{describe(h, action)} lists parent {describe(p, parent)}, which is not older")
                queue.append((p, h))
            order.append(action)
        return order

    def _check_action(self, h: str, a: ActionReceipt) -> None:
        name = describe(h, a)
        if a.hash != h:
            raise BrokenLink(f"{name} was altered: its content hashes to {a.hash}, not to the hash its "
                             f"children signed")
        if a.chain_id != self.client.chain_id or a.verifying_contract.lower() != self.registry.address.lower():
            raise BrokenLink(f"{name} is signed for chain {a.chain_id} / registry {a.verifying_contract}, not this "
                             f"deployment ({self.client.chain_id} / {self.registry.address}): a replay from elsewhere")
        if a.agent_id not in self.agents:
            self.agents[a.agent_id] = self.history.exists(a.agent_id)
        if not self.agents[a.agent_id]:
            raise BrokenLink(f"{name}: agent {a.agent_id} is not registered")
        signer = a.recover_signer()
        operator = self.history.operator_at(a.agent_id, a.timestamp)
        if not signer:
            raise BrokenLink(f"{name}: the signature is malformed (forged)")
        if operator == ZERO:
            raise BrokenLink(f"{name}: agent {a.agent_id} had no registered operator at time {a.timestamp}")
        if signer.lower() != operator.lower():
            raise BrokenLink(f"{name} is signed by {signer}, a key the registry does not know as agent "
                             f"{a.agent_id}'s operator (registered: {operator}): forged or unregistered key")
        self.signers.add(signer)
        earlier = self.seqs.setdefault((a.agent_id, a.seq), h)
        if earlier != h:
            raise BrokenLink(f"{name} reuses sequence number {a.seq} of agent {a.agent_id}, already taken by "
                             f"action {earlier}: a replayed or equivocating receipt")
        for call_id, receipt_hash in zip(a.model_call_ids, a.model_receipt_hashes):
            self._check_call(h, name, call_id, receipt_hash)

    def _check_call(self, h: str, name: str, call_id: str, receipt_hash: str) -> None:
        user = self.call_users.setdefault(call_id, h)
        if user != h:
            raise BrokenLink(f"{name} reuses model call {call_id}, already used by action {user}: a replayed "
                             f"model-call receipt would be counted twice")
        receipt = self.bundle.model_calls.get(call_id)
        if receipt is None:
            raise BrokenLink(f"{name} relies on model call {call_id}, whose receipt is missing from the bundle")
        try:
            digest = model_receipt_digest(receipt)
        except BadActionReceipt as exc:
            raise BrokenLink(f"{exc} (used by {name})") from None
        if "0x" + digest.hex() != receipt_hash:
            raise BrokenLink(f"model-call receipt {call_id} (used by {name}) was altered: it no longer hashes to "
                             f"the digest the action signed")
        if receipt.chain_id != self.client.chain_id or \
                receipt.verifying_contract.lower() != self.contracts.models.address.lower():
            raise BrokenLink(f"model-call receipt {call_id} is for another deployment")
        lineage = self._lineage(receipt.model_id, call_id)
        problems = model_receipt_problems(receipt, digest, lineage.record.server, lineage.record.lineage_root,
                                          lineage.record.adapter_hash)
        if problems:
            raise BrokenLink(f"model-call receipt {call_id} (used by {name}): {'; '.join(problems)}")
        for row in receipt.attribution.get("contributions", []):
            if str(row["id"]) not in lineage.contribution_ids:
                raise BrokenLink(f"model-call receipt {call_id} credits contribution {row['id']}, which is not in "
                                 f"model {receipt.model_id}'s registered lineage")
        for row in receipt.attribution.get("datanets", []):
            if str(row["id"]) not in lineage.datanet_ids:
                raise BrokenLink(f"model-call receipt {call_id} credits Datanet {row['id']}, which model "
                                 f"{receipt.model_id} was not trained on")

    def _lineage(self, model_id: int, call_id: str) -> _Lineage:
        if model_id not in self.models:
            if not self.client.call(self.contracts.models.functions.exists(model_id)):
                raise BrokenLink(f"model-call receipt {call_id} names model {model_id}, which is not registered")
            record = decode(ModelView, self.client.call(self.contracts.models.functions.getModel(model_id)))
            logs = self.contracts.models.events.ModelLineage.get_logs(
                from_block=self.contracts.manifest.block_number, argument_filters={"modelId": model_id})
            args = logs[0]["args"] if logs else {"contributionIds": [], "datanetIds": []}
            self.models[model_id] = _Lineage(record, frozenset(str(int(i)) for i in args["contributionIds"]),
                                             frozenset(str(int(i)) for i in args["datanetIds"]))
        return self.models[model_id]


def model_receipt_problems(receipt: Receipt, digest: bytes, server: str, lineage_root: str, adapter_hash: str
                           ) -> list[str]:
    """provenant.serving.receipts.check_receipt's checks, with the same messages, on a digest computed
    once (check_receipt rebuilds it through the generic encoder: ~4x slower over a 1,000-action DAG);
    tests/test_agents_receipts.py checks both give the same answers."""
    problems = []
    if attribution_hash(receipt.attribution) != receipt.attribution_hash:
        problems.append("attribution does not match its hash")
    signer = recover_digest(digest, receipt.signature)
    if signer.lower() != server.lower():
        problems.append(f"signed by {signer or 'nobody'}, not the model's registered server {server}")
    if receipt.lineage_root != lineage_root:
        problems.append("lineage root differs from the registered one")
    if receipt.adapter_hash != adapter_hash:
        problems.append("adapter hash differs from the registered one")
    return problems


def verify_action(client: ChainClient, contracts: Contracts, store: ContentStore,
                  bundle: ActionBundle | Path | dict[str, Any]) -> ActionVerdict:
    """Verify an action bundle (object, JSON dict or file) against the chain; see the module doc."""
    del store  # receipts carry what is checked; the lineage roots are checked against the chain
    try:
        if isinstance(bundle, Path):
            bundle = ActionBundle.load(bundle)
        elif isinstance(bundle, dict):
            bundle = ActionBundle.from_json(bundle)
    except BadBundle as exc:
        return ActionVerdict(subject="action bundle", reasons=[str(exc)])
    verdict = ActionVerdict(subject=f"action {bundle.head}")
    try:
        walker = _Walker(client, contracts, bundle)
        order = walker.walk()
    except (BrokenLink, AgentRegistryError) as exc:
        verdict.reasons.append(str(exc))
        return verdict
    calls = {c: bundle.model_calls[c] for a in order for c in a.model_call_ids}
    models = sorted({r.model_id for r in calls.values()})
    verdict.checks.append(f"{len(order)} action receipts hash to the links their children signed and are signed by "
                          f"their agents' registered operators ({', '.join(sorted(walker.signers))})")
    verdict.checks.append(f"{len(calls)} model-call receipts signed by their models' registered servers, with the "
                          f"registered lineage roots and adapter hashes of model(s) {', '.join(map(str, models))}; "
                          f"every credited contribution and Datanet is in its model's lineage")
    split = decode(SplitView, client.call(contracts.settlement.functions.split()))
    owners = {str(m): walker.models[m].record.owner for m in models}
    verdict.ancestry = compute_ancestry(order, calls, Split(split.protocol_bps, split.owner_bps, split.curators_bps,
                                                            split.contributors_bps), owners)
    verdict.actions = order
    if verdict.ancestry.pool_wei > 0:  # the earnings routed back on chain must match the owed rows
        from provenant.agents.royalty import routing_problems

        problems, check = routing_problems(client, contracts, order[0].agent_id, order[0].hash, verdict.ancestry)
        verdict.reasons.extend(problems)
        if not problems:
            verdict.checks.append(check)
    return verdict


def render_action_verdict(verdict: ActionVerdict, console: Any) -> None:
    """Print the ancestry and who-is-owed-what tables (rich), before the checks and the verdict line."""
    from rich.table import Table

    a = verdict.ancestry
    if a is None:
        return
    table = Table(title=f"data ancestry of {verdict.subject} (ppm; royalty pool {a.pool_wei} wei)")
    for col in ("dimension", "key", "share ppm"):
        table.add_column(col)
    for dim, shares in a.shares.items():
        for key, ppm in sorted(shares.items(), key=lambda kv: -kv[1]):
            table.add_row(dim, key, str(ppm))
        table.add_row(dim, "(unattributed)", str(a.unattributed[dim]))
    console.print(table)
    owed = Table(title="who is owed what from this action's royalty")
    for col in ("role", "who", "share ppm", "owed wei"):
        owed.add_column(col)
    for row in a.owed:
        owed.add_row(row.role, row.key, str(row.share_ppm), str(row.amount_wei))
    owed.add_row("agent", "(rounding dust kept)", "", str(a.dust_wei))
    console.print(owed)

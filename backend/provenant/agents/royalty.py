"""Earnings flow back: route an action's declared royalty to the models beneath it, and check it.

The amounts are the `model` rows of the action's owed table (agents/ancestry.py: the royalty pool
floor(value_earned * royalty_ppm / 1e6), summed over the action's sub-DAG, split by the models'
shares, floored), computed from the verified bundle, never from a caller's numbers. They are sent
in one `RoyaltyRouter.routeRoyalty(agentId, modelIds, amounts, actionHash)` transaction by a key
the AgentRegistry knows for the agent (owner, operator or agent wallet); each model's amount
becomes a charge in its escrowed fees and is settled like call fees (split by the epoch's
aggregate attribution). `routing_problems` compares the on-chain RoyaltyRouted events of an
action with its owed rows, for `verify action`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from provenant.agents.ancestry import Ancestry
from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts


class RoyaltyError(ValueError):
    """A royalty that cannot be routed (no router, nothing owed, unverifiable action)."""


@dataclass(frozen=True)
class RoutedRoyalty:
    agent_id: int
    action_hash: str
    amounts: dict[int, int]  # model id -> wei
    seqs: dict[int, int]  # model id -> the charge sequence number it was given
    tx: TxResult

    @property
    def total(self) -> int:
        return sum(self.amounts.values())


def model_amounts(ancestry: Ancestry) -> dict[int, int]:
    """Model id -> wei owed to it from the action's royalty pool (positive rows only)."""
    return {int(r.key): r.amount_wei for r in ancestry.owed if r.role == "model" and r.amount_wei > 0}


def _router(contracts: Contracts) -> Any:
    if contracts.royalties is None:
        raise RoyaltyError("this deployment has no RoyaltyRouter: redeploy to route royalties")
    return contracts.royalties


def route_royalty(client: ChainClient, contracts: Contracts, payer: LocalAccount, bundle: Any) -> RoutedRoyalty:
    """Verify the action bundle, then route its owed model amounts from `payer`'s tokens."""
    from provenant.agents.verify import verify_action

    verdict = verify_action(client, contracts, None, bundle)  # type: ignore[arg-type]
    if not verdict.ok or verdict.ancestry is None:
        raise RoyaltyError("cannot route the royalty of an action that does not verify: " + "; ".join(verdict.reasons))
    head = verdict.actions[0]
    amounts = model_amounts(verdict.ancestry)
    if not amounts:
        raise RoyaltyError(f"action {head.hash} owes no royalty (value earned {head.value_earned}, "
                           f"royalty {head.royalty_ppm} ppm)")
    router = _router(contracts)
    action_hash = bytes.fromhex(head.hash.removeprefix("0x"))
    if not client.call(router.functions.isActor(head.agent_id, payer.address)):
        raise RoyaltyError(f"{payer.address} is not the owner, operator or wallet of agent {head.agent_id} "
                           f"in the AgentRegistry")
    if client.call(router.functions.routed(head.agent_id, action_hash)):
        raise RoyaltyError(f"the royalty of action {head.hash} was already routed")
    total = sum(amounts.values())
    allowance = int(client.call(contracts.token.functions.allowance(payer.address, router.address)))
    if allowance < total:
        client.transact(payer, contracts.token.functions.approve(router.address, total))
    ids = sorted(amounts)
    tx = client.transact(payer, router.functions.routeRoyalty(
        head.agent_id, ids, [amounts[m] for m in ids], action_hash))
    seqs = {m: s for m, (_, s) in routed_events(client, contracts, head.agent_id, head.hash, tx.block_number).items()}
    return RoutedRoyalty(head.agent_id, head.hash, amounts, seqs, tx)


def routed_events(client: ChainClient, contracts: Contracts, agent_id: int, action_hash: str,
                  from_block: int | None = None) -> dict[int, tuple[int, int]]:
    """Model id -> (amount, seq) routed on chain for one action of one agent."""
    router = _router(contracts)
    start = contracts.manifest.block_number if from_block is None else from_block
    want = bytes.fromhex(action_hash.removeprefix("0x"))
    out: dict[int, tuple[int, int]] = {}
    for log in router.events.RoyaltyRouted.get_logs(from_block=start, argument_filters={"agentId": agent_id}):
        a = log["args"]
        if bytes(a["actionHash"]) == want:
            out[int(a["modelId"])] = (int(a["amount"]), int(a["seq"]))
    return out


def routing_problems(client: ChainClient, contracts: Contracts, agent_id: int, action_hash: str,
                     ancestry: Ancestry) -> tuple[list[str], str]:
    """(problems, a check line): the action's RoyaltyRouted events against its owed model rows.
    Nothing routed yet is not a problem (routing is the agent's own transaction, made later)."""
    if contracts.royalties is None:
        return [], "no RoyaltyRouter in this deployment: routing not checked"
    owed = model_amounts(ancestry)
    routed = {m: amount for m, (amount, _) in routed_events(client, contracts, agent_id, action_hash).items()}
    if not routed:
        return [], f"royalty of {sum(owed.values())} wei owed to models {sorted(owed)} is not routed on chain yet"
    problems = [f"model {m}: routed {routed.get(m, 0)} wei on chain, owed {owed.get(m, 0)} wei"
                for m in sorted(set(owed) | set(routed)) if routed.get(m, 0) != owed.get(m, 0)]
    return problems, f"RoyaltyRouted events route exactly the owed {sum(owed.values())} wei to models {sorted(owed)}"

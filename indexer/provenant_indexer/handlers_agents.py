"""Handlers of the agent and payment-path events: AgentRegistry (ERC-8004, ERC-721), X402Vaults,
RoyaltyRouter. Same folding as handlers.py: history rows appended, the `agents` cache columns
(owner, operator, URI) kept at their latest value within the batch.

ERC-721 Approval/ApprovalForAll and ERC-4906 MetadataUpdate have no table of their own: they
change nothing an agent query needs, and are mirrored in the raw `events` table like every log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from provenant_indexer import schema as s
from provenant_indexer.columns import ROWS

if TYPE_CHECKING:
    from provenant_indexer.handlers import Changes, Loc

ZERO_ADDRESS = "0x" + "0" * 40


def registration_cid(uri: str) -> str | None:
    """The CID an `ipfs://CID[/path]` registration URI names (None for other schemes)."""
    if not uri.startswith("ipfs://"):
        return None
    return uri[len("ipfs://"):].split("/", 1)[0] or None


def _agent_cache(ch: "Changes", agent_id: int) -> dict[str, Any]:
    """The row to update: the agent's new row when it was registered in this batch."""
    return ch.new_agents.get(agent_id) or ch.agent_updates.setdefault(agent_id, {})


def _registered(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    agent_id, uri, owner = a["agentId"], a["agentURI"], a["owner"]
    ch.new_agents[agent_id] = {
        "agent_id": agent_id, "registered_by": owner, "owner": owner, "operator": ZERO_ADDRESS, "agent_uri": uri,
        "registration_cid": registration_cid(uri), "block_number": loc.block_number, "log_index": loc.log_index,
        "tx_hash": loc.tx_hash, "updated_block": loc.block_number,
    }
    ch.add(s.agent_uris, ROWS[s.agent_uris](
        loc, agent_id=agent_id, uri=uri, cid=registration_cid(uri), updated_by=owner, tx_hash=loc.tx_hash))


def _uri_updated(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    agent_id, uri = a["agentId"], a["newURI"]
    ch.add(s.agent_uris, ROWS[s.agent_uris](
        loc, agent_id=agent_id, uri=uri, cid=registration_cid(uri), updated_by=a["updatedBy"], tx_hash=loc.tx_hash))
    _agent_cache(ch, agent_id).update(agent_uri=uri, registration_cid=registration_cid(uri),
                                      updated_block=loc.block_number)


def _metadata_set(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    ch.add(s.agent_metadata, ROWS[s.agent_metadata](
        loc, agent_id=a["agentId"], key=a["metadataKey"], value=a["metadataValue"], tx_hash=loc.tx_hash))


def _operator_set(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    agent_id = a["agentId"]
    ch.add(s.agent_operators, ROWS[s.agent_operators](
        loc, agent_id=agent_id, previous_operator=a["previousOperator"], new_operator=a["newOperator"],
        tx_hash=loc.tx_hash))
    _agent_cache(ch, agent_id).update(operator=a["newOperator"], updated_block=loc.block_number)


def _transfer(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    agent_id = a["tokenId"]
    ch.add(s.agent_transfers, ROWS[s.agent_transfers](
        loc, agent_id=agent_id, from_address=a["from"], to_address=a["to"], tx_hash=loc.tx_hash))
    if a["from"] != ZERO_ADDRESS:
        # A mint precedes its Registered log (which writes the owner); later transfers move it.
        _agent_cache(ch, agent_id).update(owner=a["to"], updated_block=loc.block_number)


def _vault_created(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    ch.add(s.x402_vaults, ROWS[s.x402_vaults](loc, model_id=a["modelId"], vault=a["vault"], tx_hash=loc.tx_hash))


def _x402_charged(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    ch.add(s.x402_charges, ROWS[s.x402_charges](
        loc, model_id=a["modelId"], payer=a["payer"], seq=a["seq"], amount=a["amount"], nonce=a["nonce"],
        tx_hash=loc.tx_hash))


def _vault_swept(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    ch.add(s.vault_sweeps, ROWS[s.vault_sweeps](
        loc, model_id=a["modelId"], vault=a["vault"], seq=a["seq"], amount=a["amount"], tx_hash=loc.tx_hash))


def _royalty_routed(ch: "Changes", loc: "Loc", a: dict[str, Any]) -> None:
    ch.add(s.royalty_routings, ROWS[s.royalty_routings](
        loc, agent_id=a["agentId"], model_id=a["modelId"], seq=a["seq"], amount=a["amount"],
        action_hash=a["actionHash"], tx_hash=loc.tx_hash))


AGENT_HANDLERS: dict[tuple[str, str], Callable[["Changes", "Loc", dict[str, Any]], None]] = {
    ("AgentRegistry", "Registered"): _registered,
    ("AgentRegistry", "URIUpdated"): _uri_updated,
    ("AgentRegistry", "MetadataSet"): _metadata_set,
    ("AgentRegistry", "OperatorSet"): _operator_set,
    ("AgentRegistry", "Transfer"): _transfer,
    ("X402Vaults", "VaultCreated"): _vault_created,
    ("X402Vaults", "X402Charged"): _x402_charged,
    ("X402Vaults", "VaultSwept"): _vault_swept,
    ("RoyaltyRouter", "RoyaltyRouted"): _royalty_routed,
}

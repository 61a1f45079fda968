"""The agent registry client: ERC-8004 registration files, registration, and operator lookups.

The registration file (ERC-8004 "registration-v1" JSON: name, description, services, plus the
operator address) lives in the content store; the token's URI is `ipfs://<cid>`. The operator
that verifiers trust is the one the contract records, looked up *at the receipt's time* from the
`OperatorSet` events, so rotating a key neither invalidates honest old receipts nor lets a key
sign for a period in which it was not the operator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.events import first_event
from provenant.store.blockstore import ContentStore

REGISTRATION_TYPE = "https://eips.ethereum.org/EIPS/eip-8004#registration-v1"
ZERO = "0x" + "00" * 20


class AgentRegistryError(RuntimeError):
    """The agent registry is missing, or an agent or its registration file is unusable."""


@dataclass(frozen=True)
class RegistrationFile:
    """What an agent publishes about itself (ERC-8004 registration-v1, plus Provenant's operator)."""

    name: str
    description: str
    operator: str
    services: tuple[dict[str, str], ...] = ()  # [{"name": "MCP" | "web" | ..., "endpoint": url}]
    registrations: tuple[dict[str, Any], ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {"type": REGISTRATION_TYPE, "name": self.name, "description": self.description,
                "services": [dict(s) for s in self.services], "active": True, "x402Support": False,
                "registrations": [dict(r) for r in self.registrations],
                "provenant": {"operator": Web3.to_checksum_address(self.operator)}}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RegistrationFile":
        try:
            raw = json.loads(data)
            if raw.get("type") != REGISTRATION_TYPE:
                raise ValueError(f"type is {raw.get('type')!r}")
            return cls(name=str(raw["name"]), description=str(raw.get("description", "")),
                       operator=Web3.to_checksum_address(raw["provenant"]["operator"]),
                       services=tuple(raw.get("services", [])), registrations=tuple(raw.get("registrations", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise AgentRegistryError(f"not an ERC-8004 registration file: {exc}") from None


@dataclass(frozen=True)
class AgentInfo:
    agent_id: int
    owner: str
    operator: str
    agent_uri: str


def registry_of(contracts: Contracts) -> Contract:
    if contracts.agents is None:
        raise AgentRegistryError("this deployment has no AgentRegistry (deployed before agents existed): "
                                 "redeploy on a fresh chain")
    return contracts.agents


def register_agent(client: ChainClient, contracts: Contracts, store: ContentStore, owner: LocalAccount,
                   registration: RegistrationFile) -> AgentInfo:
    """Store the registration file, then mint the agent with its URI and operator in one transaction."""
    registry = registry_of(contracts)
    cid = store.put(registration.to_bytes())
    uri = f"ipfs://{cid}"
    result = client.transact(owner, registry.functions.registerAgent(uri, registration.operator))
    agent_id = int(first_event(registry, "Registered", result.logs)["agentId"])
    return AgentInfo(agent_id=agent_id, owner=owner.address, operator=registration.operator, agent_uri=uri)


def agent_info(client: ChainClient, contracts: Contracts, agent_id: int) -> AgentInfo:
    registry = registry_of(contracts)
    if not client.call(registry.functions.exists(agent_id)):
        raise AgentRegistryError(f"agent {agent_id} is not registered")
    return AgentInfo(agent_id=agent_id, owner=client.call(registry.functions.ownerOf(agent_id)),
                     operator=client.call(registry.functions.operatorOf(agent_id)),
                     agent_uri=client.call(registry.functions.tokenURI(agent_id)))


def load_registration(store: ContentStore, info: AgentInfo) -> RegistrationFile:
    if not info.agent_uri.startswith("ipfs://"):
        raise AgentRegistryError(f"agent {info.agent_id}'s URI {info.agent_uri!r} is not an ipfs:// URI")
    return RegistrationFile.from_bytes(store.get(info.agent_uri.removeprefix("ipfs://")))


class OperatorHistory:
    """Who was each agent's operator when, from the registry's OperatorSet events (cached)."""

    def __init__(self, client: ChainClient, contracts: Contracts) -> None:
        self.client = client
        self.registry = registry_of(contracts)
        self.from_block = contracts.manifest.block_number
        self._spans: dict[int, list[tuple[int, str]]] = {}  # agent -> [(since timestamp, operator)]
        self._block_times: dict[int, int] = {}

    def exists(self, agent_id: int) -> bool:
        return bool(self.client.call(self.registry.functions.exists(agent_id)))

    def operator_at(self, agent_id: int, timestamp: int) -> str:
        """The operator recorded for `agent_id` at `timestamp` (the zero address when none)."""
        spans = self._spans.get(agent_id)
        if spans is None:
            logs = self.registry.events.OperatorSet.get_logs(from_block=self.from_block,
                                                             argument_filters={"agentId": agent_id})
            spans = [(self._time_of(int(log["blockNumber"])), str(log["args"]["newOperator"])) for log in logs]
            self._spans[agent_id] = spans
        current = ZERO
        for since, operator in spans:
            if since > timestamp:
                break
            current = operator
        return current

    def _time_of(self, block: int) -> int:
        if block not in self._block_times:
            self._block_times[block] = int(self.client.w3.eth.get_block(block)["timestamp"])
        return self._block_times[block]

"""Whether a key may attest: ATTRIBUTOR_ROLE in AttributionSettlement. Kept free of the model
stack so that a process with a wrong key refuses in a second, before loading torch."""

from __future__ import annotations

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.settlement.rpc import retrying


class AttributorNotRegistered(RuntimeError):
    pass


def is_registered(client: ChainClient, contracts: Contracts, address: str) -> bool:
    settlement = contracts.settlement.functions
    role = retrying("reading ATTRIBUTOR_ROLE", client.rpc_url, lambda: client.call(settlement.ATTRIBUTOR_ROLE()))
    return bool(retrying("checking ATTRIBUTOR_ROLE", client.rpc_url,
                         lambda: client.call(settlement.hasRole(role, address))))


def require_registered(client: ChainClient, contracts: Contracts, address: str) -> None:
    if not is_registered(client, contracts, address):
        raise AttributorNotRegistered(
            f"attributor {address} is not registered in AttributionSettlement {contracts.settlement.address}: "
            f"an admin must grant it ATTRIBUTOR_ROLE"
        )

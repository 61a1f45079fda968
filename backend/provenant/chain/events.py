"""Reading a contract's events out of a transaction's logs."""

from __future__ import annotations

from typing import Any

from web3 import Web3
from web3.contract import Contract


def events_in(contract: Contract, event_name: str, logs: list[Any]) -> list[dict[str, Any]]:
    """The decoded `event_name` events that `contract` emitted among `logs`, in order."""
    event = getattr(contract.events, event_name)()
    address = Web3.to_checksum_address(contract.address)
    topic = bytes(Web3.to_bytes(hexstr=event.topic))
    decoded = []
    for log in logs:
        if Web3.to_checksum_address(log["address"]) != address:
            continue
        if not log["topics"] or bytes(log["topics"][0]) != topic:
            continue
        decoded.append(dict(event.process_log(log)["args"]))
    return decoded


def first_event(contract: Contract, event_name: str, logs: list[Any]) -> dict[str, Any]:
    found = events_in(contract, event_name, logs)
    if not found:
        raise LookupError(f"transaction emitted no {event_name}")
    return found[0]

"""Typed records of the contracts' views, bound by name to the compiled ABIs.

The ABIs compiled from contracts/src are the one source of truth. Each record type names the
contract view whose output it decodes; `decode` maps the ABI's output components to the
dataclass fields *by name* (camelCase -> snake_case), and `check_bindings` — run by the tests
and whenever contracts are attached — fails loudly when a Solidity struct and its Python
record drift apart, instead of silently reading field 7 as field 8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from provenant.chain.compile import Artifact

T = TypeVar("T")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


class BindingDrift(RuntimeError):
    """A record type no longer matches the compiled ABI."""


@dataclass(frozen=True)
class DatanetView:
    SOURCE: ClassVar[tuple[str, str]] = ("DatanetRegistry", "getDatanet")
    owner: str
    treasury: str
    stake: int
    version: int
    contribution_count: int
    allowlisted: bool
    slash_on_reject: bool
    metadata_cid: str
    license: str


@dataclass(frozen=True)
class ContributionView:
    SOURCE: ClassVar[tuple[str, str]] = ("DatanetRegistry", "getContribution")
    datanet_id: int
    contributor: str
    content_hash: str
    size: int
    row_count: int
    status: int
    stake: int
    cid: str


@dataclass(frozen=True)
class ModelView:
    SOURCE: ClassVar[tuple[str, str]] = ("ModelRegistry", "getModel")
    owner: str
    server: str
    parent_id: int
    price_per_call: int
    lineage_root: str
    config_hash: str
    adapter_hash: str
    contribution_ids_hash: str
    name: str
    base_model: str
    adapter_cid: str
    manifest_cid: str


@dataclass(frozen=True)
class EpochView:
    SOURCE: ClassVar[tuple[str, str]] = ("AttributionSettlement", "epochs")
    root_prefix: str  # the payout root's first 20 bytes (the full root is in EpochSettled)
    unclaimed: int  # what is left to claim of the epoch's curators' and contributors' totals


@dataclass(frozen=True)
class SplitView:
    SOURCE: ClassVar[tuple[str, str]] = ("AttributionSettlement", "split")
    protocol_bps: int
    owner_bps: int
    curators_bps: int
    contributors_bps: int


RECORDS: tuple[type, ...] = (DatanetView, ContributionView, ModelView, EpochView, SplitView)


def _outputs(artifacts: dict[str, Artifact], contract: str, function: str) -> list[dict[str, Any]]:
    matches = [i for i in artifacts[contract].abi if i.get("type") == "function" and i.get("name") == function]
    if len(matches) != 1:
        raise BindingDrift(f"{contract}.{function} is not a unique function of the compiled ABI")
    outputs = matches[0]["outputs"]
    if len(outputs) == 1 and outputs[0]["type"] == "tuple":
        return list(outputs[0]["components"])
    return list(outputs)


def check_bindings(artifacts: dict[str, Artifact]) -> None:
    """Raise BindingDrift if any record's fields differ from its ABI output, name by name."""
    for record in RECORDS:
        contract, function = record.SOURCE  # type: ignore[attr-defined]
        abi_names = [_snake(o["name"]) for o in _outputs(artifacts, contract, function)]
        py_names = [f.name for f in fields(record)]
        if abi_names != py_names:
            raise BindingDrift(f"{record.__name__} fields {py_names} != {contract}.{function} outputs {abi_names}")


def decode(record: type[T], values: Any) -> T:
    """Build a record from a view's output tuple; fixed-size bytes fields become 0x-hex strings."""
    converted = [_hex(v) if isinstance(v, (bytes, bytearray)) else v for v in values]
    return record(*converted)

"""The typed records match the compiled ABIs name by name, and decode real chain output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from provenant.chain import bindings
from provenant.chain.bindings import BindingDrift, SplitView, check_bindings, decode
from provenant.chain.client import ChainClient
from provenant.chain.compile import compile_contracts
from provenant.chain.deploy import Contracts


def test_every_record_matches_its_abi() -> None:
    check_bindings(compile_contracts())


def test_drift_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass(frozen=True)
    class Reordered:
        SOURCE: ClassVar[tuple[str, str]] = ("AttributionSettlement", "split")
        owner_bps: int
        protocol_bps: int
        curators_bps: int
        contributors_bps: int

    monkeypatch.setattr(bindings, "RECORDS", (Reordered,))
    with pytest.raises(BindingDrift, match="Reordered"):
        check_bindings(compile_contracts())


def test_decode_reads_live_chain_output(deployed: Contracts, chain: ChainClient) -> None:
    split = decode(SplitView, chain.call(deployed.settlement.functions.split()))
    assert (split.protocol_bps, split.owner_bps, split.curators_bps, split.contributors_bps) == (500, 1500, 1000, 7000)

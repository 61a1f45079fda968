"""Datanets on a real anvil: contributions, curation, stakes, and bad input that changes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.errors import TransactionReverted
from provenant.chain.keys import dev_accounts
from provenant.datanets.service import DatanetService, RejectReason, Status
from provenant.datanets.validation import ContributionError
from provenant.demo.thread import samples_dir
from provenant.store import open_store

CURATOR, ALICE, MALLORY, TREASURY = dev_accounts()[2], dev_accounts()[5], dev_accounts()[6], dev_accounts()[7]
METADATA = {"name": "support-tickets", "license": "CC-BY-4.0", "task": "classification",
            "labels": ["billing", "technical", "shipping", "account"], "max_rows_per_file": 1000,
            "max_bytes_per_file": 65536}
STAKE = 5 * 10**18


@pytest.fixture()
def service(deployed: Contracts, chain: ChainClient, tmp_path: Path) -> DatanetService:
    for account in (ALICE, MALLORY):
        chain.transact(dev_accounts()[0], deployed.token.functions.transfer(account.address, 100 * 10**18))
    return DatanetService(chain, deployed, open_store(str(tmp_path / "store")))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("bad", ["bad_json.jsonl", "empty.jsonl", "missing_label.jsonl", "not_utf8.jsonl",
                                 "unknown_label.jsonl"])
def test_malformed_file_is_refused_and_changes_nothing(service: DatanetService, chain: ChainClient, bad: str) -> None:
    datanet = service.create(CURATOR, METADATA)
    store_root = Path(service.store.root)  # type: ignore[attr-defined]
    files_before, block_before = _files(store_root), chain.w3.eth.block_number
    with pytest.raises(ContributionError) as info:
        service.contribute(ALICE, datanet, samples_dir() / "bad" / bad)
    assert bad in str(info.value) and "\n" not in str(info.value)
    assert _files(store_root) == files_before
    assert chain.w3.eth.block_number == block_before


def test_oversized_file_is_refused_before_reading(service: DatanetService, chain: ChainClient, tmp_path: Path) -> None:
    datanet = service.create(CURATOR, METADATA)
    big = tmp_path / "big.jsonl"
    line = b'{"text": "my invoice is wrong", "label": "billing"}\n'
    big.write_bytes(line * (70_000 // len(line) + 1))
    block_before = chain.w3.eth.block_number
    with pytest.raises(ContributionError, match="65536"):
        service.contribute(ALICE, datanet, big)
    assert chain.w3.eth.block_number == block_before


def test_contribute_approve_reject_with_stakes(service: DatanetService, deployed: Contracts, chain: ChainClient) -> None:
    datanet = service.create(CURATOR, METADATA, stake=STAKE, slash_on_reject=True, treasury=TREASURY.address)
    token = deployed.token.functions
    alice_before = chain.call(token.balanceOf(ALICE.address))
    good = service.contribute(ALICE, datanet, samples_dir() / "alice_1.jsonl")
    spam = service.contribute(MALLORY, datanet, samples_dir() / "mallory_spam.jsonl")
    assert good.status == Status.PENDING and good.row_count == 120 and good.cid.startswith("bafk")
    assert service.store.get(good.cid) == (samples_dir() / "alice_1.jsonl").read_bytes()
    assert chain.call(token.balanceOf(deployed.datanets.address)) == 2 * STAKE

    with pytest.raises(TransactionReverted, match="NotCurator"):
        service.approve(ALICE, datanet, [good.contribution_id])
    service.approve(CURATOR, datanet, [good.contribution_id])
    treasury_before = chain.call(token.balanceOf(TREASURY.address))
    service.reject(CURATOR, spam.contribution_id, RejectReason.SPAM)

    assert service.contribution(good.contribution_id).status == Status.APPROVED
    assert service.contribution(spam.contribution_id).status == Status.REJECTED
    assert chain.call(token.balanceOf(ALICE.address)) == alice_before  # stake returned on approval
    assert chain.call(token.balanceOf(TREASURY.address)) == treasury_before + STAKE  # slashed
    assert chain.call(token.balanceOf(deployed.datanets.address)) == 0
    assert chain.call(deployed.datanets.functions.approvedCount(ALICE.address)) == 1
    assert chain.call(deployed.datanets.functions.rejectedCount(MALLORY.address)) == 1
    with pytest.raises(TransactionReverted, match="NotPending"):
        service.approve(CURATOR, datanet, [spam.contribution_id])


def test_rows_read_back_are_checked_against_the_chain(service: DatanetService) -> None:
    datanet = service.create(CURATOR, METADATA)
    record = service.contribute(ALICE, datanet, samples_dir() / "alice_2.jsonl")
    assert len(service.load_rows(record)) == 100
    path = service.store._path(record.cid)  # type: ignore[attr-defined] - tampering on purpose
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes().replace(b"a", b"b", 1))
    with pytest.raises(Exception, match=record.cid):
        service.load_rows(record)

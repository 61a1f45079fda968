"""The whole provenance thread on a real anvil, then rechecked from public data and tampered."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from provenant.chain.devnet import Devnet
from provenant.chain.keys import dev_accounts
from provenant.demo.thread import DemoSettings, ThreadResult, run_demo
from provenant.factory.train import LoraSettings
from provenant.serving.models import ModelRecord
from provenant.serving.receipts import Receipt, check_receipt
from provenant.verify import verify_model

pytestmark = pytest.mark.slow


OUTPUT = io.StringIO()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("thread")


@pytest.fixture(scope="module")
def thread(anvil: Devnet, workdir: Path) -> ThreadResult:
    return run_demo(DemoSettings(calls=20, lora=LoraSettings(epochs=1)), rpc_url=anvil.rpc_url, workdir=workdir,
                    console=Console(file=OUTPUT, width=120))


def test_every_wei_adds_up(thread: ThreadResult) -> None:
    ledger = thread.ledger
    assert ledger.paid_in == ledger.paid_out + ledger.left_in_escrow
    assert ledger.left_in_escrow == ledger.held_by_contracts
    assert ledger.paid_out > 0


def test_rejected_contribution_is_not_in_the_lineage_and_is_not_paid(thread: ThreadResult) -> None:
    record = ModelRecord.fetch(thread.client, thread.contracts, thread.model_id)
    from provenant.factory.lineage import Manifest

    manifest = Manifest.from_bytes(thread.store.get(record.manifest_cid))  # type: ignore[attr-defined]
    used = {e.contribution_id for e in manifest.contributions}
    assert thread.rejected and not (used & set(thread.rejected))
    rejected_contributors = {e.contributor for e in manifest.contributions if e.contribution_id in thread.rejected}
    assert not rejected_contributors


def test_better_datanet_carries_more_weight(thread: ThreadResult) -> None:
    names = {v: k for k, v in thread.ledger.datanet_names.items()}
    shares = thread.ledger.datanet_share
    assert shares[names["support-tickets"]] > shares[names["forum-posts"]]
    assert shares.get(names["product-faq"], 0.0) == 0.0


def test_model_verifies_from_public_data(thread: ThreadResult) -> None:
    verdict = verify_model(thread.client, thread.contracts, thread.store, thread.model_id)  # type: ignore[arg-type]
    assert verdict.ok, verdict.reasons


def test_receipts_verify_and_a_tampered_receipt_does_not(thread: ThreadResult) -> None:
    record = ModelRecord.fetch(thread.client, thread.contracts, thread.model_id)
    assert len(thread.receipts) == 20
    for receipt in thread.receipts:
        assert check_receipt(receipt, record.server, record.lineage_root, record.adapter_hash) == []
    forged = Receipt.from_json({**thread.receipts[0].to_json(), "fee": "1"})
    assert check_receipt(forged, record.server, record.lineage_root, record.adapter_hash)


def test_tampered_contribution_fails_verification(thread: ThreadResult, tmp_path: Path) -> None:
    """Change one byte of a stored contribution: the store refuses it and verify names the cause."""
    record = ModelRecord.fetch(thread.client, thread.contracts, thread.model_id)
    from provenant.factory.lineage import Manifest

    store = thread.store
    manifest = Manifest.from_bytes(store.get(record.manifest_cid))  # type: ignore[attr-defined]
    target = manifest.contributions[0]
    block = store._path(target.cid)  # type: ignore[attr-defined] - the test tampers with the disk on purpose
    original = block.read_bytes()
    try:
        block.write_bytes(original.replace(b"e", b"E", 1))
        verdict = verify_model(thread.client, thread.contracts, store, thread.model_id)  # type: ignore[arg-type]
        assert not verdict.ok
        assert any(f"contribution {target.contribution_id}" in r for r in verdict.reasons), verdict.reasons
    finally:
        block.write_bytes(original)


def test_results_are_public_and_match_the_chain(thread: ThreadResult) -> None:
    logs = thread.contracts.settlement.events.EpochSettled.get_logs(from_block=thread.contracts.manifest.block_number)
    assert len(logs) == 1
    results = json.loads(thread.store.get(logs[0]["args"]["resultsCid"]))  # type: ignore[attr-defined]
    assert results["payout_root"] == "0x" + bytes(logs[0]["args"]["payoutRoot"]).hex()
    assert len(results["calls"]) == 20


def test_no_key_in_use_appears_in_output_or_files(thread: ThreadResult, workdir: Path) -> None:
    """Every private key the thread signed with is absent from its output and from every file it wrote."""
    keys = {account.key.hex().removeprefix("0x").lower() for account in dev_accounts(20)}
    printed = OUTPUT.getvalue().lower()
    assert "support-router" in OUTPUT.getvalue() or "settled" in printed  # the output was captured
    for key in keys:
        assert key not in printed
    written = [p for p in workdir.rglob("*") if p.is_file()]
    assert written
    for path in written:
        data = path.read_bytes().lower()
        for key in keys:
            assert key.encode() not in data, f"a private key appears in {path}"

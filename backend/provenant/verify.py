"""`verify`: recheck a model's lineage from public data (chain + content store), yes/no with reasons."""

from __future__ import annotations

from dataclasses import dataclass, field

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.datanets.service import DatanetService, Status
from provenant.datanets.validation import rows_hash
from provenant.factory.lineage import (TRAINED_EXTERNALLY, TRAINED_HERE, Manifest, config_hash, lineage_root,
                                       sha256_0x)
from provenant.serving.models import ModelRecord
from provenant.store.blockstore import ContentStore


@dataclass
class Verdict:
    subject: str
    reasons: list[str] = field(default_factory=list)  # problems; empty means verified
    checks: list[str] = field(default_factory=list)  # what was checked and held
    notes: list[str] = field(default_factory=list)  # what could not be checked, said plainly; not a failure

    @property
    def ok(self) -> bool:
        return not self.reasons


def verify_model(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int) -> Verdict:
    verdict = Verdict(subject=f"model {model_id}")
    record = ModelRecord.fetch(client, contracts, model_id)
    try:
        manifest = Manifest.from_bytes(store.get(record.manifest_cid))
    except Exception as exc:  # noqa: BLE001 - any failure to read the manifest is the verdict
        verdict.reasons.append(f"manifest {record.manifest_cid} unreadable: {exc}")
        return verdict
    verdict.checks.append(f"manifest {record.manifest_cid} matches its CID")
    _check_parent(client, contracts, record, manifest, verdict)
    if manifest.trained_by == TRAINED_EXTERNALLY:
        verdict.notes.append(EXTERNAL_NOTE)
    elif manifest.trained_by != TRAINED_HERE:
        verdict.reasons.append(f"manifest says the adapter was trained by {manifest.trained_by!r}, which is unknown")

    if config_hash(manifest.training_config) != record.config_hash or manifest.config_hash != record.config_hash:
        verdict.reasons.append("training configuration hash differs from the registered one")
    else:
        verdict.checks.append("training configuration hash matches")

    try:
        adapter = store.get(record.adapter_cid)
        if sha256_0x(adapter) != record.adapter_hash:
            verdict.reasons.append("adapter bytes do not match the registered adapter hash")
        else:
            verdict.checks.append(f"adapter {record.adapter_cid} matches the registered hash")
    except Exception as exc:  # noqa: BLE001
        verdict.reasons.append(f"adapter {record.adapter_cid} unreadable: {exc}")

    datanets = DatanetService(client, contracts, store)
    registered_ids = _registered_contribution_ids(contracts, model_id)
    if registered_ids != [e.contribution_id for e in manifest.contributions]:
        verdict.reasons.append("manifest contributions differ from the ids registered on chain")
    for entry in manifest.contributions:
        on_chain = datanets.contribution(entry.contribution_id)
        if on_chain.status != Status.APPROVED:
            verdict.reasons.append(f"contribution {entry.contribution_id} is {on_chain.status.name.lower()}, not approved")
        if (on_chain.content_hash, on_chain.cid, on_chain.contributor) != (entry.content_hash, entry.cid,
                                                                           entry.contributor):
            verdict.reasons.append(f"contribution {entry.contribution_id}: manifest entry differs from the chain")
            continue
        try:
            rows = datanets.load_rows(on_chain)
        except Exception as exc:  # noqa: BLE001
            verdict.reasons.append(f"contribution {entry.contribution_id}: content unreadable: {exc}")
            continue
        used = rows if entry.row_indices is None else tuple(rows[i] for i in entry.row_indices)
        if rows_hash(used) != entry.rows_hash:
            verdict.reasons.append(f"contribution {entry.contribution_id}: rows hash differs")
    from provenant.factory.recheck import selection_problems  # no torch: recheck reads chain and store only

    problems = selection_problems(client, contracts, store, manifest)
    verdict.reasons.extend(problems)
    if not problems and manifest.selection.get("cid"):
        verdict.checks.append(f"selection {manifest.selection['cid']}: trained and held-out rows follow from "
                              "its filters and seed")
    if lineage_root(manifest.contributions) != record.lineage_root:
        verdict.reasons.append("lineage root recomputed from the manifest differs from the registered root")
    else:
        verdict.checks.append(
            f"lineage root {record.lineage_root} recomputed over {len(manifest.contributions)} contributions"
        )
    return verdict


EXTERNAL_NOTE = ("adapter trained outside the Model Factory: the contributions it was trained on are its builder's "
                 "declaration; their Merkle root, approvals and the adapter's hash are checked, the training itself "
                 "was not reproduced here")


def _check_parent(client: ChainClient, contracts: Contracts, record: ModelRecord, manifest: Manifest,
                  verdict: Verdict) -> None:
    """A new version names its parent in the manifest and on chain: the two agree, and the parent is
    a registered model of the same owner, registered before it."""
    if manifest.parent_id != record.parent_id:
        verdict.reasons.append(f"manifest names parent model {manifest.parent_id or 'none'}, the chain "
                               f"{record.parent_id or 'none'}")
        return
    if record.parent_id == 0:
        verdict.checks.append("no parent model, in the manifest and on chain")
        return
    if not client.call(contracts.models.functions.exists(record.parent_id)) or record.parent_id >= record.model_id:
        verdict.reasons.append(f"parent model {record.parent_id} is not a model registered before this one")
        return
    parent = ModelRecord.fetch(client, contracts, record.parent_id)
    if parent.owner.lower() != record.owner.lower():
        verdict.reasons.append(f"parent model {record.parent_id} belongs to {parent.owner}, not to this model's owner")
        return
    verdict.checks.append(f"parent model {record.parent_id} ({parent.name}) exists, has the same owner, and is "
                          "named by the manifest and the chain alike")


def _registered_contribution_ids(contracts: Contracts, model_id: int) -> list[int]:
    logs = contracts.models.events.ModelLineage.get_logs(
        from_block=contracts.manifest.block_number, argument_filters={"modelId": model_id}
    )
    return [int(i) for i in logs[0]["args"]["contributionIds"]] if logs else []


# -- epochs ----------------------------------------------------------------------------------
def verify_epoch(client: ChainClient, contracts: Contracts, store: ContentStore, model_id: int, epoch: int
                 ) -> Verdict:
    """Recompute a settled epoch from public data (chain, content store, its published results):
    the calls against the escrow's charges, every integer by the public rule, the bytes of the
    results, and the root and totals the contract recorded."""
    from provenant.settlement.context import BadEpochRange, ChainReader
    from provenant.settlement.results import calls_of, first_difference, parse, render
    from provenant.store.blockstore import ContentError

    verdict = Verdict(subject=f"model {model_id} epoch {epoch}")
    reader = ChainReader(client, contracts, store)
    events = reader.settled_events(model_id)
    event = events.get(epoch)
    if event is None or "resultsCid" not in event:
        verdict.reasons.append(f"model {model_id} has no settled epoch {epoch} on chain")
        return verdict
    try:
        data = store.get(event["resultsCid"])
        document = parse(data)
        calls = calls_of(document)
        ctx = reader.settled_context(model_id, epoch)
    except (ValueError, KeyError, TypeError, LookupError, BadEpochRange, ContentError) as exc:
        verdict.reasons.append(f"results {event['resultsCid']} cannot be rechecked: {exc}")
        return verdict
    verdict.checks.append(f"results {event['resultsCid']} match their CID ({len(calls)} calls)")

    verdict.reasons.extend(_membership_problems(ctx, calls))
    earlier = _earlier_call_ids(store, events, epoch)
    repeated = [c.call_id for c in calls if c.call_id in earlier]
    if repeated:
        verdict.reasons.append(f"call {repeated[0]} was already settled in epoch {earlier[repeated[0]]}")
    if not verdict.reasons:
        verdict.checks.append(f"every call is paid by one of the {len(ctx.charges)} charges in "
                              f"({ctx.from_seq}, {ctx.upto_seq}] and settled in no earlier epoch")
    try:
        rendered = render(ctx, calls)
    except ValueError as exc:
        verdict.reasons.append(str(exc))
        return verdict
    if rendered.data != data:
        diff = first_difference(document, rendered.document)
        verdict.reasons.append("published results differ from their recomputation: "
                               + (diff.describe() if diff else "bytes differ"))
    else:
        verdict.checks.append("results recomputed byte for byte from the published scores and the chain")
    r = rendered.result
    on_chain = {
        "payout root": ("0x" + bytes(event["payoutRoot"]).hex(), r.payout_root),
        "claim cap": (int(event["claimCap"]), r.curators_total + r.contributors_total),
        "fee total": (int(event.get("feeTotal", -1)), r.fee_total),
        "protocol amount": (int(event.get("protocolAmount", -1)), r.protocol_amount),
        "owner amount": (int(event.get("ownerAmount", -1)), r.owner_amount),
        "curators total": (int(event.get("curatorsTotal", -1)), r.curators_total),
        "contributors total": (int(event.get("contributorsTotal", -1)), r.contributors_total),
        "carried dust": (int(event.get("carriedDust", -1)), r.carried_dust),
    }
    wrong = [f"{name}: on chain {chain}, recomputed {mine}" for name, (chain, mine) in on_chain.items() if chain != mine]
    verdict.reasons.extend(wrong)
    if not wrong:
        verdict.checks.append(f"on-chain root {r.payout_root} and the split totals equal the recomputation")
    return verdict


def _membership_problems(ctx, calls) -> list[str]:  # type: ignore[no-untyped-def]
    """Public checks that the published calls are the ones the epoch's charges paid for."""
    charges = {(c.seq, c.payer): c for c in ctx.charges if c.kind == "voucher"}
    fees: dict[tuple[int, str], int] = {}
    seen_ids: set[str] = set()
    seen_amounts: set[tuple[str, int]] = set()
    for call in calls:
        charge = charges.get((call.charge_seq, call.consumer))
        if charge is None:
            return [f"call {call.call_id}: no charge {call.charge_seq} of {call.consumer} in this epoch"]
        if not charge.cumulative - charge.amount < call.cumulative <= charge.cumulative:
            return [f"call {call.call_id}: cumulative amount {call.cumulative} is outside charge {charge.seq}"]
        if call.call_id in seen_ids or (call.consumer, call.cumulative) in seen_amounts:
            return [f"call {call.call_id} is counted twice"]
        seen_ids.add(call.call_id)
        seen_amounts.add((call.consumer, call.cumulative))
        key = (call.charge_seq, call.consumer)
        fees[key] = fees.get(key, 0) + call.fee
        if fees[key] > charge.amount:
            return [f"calls paid by charge {charge.seq} of {call.consumer} claim more fees than it charged"]
    return []


def _earlier_call_ids(store: ContentStore, events: dict, epoch: int) -> dict[str, int]:
    from provenant.settlement.results import parse

    earlier: dict[str, int] = {}
    for e in sorted(k for k in events if k < epoch and "resultsCid" in events[k]):
        try:
            earlier.update({c["call_id"]: e for c in parse(store.get(events[e]["resultsCid"]))["calls"]})
        except (ValueError, KeyError, LookupError, RuntimeError):
            continue  # that epoch's own verification reports it
    return earlier


# -- receipts ----------------------------------------------------------------------------------
def verify_receipt(client: ChainClient, contracts: Contracts, store: ContentStore, raw: dict) -> Verdict:
    """A receipt's signature against its model's registered serving key, its lineage root and
    adapter hash against the chain, and whether its call is in a settled epoch's public results."""
    from provenant.serving.receipts import Receipt, check_receipt
    from provenant.settlement.context import ChainReader
    from provenant.settlement.results import parse

    try:
        receipt = Receipt.from_json(raw)
    except (TypeError, ValueError, KeyError) as exc:
        return Verdict(subject="receipt", reasons=[f"not a receipt: {exc}"])
    verdict = Verdict(subject=f"receipt for call {receipt.call_id}")
    if receipt.chain_id != client.chain_id or receipt.verifying_contract.lower() != contracts.models.address.lower():
        verdict.reasons.append(f"receipt is for chain {receipt.chain_id} / registry {receipt.verifying_contract}, "
                               f"not this deployment ({client.chain_id} / {contracts.models.address})")
        return verdict
    if not client.call(contracts.models.functions.exists(receipt.model_id)):
        verdict.reasons.append(f"model {receipt.model_id} is not registered")
        return verdict
    record = ModelRecord.fetch(client, contracts, receipt.model_id)
    problems = check_receipt(receipt, record.server, record.lineage_root, record.adapter_hash)
    verdict.reasons.extend(problems)
    if not problems:
        verdict.checks.append(f"signed by the model's registered server {record.server}; lineage root and "
                              f"adapter hash are the registered ones")
    events = ChainReader(client, contracts, store).settled_events(receipt.model_id)
    for epoch in sorted(events, reverse=True):
        try:
            document = parse(store.get(events[epoch]["resultsCid"]))
        except (ValueError, KeyError, LookupError, RuntimeError):  # unreadable results: `verify epoch` says why
            continue
        entry = next((c for c in document["calls"] if c["call_id"] == receipt.call_id), None)
        if entry is None:
            continue
        expected = {"consumer": receipt.consumer.lower(), "fee": str(receipt.fee),
                    "prompt_hash": receipt.prompt_hash, "output_hash": receipt.output_hash}
        found = {**{k: entry[k] for k in expected}, "consumer": entry["consumer"].lower()}
        differing = [k for k in expected if expected[k] != found[k]]
        if differing:
            verdict.reasons.append(f"settled epoch {epoch} lists call {receipt.call_id} with another "
                                   f"{', '.join(differing)}")
        else:
            verdict.checks.append(f"call settled in epoch {epoch} (results {events[epoch]['resultsCid']})")
        return verdict
    verdict.reasons.append(f"call {receipt.call_id} is in none of model {receipt.model_id}'s {len(events)} settled "
                           f"epochs (not charged or not settled yet)")
    return verdict

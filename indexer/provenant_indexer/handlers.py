"""From decoded logs to table rows: one function per event that the normalised tables use.

A batch is folded in memory, in log order, into `Changes`: rows to append, and the latest value
of every cache column touched (a contribution created and approved in the same batch is written
once, already approved). Events with no handler (token transfers, role grants, split proposals, agent-token approvals)
are mirrored in the raw `events` table only.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from sqlalchemy import Table

from provenant_indexer import schema as s
from provenant_indexer.abi import EventTable, UnknownEvent
from provenant_indexer.columns import ROWS
from provenant_indexer.handlers_agents import AGENT_HANDLERS

STATUS_NAMES = {"ContributionSubmitted": "pending", "ContributionApproved": "approved",
                "ContributionRejected": "rejected", "ContributionWithdrawn": "withdrawn"}
STATUS_EVENTS = {"ContributionApproved", "ContributionRejected", "ContributionWithdrawn"}


class Loc(NamedTuple):  # a NamedTuple: built once per log, ~3x cheaper than a frozen dataclass
    block_number: int
    log_index: int
    tx_hash: str


@dataclass
class RepDelta:
    submitted: int = 0
    approved: int = 0
    rejected: int = 0
    withdrawn: int = 0
    block: int = 0


@dataclass
class Changes:
    # Rows to append, as columns.row_maker makes them (tuples in column order, ready to bind).
    inserts: dict[Table, list[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(list))
    new_datanets: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_contributions: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_models: dict[int, dict[str, Any]] = field(default_factory=dict)
    datanet_updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    contribution_updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    model_updates: dict[int, dict[str, Any]] = field(default_factory=dict)
    new_agents: dict[int, dict[str, Any]] = field(default_factory=dict)
    agent_updates: dict[int, dict[str, Any]] = field(default_factory=dict)  # column subsets differ per agent
    curators: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    allowlist: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    reputation: dict[str, RepDelta] = field(default_factory=lambda: defaultdict(RepDelta))
    contributors: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> (datanet, contributor)
    # The raw `events` rows as tuples in the table's column order, args already JSON text: the
    # one row every log gets is built without a dict (bulk.insert_tuples writes them).
    event_rows: list[tuple[Any, ...]] = field(default_factory=list)
    event_count: int = 0

    def add(self, table: Table, row: tuple[Any, ...]) -> None:
        self.inserts[table].append(row)


Handler = Callable[[Changes, Loc, dict[str, Any]], None]


def _datanet_created(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.new_datanets[a["datanetId"]] = {
        "datanet_id": a["datanetId"], "owner": a["owner"], "metadata_cid": a["metadataCid"],
        "license": a["license"], "treasury": a["treasury"], "stake": a["stake"], "allowlisted": a["allowlisted"],
        "slash_on_reject": a["slashOnReject"], "version": 0, "block_number": loc.block_number,
        "log_index": loc.log_index, "tx_hash": loc.tx_hash, "updated_block": loc.block_number,
    }


def _datanet_version(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    d = a["datanetId"]
    ch.add(s.datanet_versions, ROWS[s.datanet_versions](loc, datanet_id=d, version=a["version"]))
    target = ch.new_datanets.get(d) or ch.datanet_updates.setdefault(d, {})
    target.update(version=a["version"], updated_block=loc.block_number)


def _curator_set(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    key = (a["datanetId"], a["account"])
    ch.add(s.curator_changes, ROWS[s.curator_changes](loc, datanet_id=key[0], account=key[1], enabled=a["enabled"]))
    ch.curators[key] = {"datanet_id": key[0], "account": key[1], "enabled": a["enabled"],
                        "updated_block": loc.block_number}


def _contributor_allowed(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    key = (a["datanetId"], a["account"])
    ch.add(s.allowlist_changes, ROWS[s.allowlist_changes](
        loc, datanet_id=key[0], account=key[1], allowed=a["allowed"]))
    ch.allowlist[key] = {"datanet_id": key[0], "account": key[1], "allowed": a["allowed"],
                         "updated_block": loc.block_number}


def _contribution_submitted(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    cid, contributor = a["contributionId"], a["contributor"]
    ch.contributors[cid] = (a["datanetId"], contributor)
    ch.new_contributions[cid] = {
        "contribution_id": cid, "datanet_id": a["datanetId"], "contributor": contributor,
        "content_hash": a["contentHash"], "cid": a["cid"], "size": a["size"], "row_count": a["rowCount"],
        "stake": a["stake"], "status": "pending", "status_actor": contributor, "reject_reason": None,
        "slashed": None, "block_number": loc.block_number, "log_index": loc.log_index, "tx_hash": loc.tx_hash,
        "updated_block": loc.block_number,
    }
    ch.add(s.contribution_status, ROWS[s.contribution_status](
        loc, contribution_id=cid, datanet_id=a["datanetId"], contributor=contributor, status="pending",
        actor=contributor, reason=None, slashed=None))
    rep = ch.reputation[contributor]
    rep.submitted += 1
    rep.block = loc.block_number


def _status_change(event: str) -> Handler:
    status = STATUS_NAMES[event]

    def handle(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
        cid = a["contributionId"]
        datanet_id, contributor = ch.contributors[cid]
        actor = a.get("curator", contributor)
        reason, slashed = a.get("reason"), a.get("slashed")
        ch.add(s.contribution_status, ROWS[s.contribution_status](
            loc, contribution_id=cid, datanet_id=datanet_id, contributor=contributor, status=status, actor=actor,
            reason=reason, slashed=slashed))
        cache = {"status": status, "status_actor": actor, "reject_reason": reason, "slashed": slashed,
                 "updated_block": loc.block_number}
        (ch.new_contributions.get(cid) or ch.contribution_updates.setdefault(cid, {})).update(cache)
        rep = ch.reputation[contributor]
        setattr(rep, status, getattr(rep, status) + 1)
        rep.block = loc.block_number

    return handle


def _model_registered(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.new_models[a["modelId"]] = {
        "model_id": a["modelId"], "owner": a["owner"], "parent_id": a["parentId"], "name": a["name"],
        "lineage_root": a["lineageRoot"], "adapter_hash": a["adapterHash"], "base_model": None,
        "config_hash": None, "adapter_cid": None, "manifest_cid": None, "price_per_call": None, "server": None,
        "block_number": loc.block_number, "log_index": loc.log_index, "tx_hash": loc.tx_hash,
        "updated_block": loc.block_number,
    }


def _model_lineage(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    m = a["modelId"]
    # ModelLineage is emitted in the same transaction as ModelRegistered, so the row is in this batch.
    ch.new_models[m].update(base_model=a["baseModel"], config_hash=a["configHash"], adapter_cid=a["adapterCid"],
                            manifest_cid=a["manifestCid"])
    for position, d in enumerate(a["datanetIds"]):
        ch.add(s.model_datanets, ROWS[s.model_datanets](
            model_id=m, datanet_id=d, position=position, block_number=loc.block_number))
    for c in a["contributionIds"]:
        ch.add(s.model_contributions, ROWS[s.model_contributions](
            model_id=m, contribution_id=c, block_number=loc.block_number))


def _model_terms(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    m = a["modelId"]
    ch.add(s.model_terms, ROWS[s.model_terms](loc, model_id=m, price_per_call=a["pricePerCall"], server=a["server"]))
    (ch.new_models.get(m) or ch.model_updates.setdefault(m, {})).update(
        price_per_call=a["pricePerCall"], server=a["server"], updated_block=loc.block_number)


def _movement(kind: str) -> Handler:
    def handle(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
        ch.add(s.escrow_movements, ROWS[s.escrow_movements](
            loc, model_id=a["modelId"], consumer=a["consumer"], kind=kind, amount=a["amount"], tx_hash=loc.tx_hash))

    return handle


def _charged(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.charges, ROWS[s.charges](
        loc, model_id=a["modelId"], consumer=a["consumer"], seq=a["seq"], amount=a["amount"],
        cumulative_amount=a["cumulativeAmount"], tx_hash=loc.tx_hash))


def _fees_paid(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.fee_payments, ROWS[s.fee_payments](
        loc, model_id=a["modelId"], payer=a["payer"], seq=a["seq"], amount=a["amount"], tx_hash=loc.tx_hash))


def _fees_released(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.fee_releases, ROWS[s.fee_releases](
        loc, model_id=a["modelId"], from_seq=a["fromSeq"], to_seq=a["toSeq"], amount=a["amount"]))


def _epoch_settled(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.epochs, ROWS[s.epochs](
        loc, model_id=a["modelId"], epoch=a["epoch"], upto_seq=a["uptoSeq"], payout_root=a["payoutRoot"],
        claim_cap=a["claimCap"], results_cid=a["resultsCid"], tx_hash=loc.tx_hash))


def _epoch_split(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.epoch_splits, ROWS[s.epoch_splits](
        loc, model_id=a["modelId"], epoch=a["epoch"], fee_total=a["feeTotal"], protocol_amount=a["protocolAmount"],
        owner_amount=a["ownerAmount"], curators_total=a["curatorsTotal"], contributors_total=a["contributorsTotal"],
        carried_dust=a["carriedDust"]))


def _claimed(ch: Changes, loc: Loc, a: dict[str, Any]) -> None:
    ch.add(s.claims, ROWS[s.claims](
        loc, model_id=a["modelId"], epoch=a["epoch"], account=a["account"], amount=a["amount"], tx_hash=loc.tx_hash))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("DatanetRegistry", "DatanetCreated"): _datanet_created,
    ("DatanetRegistry", "DatanetVersionIncreased"): _datanet_version,
    ("DatanetRegistry", "CuratorSet"): _curator_set,
    ("DatanetRegistry", "ContributorAllowed"): _contributor_allowed,
    ("DatanetRegistry", "ContributionSubmitted"): _contribution_submitted,
    **{("DatanetRegistry", e): _status_change(e) for e in STATUS_EVENTS},
    ("ModelRegistry", "ModelRegistered"): _model_registered,
    ("ModelRegistry", "ModelLineage"): _model_lineage,
    ("ModelRegistry", "ModelTermsSet"): _model_terms,
    ("UsageEscrow", "Deposited"): _movement("deposit"),
    ("UsageEscrow", "Withdrawn"): _movement("withdrawal"),
    ("UsageEscrow", "Charged"): _charged,
    ("UsageEscrow", "FeesPaid"): _fees_paid,
    ("UsageEscrow", "FeesReleased"): _fees_released,
    ("AttributionSettlement", "EpochSettled"): _epoch_settled,
    ("AttributionSettlement", "EpochSplit"): _epoch_split,
    ("AttributionSettlement", "Claimed"): _claimed,
    **AGENT_HANDLERS,
}


@dataclass
class Decoded:
    """A batch's logs, decoded: what needs no database (so it can be made in another process).
    `handled`: (handler key, block, log index, tx hash, args) for the logs a handler folds;
    `wanted`: contributions whose status changes here but which were submitted in an earlier batch."""

    event_rows: list[tuple[Any, ...]]
    handled: list[tuple[tuple[str, str], int, int, str, dict[str, Any]]]
    wanted: list[int]


def decode_logs(logs: Iterable[Mapping[str, Any]], table: EventTable) -> Decoded:
    """Decode `logs` (ordered by block and log index here, whatever order the node used) into
    the raw `events` rows and the arguments the handlers need."""
    logs = list(logs)
    decoded = _decode_in_order(logs, table)
    if decoded is None:  # nodes return logs in order; do not rely on it
        keys = [(int(e["blockNumber"], 16), int(e["logIndex"], 16)) for e in logs]
        decoded = _decode_in_order([logs[i] for i in sorted(range(len(logs)), key=keys.__getitem__)], table)
        assert decoded is not None, "two logs with the same block number and log index"
    return decoded


def _decode_in_order(logs: list[Mapping[str, Any]], table: EventTable) -> Decoded | None:
    """decode_logs for logs in (block, log index) order; None when they are not."""
    handled: list[tuple[tuple[str, str], int, int, str, dict[str, Any]]] = []
    wanted: set[int] = set()
    submitted: set[int] = set()
    events_rows: list[tuple[Any, ...]] = []
    append_row, append_handled = events_rows.append, handled.append
    by_address = table._by_address
    # Per (address, topic0) as the node spells them, once: (decoder, handler key or None, contract,
    # name, 1 submission / 2 status change / 0, lowercase address).
    dispatch: dict[tuple[str, str], tuple[Any, tuple[str, str] | None, str, str, int, str]] = {}
    last = (-1, -1)
    for entry in logs:
        block_number, log_index = int(entry["blockNumber"], 16), int(entry["logIndex"], 16)
        if (block_number, log_index) <= last:
            return None
        last = (block_number, log_index)
        topics = entry["topics"]
        route = dispatch.get((entry["address"], topics[0]))
        if route is None:
            address = entry["address"].lower()
            try:
                event = by_address[address][topics[0].lower()]
            except KeyError:
                raise UnknownEvent(f"log at {address} with topic0 {topics[0]} matches no event in its ABI") from None
            kind = 1 if event.name == "ContributionSubmitted" else 2 if event.name in STATUS_EVENTS else 0
            key = (event.contract, event.name)
            has_handler = key in HANDLERS  # else only the JSON text is made (no dict of arguments)
            route = dispatch[(entry["address"], topics[0])] = (
                event.json_decoder(with_args=has_handler), key if has_handler else None, event.contract,
                event.name, kind, address)
        decode, handler_key, contract, name, kind, address = route
        args, text = decode(topics, entry["data"])
        tx_hash = entry["transactionHash"]
        append_row((block_number, log_index, entry["blockHash"], tx_hash, int(entry["transactionIndex"], 16),
                    address, contract, name, text))
        if handler_key is not None:
            append_handled((handler_key, block_number, log_index, tx_hash, args))
            if kind == 1:
                submitted.add(args["contributionId"])
            elif kind == 2 and args["contributionId"] not in submitted:
                wanted.add(args["contributionId"])
    return Decoded(events_rows, handled, sorted(wanted))


def fold(decoded: Decoded, lookup_contributors: Callable[[list[int]], dict[int, tuple[int, str]]]) -> Changes:
    """Fold decoded logs into rows. `lookup_contributors` answers, from the database, which
    Datanet and contributor earlier contributions belong to."""
    ch = Changes()
    ch.event_rows = decoded.event_rows
    ch.event_count = len(decoded.event_rows)
    if decoded.wanted:
        ch.contributors.update(lookup_contributors(decoded.wanted))
    handlers = HANDLERS
    for key, block_number, log_index, tx_hash, args in decoded.handled:
        handlers[key](ch, Loc(block_number, log_index, tx_hash), args)
    return ch


def build_changes(logs: Iterable[Mapping[str, Any]], table: EventTable,
                  lookup_contributors: Callable[[list[int]], dict[int, tuple[int, str]]]) -> Changes:
    """Decode `logs` and fold them into rows (decode_logs, then fold)."""
    return fold(decode_logs(logs, table), lookup_contributors)

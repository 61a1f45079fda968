"""Datanets: creating them, contributing to them and curating them, on chain.

A contribution is validated against its Datanet's rules *before* anything is stored or sent,
so a malformed or oversized file changes nothing; then its bytes go to the content store
(content-addressed, so a retry stores nothing new) and the record goes on chain.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from provenant.chain.bindings import ContributionView, DatanetView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.events import first_event
from provenant.datanets.duplicates import DuplicateIndex
from provenant.datanets.validation import DatanetRules, ValidatedFile, validate_contribution
from provenant.store.blockstore import ContentStore


class Status(IntEnum):
    NONE = 0
    PENDING = 1
    APPROVED = 2
    REJECTED = 3
    WITHDRAWN = 4


class RejectReason(IntEnum):
    SPAM = 1
    OFF_TOPIC = 2
    DUPLICATE = 3
    LOW_QUALITY = 4


@dataclass(frozen=True)
class DatanetInfo:
    datanet_id: int
    owner: str
    metadata_cid: str
    metadata: dict[str, Any]
    stake: int

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", f"datanet-{self.datanet_id}"))

    @property
    def rules(self) -> DatanetRules:
        return rules_from_metadata(self.metadata)


@dataclass(frozen=True)
class ContributionRecord:
    contribution_id: int
    datanet_id: int
    contributor: str
    content_hash: str  # 0x-hex sha2-256 of the file
    cid: str
    size: int
    row_count: int
    status: Status


def rules_from_metadata(metadata: dict[str, Any]) -> DatanetRules:
    return DatanetRules(
        task=metadata.get("task", "classification"),
        labels=tuple(metadata.get("labels", ())),
        max_rows=int(metadata.get("max_rows_per_file", 1000)),
        max_bytes=int(metadata.get("max_bytes_per_file", 1_048_576)),
    )


def canonical_json(value: Any) -> bytes:
    """The one JSON encoding hashed or stored by content: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class DatanetService:
    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore) -> None:
        self.client = client
        self.contracts = contracts
        self.store = store
        self._duplicate_indexes: dict[int, DuplicateIndex] = {}
        self._duplicates_lock = threading.Lock()

    # -- Datanets ----------------------------------------------------------------------
    def create(
        self,
        owner: LocalAccount,
        metadata: dict[str, Any],
        *,
        curators: list[str] | None = None,
        stake: int = 0,
        slash_on_reject: bool = False,
        treasury: str | None = None,
    ) -> int:
        """Store the Datanet's metadata and rules by CID and create it on chain."""
        rules_from_metadata(metadata)  # refuse unusable rules before anything is written
        metadata_cid = self.store.put(canonical_json(metadata))
        fn = self.contracts.datanets.functions.createDatanet(
            metadata_cid,
            str(metadata.get("license", "")),
            curators or [owner.address],
            treasury or "0x0000000000000000000000000000000000000000",
            stake,
            False,
            slash_on_reject,
        )
        result = self.client.transact(owner, fn)
        return int(first_event(self.contracts.datanets, "DatanetCreated", result.logs)["datanetId"])

    def get(self, datanet_id: int) -> DatanetInfo:
        view = decode(DatanetView, self.client.call(self.contracts.datanets.functions.getDatanet(datanet_id)))
        metadata = json.loads(self.store.get(view.metadata_cid))
        return DatanetInfo(datanet_id=datanet_id, owner=view.owner, metadata_cid=view.metadata_cid,
                           metadata=metadata, stake=view.stake)

    def count(self) -> int:
        return int(self.client.call(self.contracts.datanets.functions.datanetCount()))

    # -- contributions -----------------------------------------------------------------
    def validate(self, datanet_id: int, path: Path) -> ValidatedFile:
        return validate_contribution(Path(path), self.get(datanet_id).rules)

    def contribute(self, contributor: LocalAccount, datanet_id: int, path: Path) -> ContributionRecord:
        """Validate, store by CID, pay the stake (if any) and record the contribution."""
        datanet = self.get(datanet_id)
        checked = validate_contribution(Path(path), datanet.rules)
        data = Path(path).read_bytes()
        cid = self.store.put(data)
        if datanet.stake > 0:
            self.client.transact(
                contributor, self.contracts.token.functions.approve(self.contracts.datanets.address, datanet.stake)
            )
        fn = self.contracts.datanets.functions.contribute(
            datanet_id, bytes.fromhex(checked.sha256), cid, checked.size, len(checked.rows)
        )
        result = self.client.transact(contributor, fn)
        event = first_event(self.contracts.datanets, "ContributionSubmitted", result.logs)
        return self.contribution(int(event["contributionId"]))

    def approve(self, curator: LocalAccount, datanet_id: int, contribution_ids: list[int]) -> None:
        self.client.transact(curator, self.contracts.datanets.functions.approve(datanet_id, contribution_ids))

    def reject(self, curator: LocalAccount, contribution_id: int, reason: RejectReason) -> None:
        self.client.transact(curator, self.contracts.datanets.functions.reject(contribution_id, int(reason)))

    def contribution(self, contribution_id: int) -> ContributionRecord:
        c = decode(ContributionView,
                   self.client.call(self.contracts.datanets.functions.getContribution(contribution_id)))
        return ContributionRecord(
            contribution_id=contribution_id,
            datanet_id=c.datanet_id,
            contributor=c.contributor,
            content_hash=c.content_hash,
            size=c.size,
            row_count=c.row_count,
            status=Status(c.status),
            cid=c.cid,
        )

    def contributions(self, datanet_id: int | None = None) -> list[ContributionRecord]:
        """Every contribution (of one Datanet), read from chain. The indexer serves this at scale."""
        total = int(self.client.call(self.contracts.datanets.functions.contributionCount()))
        records = [self.contribution(i) for i in range(1, total + 1)]
        return [r for r in records if datanet_id is None or r.datanet_id == datanet_id]

    def duplicate_index(self, datanet_id: int) -> DuplicateIndex:
        """The Datanet's pending and approved rows, for duplicate flags; each contribution is read
        once per service (its content is immutable), later ones are added as they appear."""
        with self._duplicates_lock:
            index = self._duplicate_indexes.setdefault(datanet_id, DuplicateIndex())
            for record in self.contributions(datanet_id):
                if record.status in (Status.PENDING, Status.APPROVED) and record.contribution_id not in index.contributions:
                    index.add(record.contribution_id, self.load_rows(record))
            return index

    def load_rows(self, record: ContributionRecord) -> tuple[dict[str, Any], ...]:
        """A contribution's rows, fetched by CID (integrity-checked) and re-validated."""
        import tempfile

        data = self.store.get(record.cid)
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
            tmp.write(data)
            tmp.flush()
            checked = validate_contribution(Path(tmp.name), self.get(record.datanet_id).rules,
                                            name=f"contribution {record.contribution_id} ({record.cid})")
        if "0x" + checked.sha256 != record.content_hash:
            raise ValueError(f"contribution {record.contribution_id}: stored bytes do not match the on-chain hash")
        return checked.rows

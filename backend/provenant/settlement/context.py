"""The public inputs of one epoch, read from the chain and the content store (never from a call log).

The same `EpochContext` comes out for the next, still open epoch (what a proposer and its
co-signers settle) and for an epoch settled long ago (what `verify epoch` rechecks), because every
figure is pinned to something final on chain:

* the charge range (from_seq, upto_seq]: from the escrow (open) or the EpochSettled events (settled);
* the fees: cumulativeFeesAt(upto) - cumulativeFeesAt(from) + the dust carried in (carriedDust, or
  the previous epoch's EpochSplit event);
* the split: the contract's (open), or the last SplitSet at or before the settling block;
* the curators: CuratorSet events up to the block of the charge that closes the epoch, so a
  curator change after that charge cannot make two honest attributors disagree;
* the contributions that can earn: the model's registered manifest, checked against its on-chain
  lineage root (the registry accepted only approved contributions into it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from provenant.attribution.aggregate import ContributionMeta
from provenant.chain.bindings import SplitView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.factory.lineage import Manifest
from provenant.serving.records import ModelIntegrityError, ModelRecord
from provenant.settlement.epoch import Split
from provenant.settlement.membership import Charge, read_charges
from provenant.settlement.rpc import retrying
from provenant.store.blockstore import ContentStore


class NothingToSettle(RuntimeError):
    pass


class BadEpochRange(ValueError):
    pass


@dataclass(frozen=True)
class EpochContext:
    model_id: int
    epoch: int
    from_seq: int
    upto_seq: int
    carried_in: int
    fee_total: int
    split: Split
    lineage_root: str
    manifest_cid: str
    adapter_hash: str
    snapshot_block: int
    contributions: Mapping[int, ContributionMeta]
    curators: Mapping[int, tuple[str, ...]]
    charges: tuple[Charge, ...]

    def inputs_json(self) -> dict[str, Any]:
        """The inputs' identities, as the public results record them."""
        return {
            "lineage_root": self.lineage_root,
            "manifest_cid": self.manifest_cid,
            "adapter_hash": self.adapter_hash,
            "snapshot_block": self.snapshot_block,
            "curators": {str(d): list(v) for d, v in sorted(self.curators.items())},
        }


class ChainReader:
    """Chain reads for settlement, each retried on transport errors (see rpc.py)."""

    def __init__(self, client: ChainClient, contracts: Contracts, store: ContentStore) -> None:
        self.client, self.contracts, self.store = client, contracts, store

    def call(self, fn: Any, what: str) -> Any:
        return retrying(what, self.client.rpc_url, lambda: self.client.call(fn))

    def logs(self, event: Any, what: str, **filters: Any) -> list[Any]:
        start = self.contracts.manifest.block_number
        return retrying(what, self.client.rpc_url,
                        lambda: list(event.get_logs(from_block=start, argument_filters=filters)))

    def fetch(self, what: str, fn: Callable[[], Any]) -> Any:
        return retrying(what, self.client.rpc_url, fn)

    # -- pieces ----------------------------------------------------------------------
    def settled_events(self, model_id: int) -> dict[int, dict[str, Any]]:
        """epoch -> {uptoSeq, payoutRoot, claimCap, resultsCid, block, and the EpochSplit figures}."""
        s = self.contracts.settlement.events
        out: dict[int, dict[str, Any]] = {}
        for log in self.logs(s.EpochSettled, "reading EpochSettled events", modelId=model_id):
            out[int(log["args"]["epoch"])] = {**dict(log["args"]), "block": int(log["blockNumber"])}
        for log in self.logs(s.EpochSplit, "reading EpochSplit events", modelId=model_id):
            out.setdefault(int(log["args"]["epoch"]), {}).update(dict(log["args"]))
        return out

    def curators_at(self, datanet_ids: tuple[int, ...], block: int) -> dict[int, tuple[str, ...]]:
        curators: dict[int, set[str]] = {d: set() for d in datanet_ids}
        for log in self.logs(self.contracts.datanets.events.CuratorSet, "reading CuratorSet events"):
            d = int(log["args"]["datanetId"])
            if d in curators and int(log["blockNumber"]) <= block:
                (curators[d].add if log["args"]["enabled"] else curators[d].discard)(log["args"]["account"])
        return {d: tuple(sorted(v)) for d, v in curators.items()}

    def split_at(self, block: int) -> Split:
        chosen = None
        for log in self.logs(self.contracts.settlement.events.SplitSet, "reading SplitSet events"):
            if int(log["blockNumber"]) <= block:
                chosen = log["args"]
        if chosen is None:
            raise BadEpochRange("no SplitSet event before the settling block")
        return Split(int(chosen["protocolBps"]), int(chosen["ownerBps"]), int(chosen["curatorsBps"]),
                     int(chosen["contributorsBps"]))

    def model(self, model_id: int) -> tuple[ModelRecord, Manifest]:
        record = self.fetch(f"reading model {model_id}", lambda: ModelRecord.fetch(self.client, self.contracts, model_id))
        manifest = Manifest.from_bytes(self.store.get(record.manifest_cid))
        if manifest.lineage_root != record.lineage_root:
            raise ModelIntegrityError(f"model {model_id}: manifest lineage root differs from the registered one")
        return record, manifest

    # -- contexts --------------------------------------------------------------------
    def open_context(self, model_id: int, upto_seq: int | None = None) -> EpochContext:
        """The next epoch of a model, settling charges up to `upto_seq` (default: all charged)."""
        escrow, settlement = self.contracts.escrow.functions, self.contracts.settlement.functions
        charged = int(self.call(escrow.chargeSeq(model_id), "reading chargeSeq"))
        settled = int(self.call(escrow.settledSeq(model_id), "reading settledSeq"))
        upto = charged if upto_seq is None else int(upto_seq)
        if charged == settled:
            raise NothingToSettle(f"model {model_id} has no charged fees since charge {settled}")
        if not settled < upto <= charged:
            raise BadEpochRange(f"model {model_id}: uptoSeq {upto} is outside the open charges ({settled}, {charged}]")
        return self._context(
            model_id,
            epoch=int(self.call(settlement.lastEpoch(model_id), "reading lastEpoch")) + 1,
            from_seq=settled, upto_seq=upto,
            carried_in=int(self.call(settlement.carriedDust(model_id), "reading carriedDust")),
            split=Split(*vars(decode(SplitView, self.call(settlement.split(), "reading the split"))).values()),
        )

    def settled_context(self, model_id: int, epoch: int) -> EpochContext:
        """A settled epoch's inputs, exactly as they were when it was settled."""
        events = self.settled_events(model_id)
        if epoch not in events:
            raise BadEpochRange(f"model {model_id} has no settled epoch {epoch}")
        previous = events.get(epoch - 1, {})
        return self._context(
            model_id, epoch=epoch, from_seq=int(previous.get("uptoSeq", 0)), upto_seq=int(events[epoch]["uptoSeq"]),
            carried_in=int(previous.get("carriedDust", 0)), split=self.split_at(events[epoch]["block"]),
        )

    def _context(self, model_id: int, *, epoch: int, from_seq: int, upto_seq: int, carried_in: int,
                 split: Split) -> EpochContext:
        escrow = self.contracts.escrow.functions
        fees = (int(self.call(escrow.cumulativeFeesAt(model_id, upto_seq), "reading cumulativeFeesAt"))
                - int(self.call(escrow.cumulativeFeesAt(model_id, from_seq), "reading cumulativeFeesAt")))
        record, manifest = self.model(model_id)
        charges = tuple(self.fetch("reading charge events", lambda: read_charges(
            self.contracts, model_id, from_seq, upto_seq, self.contracts.manifest.block_number)))
        closing = [c.block for c in charges if c.seq == upto_seq]
        if not closing:
            raise BadEpochRange(f"model {model_id}: no charge event for seq {upto_seq}")
        snapshot = max(closing)
        return EpochContext(
            model_id=model_id, epoch=epoch, from_seq=from_seq, upto_seq=upto_seq, carried_in=carried_in,
            fee_total=fees + carried_in, split=split, lineage_root=record.lineage_root,
            manifest_cid=record.manifest_cid, adapter_hash=record.adapter_hash, snapshot_block=snapshot,
            contributions={e.contribution_id: ContributionMeta(contributor=e.contributor, datanet_id=e.datanet_id)
                           for e in manifest.contributions},
            curators=self.curators_at(tuple(manifest.datanet_ids), snapshot),
            charges=charges,
        )

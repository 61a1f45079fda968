"""The settlement loop: close each model's epoch when its policy says so, and keep what it posted
on chain until it is final.

It holds no state that matters across restarts: which calls an epoch holds follows from the
chain and the call log (membership.py), so a loop killed mid-epoch and started again proposes
the same epoch. What it remembers in memory is only the settlements it posted and has not yet
seen `confirmations` blocks deep; a reorg that drops one is noticed on the next tick and the
same signed attestation is posted again (or, past its deadline, the epoch is proposed afresh).

A model whose epoch cannot be settled (co-signers refuse, its model cannot be scored) is logged
and left alone for `retry_after_s`, without holding up the other models; a dead RPC endpoint is
not a model's problem and propagates (rpc.RpcUnavailable) to the caller.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.serving.calllog import CallLog
from provenant.settlement.context import ChainReader, NothingToSettle
from provenant.settlement.membership import EpochPolicy, assign
from provenant.settlement.quorum import Peer, QuorumNotReached, Settled, is_settled, settle_with_quorum
from provenant.settlement.rpc import RpcUnavailable
from provenant.store.blockstore import ContentStore

log = logging.getLogger("provenant.settlement")


@dataclass
class Watched:
    settled: Settled
    posted_block: int


@dataclass
class SettlementLoop:
    client: ChainClient
    contracts: Contracts
    store: ContentStore
    proposer: Peer
    peers: Sequence[Peer]
    call_log: CallLog  # the loop's view of the log, to count calls for the policy
    policy: EpochPolicy = field(default_factory=EpochPolicy)
    confirmations: int = 2
    watched: list[Watched] = field(default_factory=list)
    retry_after_s: float = 60.0
    failed: dict[int, tuple[float, str]] = field(default_factory=dict)  # model -> (monotonic time, why)
    last_actions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reader = ChainReader(self.client, self.contracts, self.store)

    def due(self, model_id: int) -> int | None:
        """The uptoSeq the policy closes the model's epoch at now, or None."""
        try:
            ctx = self.reader.open_context(model_id)
        except NothingToSettle:
            return None
        assignment = assign(self.call_log.read_in_order(model_id), ctx.charges)
        first_block = min(c.block for c in ctx.charges)
        oldest = int(self.reader.fetch("reading a block", lambda: self.client.w3.eth.get_block(first_block))["timestamp"])
        now = self.reader.fetch("reading the latest block", self.client.latest_timestamp)
        return self.policy.close_at(ctx.charges, assignment, oldest, now)

    def recheck(self) -> list[str]:
        """Re-post watched settlements a reorg dropped; forget those deep enough to be final."""
        actions = []
        head = int(self.reader.fetch("reading the block number", lambda: self.client.w3.eth.block_number))
        for item in list(self.watched):
            a = item.settled.proposal.attestation
            if is_settled(self.client, self.contracts, item.settled.proposal):
                if head - item.posted_block >= self.confirmations:
                    self.watched.remove(item)
                continue
            last = int(self.reader.call(self.contracts.settlement.functions.lastEpoch(a.model_id), "reading lastEpoch"))
            now = self.reader.fetch("reading the latest block", self.client.latest_timestamp)
            self.watched.remove(item)
            if last + 1 == a.epoch and now < a.deadline:
                log.warning("model %s epoch %s vanished from the chain (reorg); posting it again", a.model_id, a.epoch)
                self.proposer.post(item.settled.proposal, item.settled.signatures)
                self._watch(item.settled)
                actions.append(f"reposted model {a.model_id} epoch {a.epoch}")
            else:
                actions.append(f"dropped model {a.model_id} epoch {a.epoch}: it will be proposed again")
        return actions

    def tick(self, model_ids: Sequence[int]) -> list[Settled]:
        """One pass: recheck what was posted, then settle every model whose epoch is due."""
        self.last_actions = self.recheck()
        done = []
        for model_id in model_ids:
            failed = self.failed.get(model_id)
            if failed is not None and time.monotonic() - failed[0] < self.retry_after_s:
                continue
            try:
                upto = self.due(model_id)
                if upto is None:
                    continue
                settled = settle_with_quorum(self.client, self.contracts, self.proposer, self.peers, model_id,
                                             upto_seq=upto)
            except RpcUnavailable:
                raise
            except QuorumNotReached as exc:
                self._failed(model_id, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one model's trouble must not stop the others
                self._failed(model_id, f"{type(exc).__name__}: {exc}")
                continue
            self.failed.pop(model_id, None)
            self._watch(settled)
            done.append(settled)
        return done

    def _failed(self, model_id: int, why: str) -> None:
        log.error("model %s not settled, retrying in %.0f s: %s", model_id, self.retry_after_s, why)
        self.failed[model_id] = (time.monotonic(), why)
        self.last_actions.append(f"model {model_id} failed: {why}")

    def _watch(self, settled: Settled) -> None:
        head = int(self.reader.fetch("reading the block number", lambda: self.client.w3.eth.block_number))
        self.watched.append(Watched(settled, head))

"""Gathering M of N attributor signatures and posting the settlement; confirming it stays posted.

`settle_with_quorum` asks one attributor to propose, asks the others in turn to co-sign until
the on-chain quorum is reached, and posts; if the quorum cannot be reached nothing is posted and
every refusal (with its first differing call and account) is logged and raised. A peer is
anything with `address`, `propose`, `cosign` and `post`: an in-process `LocalPeer` or a separate
attributor process (worker.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from eth_account.signers.local import LocalAccount

from provenant.chain.bindings import EpochView, decode
from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.chain.errors import TransactionReverted
from provenant.chain.typed_data import settlement_domain
from provenant.settlement.attestation import Cosignature, Refusal, SignedProposal
from provenant.settlement.attributor import Attributor
from provenant.settlement.rpc import RETRYABLE, RpcUnavailable, retrying

log = logging.getLogger("provenant.settlement")


class QuorumNotReached(RuntimeError):
    def __init__(self, proposal: SignedProposal, quorum: int, signatures: int, refusals: list[Refusal]) -> None:
        a = proposal.attestation
        first = refusals[0] if refusals else None
        super().__init__(
            f"model {a.model_id} epoch {a.epoch}: {signatures} of {quorum} signatures; nothing posted"
            + (f"; {first.signer} refused: {first.reason}" if first else "")
        )
        self.refusals = refusals


class Peer(Protocol):
    @property
    def address(self) -> str: ...

    def propose(self, model_id: int, upto_seq: int | None = None) -> SignedProposal: ...

    def cosign(self, proposal: SignedProposal) -> Cosignature | Refusal: ...

    def post(self, proposal: SignedProposal, signatures: dict[str, bytes]) -> str: ...


class LocalPeer:
    """An attributor in this process; it posts with its own key (any funded key may post)."""

    def __init__(self, attributor: Attributor) -> None:
        self.attributor = attributor

    @property
    def address(self) -> str:
        return self.attributor.address

    def propose(self, model_id: int, upto_seq: int | None = None) -> SignedProposal:
        return self.attributor.propose(model_id, upto_seq=upto_seq).signed

    def cosign(self, proposal: SignedProposal) -> Cosignature | Refusal:
        return self.attributor.cosign(proposal)

    def post(self, proposal: SignedProposal, signatures: dict[str, bytes]) -> str:
        return post_settlement(self.attributor.client, self.attributor.contracts, self.attributor.key, proposal,
                               signatures)


@dataclass
class Settled:
    proposal: SignedProposal
    signatures: dict[str, bytes]
    tx_hash: str
    refusals: list[Refusal] = field(default_factory=list)


def is_settled(client: ChainClient, contracts: Contracts, proposal: SignedProposal) -> bool:
    """Whether the chain holds exactly this attestation's epoch (same payout root)."""
    a = proposal.attestation
    epoch = retrying("reading the settled epoch", client.rpc_url,
                     lambda: client.call(contracts.settlement.functions.epochs(a.model_id, a.epoch)))
    return decode(EpochView, epoch).root_prefix == a.payout_root[:42]  # "0x" + 20 bytes


def post_settlement(client: ChainClient, contracts: Contracts, sender: LocalAccount, proposal: SignedProposal,
                    signatures: dict[str, bytes]) -> str:
    """Post `settle` once, signatures ascending by signer. A transport failure is retried only after
    checking the chain: the first attempt may have landed, and posting twice would revert."""
    ordered = [signatures[a] for a in sorted(signatures, key=lambda a: int(a, 16))]
    fn = contracts.settlement.functions.settle(proposal.attestation.as_tuple(), ordered)
    for _ in range(3):
        _forget_nonce(client, sender.address)
        try:
            return client.transact(sender, fn).tx_hash
        except TransactionReverted:
            if is_settled(client, contracts, proposal):  # another poster got the same attestation in first
                return "already-posted"
            raise
        except RETRYABLE as exc:
            log.warning("posting model %s epoch %s failed (%s); checking the chain", proposal.attestation.model_id,
                        proposal.attestation.epoch, type(exc).__name__)
            if is_settled(client, contracts, proposal):  # raises RpcUnavailable if the node stays down
                return "already-posted"
    raise RpcUnavailable(f"RPC endpoint {client.rpc_url} failed every attempt to post model "
                         f"{proposal.attestation.model_id} epoch {proposal.attestation.epoch}")


def _forget_nonce(client: ChainClient, address: str) -> None:
    # ChainClient caches nonces; after a failed send or a reorg that dropped our transaction the
    # node's count is the truth, and a stale cached nonce would park the post in the mempool.
    # (ChainClient has no public resync; settlement posts rarely, so it always asks the node.)
    client.resync_nonce(address)


def settle_with_quorum(client: ChainClient, contracts: Contracts, proposer: Peer, peers: Sequence[Peer],
                       model_id: int, *, upto_seq: int | None = None, quorum: int | None = None) -> Settled:
    """Propose, gather M of N co-signatures (M from the contract unless given), post."""
    if quorum is None:
        quorum = int(retrying("reading the quorum", client.rpc_url,
                              lambda: client.call(contracts.settlement.functions.quorum())))
    proposal = proposer.propose(model_id, upto_seq)
    domain = settlement_domain(client.chain_id, contracts.settlement.address)
    signatures = {proposal.signer: proposal.signature}
    refusals: list[Refusal] = []
    for peer in peers:
        if len(signatures) >= quorum:
            break
        if peer.address in signatures:
            continue
        answer = peer.cosign(proposal)
        if isinstance(answer, Refusal):
            log.warning("model %s epoch %s: %s refused: %s (call %s, account %s)", model_id,
                        proposal.attestation.epoch, answer.signer, answer.reason, answer.call_id, answer.account)
            refusals.append(answer)
        elif proposal.attestation.recover(domain, answer.signature) != peer.address:
            refusals.append(Refusal(peer.address, "returned a signature that does not recover to its address"))
        else:
            signatures[peer.address] = answer.signature
    if len(signatures) < quorum:
        raise QuorumNotReached(proposal, quorum, len(signatures), refusals)
    tx_hash = proposer.post(proposal, signatures)
    log.info("model %s epoch %s settled with %s signatures in %s", model_id, proposal.attestation.epoch,
             len(signatures), tx_hash)
    return Settled(proposal, signatures, tx_hash, refusals)


def ensure_settled(client: ChainClient, contracts: Contracts, poster: Peer, settled: Settled) -> str:
    """After a reorg: if the chain lost this settlement, post the same signed attestation again
    (still valid until its deadline). Returns 'present', or the new transaction hash."""
    if is_settled(client, contracts, settled.proposal):
        return "present"
    log.warning("model %s epoch %s is no longer on chain (reorg?); posting it again",
                settled.proposal.attestation.model_id, settled.proposal.attestation.epoch)
    return poster.post(settled.proposal, settled.signatures)

"""Claiming: find what an account may claim across models and epochs, and claim it at once."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.settlement.attributor import settled_results
from provenant.settlement.epoch import payout_leaf_of, payout_tree
from provenant.store.blockstore import ContentStore


@dataclass(frozen=True)
class ClaimItem:
    model_id: int
    epoch: int
    index: int  # the leaf's index in the epoch's payout tree
    account: str
    amount: int
    proof: tuple[str, ...]

    def as_tuple(self) -> tuple:
        return (self.model_id, self.epoch, self.index, self.account, self.amount,
                [bytes.fromhex(p[2:]) for p in self.proof])


def claimable(client: ChainClient, contracts: Contracts, store: ContentStore, account: str) -> list[ClaimItem]:
    """Every unclaimed allocation of `account`, with its Merkle proof from the public results."""
    items = []
    for result in settled_results(client, contracts, store):
        # The tree is rebuilt from the published allocations (the root is signed on chain, so a
        # wrong rebuild could only produce a proof the contract rejects).
        allocations = {a: int(v) for a, v in result["allocations"].items()}
        leaf = payout_leaf_of(allocations, account)
        if leaf is None:
            continue
        model_id, epoch = int(result["model_id"]), int(result["epoch"])
        if client.call(contracts.settlement.functions.isClaimed(model_id, epoch, leaf.index)):
            continue
        proof = payout_tree(allocations).get_proof(leaf.value())
        items.append(ClaimItem(model_id=model_id, epoch=epoch, index=leaf.index, account=account,
                               amount=leaf.amount, proof=tuple(proof)))
    return items


def claim_all(client: ChainClient, contracts: Contracts, claimant: LocalAccount, items: list[ClaimItem]) -> TxResult:
    """Claim many allocations of the claimant in one transaction."""
    return client.transact(claimant, contracts.settlement.functions.claimMany([i.as_tuple() for i in items]))

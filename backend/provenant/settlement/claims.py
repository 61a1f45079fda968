"""Claiming: find what an account may claim across models and epochs, and claim it at once.

The leaves and proofs come from the claims index (claims_index.py: filled once per results CID,
keyed by the CID on chain, so reorgs cannot serve a stale proof). Whether a leaf is claimed comes
from the chain: the account's Claimed events (one query, account is an indexed topic). An account
has at most one leaf per (model, epoch), so (model, epoch) names its claim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.settlement.claims_index import ClaimsIndex
from provenant.settlement.context import ChainReader
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

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "epoch": self.epoch, "index": self.index, "account": self.account,
                "amount": str(self.amount), "proof": list(self.proof)}


@dataclass(frozen=True)
class PastClaim:
    model_id: int
    epoch: int
    account: str
    amount: int
    tx_hash: str
    block: int

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "epoch": self.epoch, "account": self.account, "amount": str(self.amount),
                "tx_hash": self.tx_hash, "block": self.block}


def claim_history(client: ChainClient, contracts: Contracts, store: ContentStore, account: str) -> list[PastClaim]:
    """The account's claims on the chain as it is now, oldest first."""
    account = Web3.to_checksum_address(account)
    events = ChainReader(client, contracts, store).logs(contracts.settlement.events.Claimed, "reading Claimed events",
                                                        account=account)
    return [PastClaim(int(e["args"]["modelId"]), int(e["args"]["epoch"]), account, int(e["args"]["amount"]),
                      "0x" + bytes(e["transactionHash"]).hex().removeprefix("0x"), int(e["blockNumber"]))
            for e in sorted(events, key=lambda e: (e["blockNumber"], e["logIndex"]))]


def claimable(client: ChainClient, contracts: Contracts, store: ContentStore, account: str,
              index: ClaimsIndex | None = None) -> list[ClaimItem]:
    """Every unclaimed allocation of `account`, with its Merkle proof (an in-memory index if none given)."""
    account = Web3.to_checksum_address(account)
    owned = index is None
    index = index or ClaimsIndex(None, client, contracts, store)
    try:
        leaves = index.leaves_of(account)
    finally:
        if owned:
            index.close()
    claimed = {(c.model_id, c.epoch) for c in claim_history(client, contracts, store, account)}
    return [ClaimItem(model_id=leaf.model_id, epoch=leaf.epoch, index=leaf.index, account=account,
                      amount=leaf.amount, proof=leaf.proof)
            for leaf in leaves if (leaf.model_id, leaf.epoch) not in claimed]


def claim_many_calldata(contracts: Contracts, items: list[ClaimItem]) -> str:
    """The `claimMany` input data the account's wallet signs and sends (to the settlement contract)."""
    return str(contracts.settlement.encode_abi("claimMany", args=[[i.as_tuple() for i in items]]))


def claim_all(client: ChainClient, contracts: Contracts, claimant: LocalAccount, items: list[ClaimItem]) -> TxResult:
    """Claim many allocations of the claimant in one transaction."""
    return client.transact(claimant, contracts.settlement.functions.claimMany([i.as_tuple() for i in items]))

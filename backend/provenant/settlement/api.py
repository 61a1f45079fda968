"""Read-only HTTP endpoints for the UI's claims page: what an account may claim (with proofs and the
ready-to-sign `claimMany` calldata), what it has claimed, and an epoch's public results.

Nothing here changes state: the user's wallet signs and sends the claim transaction itself, so
no authentication is needed. Inputs are validated (a bad address is a 422 naming the problem).
Mount with `app.include_router(create_claims_router(...))`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Path
from web3 import Web3

from provenant.chain.client import ChainClient
from provenant.chain.deploy import Contracts
from provenant.settlement.claims import claim_history, claim_many_calldata, claimable
from provenant.settlement.claims_index import ClaimsIndex, settled_epochs
from provenant.store.blockstore import ContentStore

ModelPath = Path(..., ge=1, le=2**63 - 1, description="model id")
EpochPath = Path(..., ge=1, le=2**63 - 1, description="epoch number (1 is the first)")


def checked_address(account: str) -> str:
    """The checksum form, or a 422 that says what is wrong (a wrong checksum is wrong: it is how a
    typo in a mixed-case address is caught)."""
    text = account.strip()
    if not (text.startswith("0x") and len(text) == 42):
        raise HTTPException(422, f"account {account[:64]!r} is not a 0x-prefixed 20-byte hex address")
    try:
        int(text[2:], 16)
    except ValueError:
        raise HTTPException(422, f"account {account[:64]!r} is not a 0x-prefixed 20-byte hex address") from None
    if text[2:] != text[2:].lower() and text[2:] != text[2:].upper() and not Web3.is_checksum_address(text):
        raise HTTPException(422, f"account {account!r} has a wrong EIP-55 checksum (mistyped?)")
    return Web3.to_checksum_address(text.lower())


def create_claims_router(client: ChainClient, contracts: Contracts, store: ContentStore,
                         index: ClaimsIndex) -> APIRouter:
    router = APIRouter(prefix="/settlement", tags=["settlement"])

    @router.get("/accounts/{account}/claimable")
    def get_claimable(account: str) -> dict[str, Any]:
        """Unclaimed allocations across models and epochs, and the claimMany call that claims them all."""
        address = checked_address(account)
        items = claimable(client, contracts, store, address, index)
        return {
            "account": address,
            "total": str(sum(i.amount for i in items)),
            "items": [i.to_json() for i in items],
            "claim_many": None if not items else {
                "chain_id": client.chain_id,
                "to": contracts.settlement.address,
                "data": claim_many_calldata(contracts, items),
            },
        }

    @router.get("/accounts/{account}/claims")
    def get_claims(account: str) -> dict[str, Any]:
        """The account's past claims on the chain as it is now."""
        address = checked_address(account)
        past = claim_history(client, contracts, store, address)
        return {"account": address, "total": str(sum(c.amount for c in past)), "claims": [c.to_json() for c in past]}

    @router.get("/models/{model_id}/epochs/{epoch}/results")
    def get_results(model_id: int = ModelPath, epoch: int = EpochPath) -> dict[str, Any]:
        """The epoch's public results document (by the CID the chain holds now)."""
        found = [e for e in settled_epochs(client, contracts, store, model_id) if e.epoch == epoch]
        if not found:
            raise HTTPException(404, f"model {model_id} has no settled epoch {epoch}")
        try:
            document = json.loads(store.get(found[0].results_cid))
        except (LookupError, ValueError, RuntimeError) as exc:
            raise HTTPException(502, f"results {found[0].results_cid} are not in the content store: {exc}") from None
        return {"model_id": model_id, "epoch": epoch, "results_cid": found[0].results_cid,
                "payout_root": found[0].payout_root, "results": document}

    return router


__all__ = ["checked_address", "create_claims_router"]

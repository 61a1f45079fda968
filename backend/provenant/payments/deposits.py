"""Consumers' deposits into the usage escrow, with an EIP-2612 permit (one transaction)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount

from provenant.chain.client import ChainClient, TxResult
from provenant.chain.deploy import Contracts
from provenant.chain.typed_data import sign_typed, token_domain


def deposit_with_permit(
    client: ChainClient, contracts: Contracts, consumer: LocalAccount, model_id: int, amount: int,
    valid_for: int = 3600,
) -> TxResult:
    deadline = client.latest_timestamp() + valid_for
    nonce = int(client.call(contracts.token.functions.nonces(consumer.address)))
    message = {"owner": consumer.address, "spender": contracts.escrow.address, "value": amount,
               "nonce": nonce, "deadline": deadline}
    signature = sign_typed(consumer, token_domain(client.chain_id, contracts.token.address), "Permit", message)
    r, s, v = signature[:32], signature[32:64], signature[64]
    fn = contracts.escrow.functions.depositWithPermit(model_id, amount, deadline, v, r, s)
    return client.transact(consumer, fn)

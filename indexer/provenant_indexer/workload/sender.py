"""A fast transaction sender for tests and benchmarks on a devnet: local nonces, fixed gas,
raw JSON-RPC. ChainClient estimates gas and waits for each receipt (right for users, too slow to
make hundreds of thousands of events); here a burst is sent and receipts checked in one batch.

Nonces live in a dict the caller may snapshot and restore, so a test that rewinds the chain
(evm_revert, anvil_reorg) can rewind the sender with it.
"""

from __future__ import annotations

import time
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.contract.contract import ContractFunction

from provenant_indexer.rpc import JsonRpc

GAS = 6_000_000
FEE = 2_000_000_000  # far above anvil's base fee; only devnet ether is spent


class TxFailed(RuntimeError):
    pass


class Sender:
    def __init__(self, rpc: JsonRpc, chain_id: int) -> None:
        self.rpc = rpc
        self.chain_id = chain_id
        self.nonces: dict[str, int] = {}
        self.pending: list[tuple[str, str]] = []  # (tx hash, what) awaiting a receipt check
        self.logs_seen = 0  # logs in the receipts checked so far (the bench counts events with it)
        self.last_receipt: dict[str, Any] | None = None

    def _nonce(self, address: str) -> int:
        if address not in self.nonces:
            self.nonces[address] = int(self.rpc.call("eth_getTransactionCount", [address, "pending"]), 16)
        return self.nonces[address]

    def send(self, account: LocalAccount, fn: ContractFunction, *, wait: bool = True) -> str:
        """Sign and send `fn`; with `wait`, check its receipt now (anvil automines)."""
        return self.send_data(account, fn.address, fn._encode_transaction_data(), wait=wait,
                              what=f"{fn.fn_name} from {account.address}")

    def send_data(self, account: LocalAccount, to: str | None, data: str, *, gas: int = GAS, wait: bool = True,
                  what: str = "") -> str:
        """Sign and send raw calldata (`to` None: a contract creation)."""
        nonce = self._nonce(account.address)
        tx: dict[str, Any] = {"data": data, "value": 0, "gas": gas, "maxFeePerGas": FEE, "maxPriorityFeePerGas": 1,
                              "nonce": nonce, "chainId": self.chain_id, "type": 2}
        if to is not None:
            tx["to"] = to
        raw = account.sign_transaction(tx).raw_transaction
        tx_hash = self.rpc.call("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
        self.nonces[account.address] = nonce + 1
        what = what or f"call to {to} from {account.address}"
        if wait:
            self._check([(tx_hash, what)])
        else:
            self.pending.append((tx_hash, what))
        return str(tx_hash)

    def flush(self) -> None:
        """Check every receipt sent without waiting."""
        pending, self.pending = self.pending, []
        for i in range(0, len(pending), 500):
            self._check(pending[i : i + 500])

    def _check(self, sent: list[tuple[str, str]], timeout: float = 10.0) -> None:
        # anvil answers eth_sendRawTransaction before the automined block is stored: poll briefly.
        deadline = time.monotonic() + timeout
        while True:
            receipts = self.rpc.batch([("eth_getTransactionReceipt", [h]) for h, _ in sent])
            if all(r is not None for r in receipts) or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        for (tx_hash, what), receipt in zip(sent, receipts):
            if receipt is None:
                raise TxFailed(f"{what}: no receipt for {tx_hash} (is anvil automining?)")
            if int(receipt["status"], 16) != 1:
                raise TxFailed(f"{what}: reverted ({tx_hash})")
            self.logs_seen += len(receipt["logs"])
            self.last_receipt = receipt

    def forget_nonces(self) -> None:
        self.nonces.clear()


def eip712_digest(domain_separator: bytes, type_hash: bytes, encoded_fields: bytes) -> bytes:
    """keccak256(0x1901 || domain || keccak256(typehash || fields)): what the contracts recover."""
    return keccak(b"\x19\x01" + domain_separator + keccak(type_hash + encoded_fields))


def sign_digest(account: LocalAccount, digest: bytes) -> bytes:
    signed: Any = account.unsafe_sign_hash(digest)
    return bytes(signed.signature)

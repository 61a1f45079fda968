"""The chain client every other part uses: one signer-aware wrapper over web3.py.

It owns what each caller would otherwise get subtly wrong: checking the endpoint answers,
refusing dev keys off the devnet, local nonce management (so a burst of transactions from one
account needs no round trip per nonce), gas estimation that surfaces revert reasons *before*
anything is sent, receipt waits with a timeout, and reverts decoded into one-line errors naming
the contract, the function and the custom error.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError

from provenant.chain.errors import ChainError, ChainUnavailable, RevertDecoder, TransactionReverted
from provenant.chain.keys import check_key_allowed


@dataclass(frozen=True)
class TxResult:
    tx_hash: str
    block_number: int
    gas_used: int
    logs: list[Any]


class ChainClient:
    """A connection to one EVM chain by URL."""

    def __init__(self, rpc_url: str, *, request_timeout: float = 10.0, receipt_timeout: float = 60.0) -> None:
        self.rpc_url = rpc_url
        self.receipt_timeout = receipt_timeout
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout}))
        try:
            self.chain_id = int(self.w3.eth.chain_id)
        except Exception as exc:  # noqa: BLE001 - requests/aiohttp/OSError all mean "not reachable"
            raise ChainUnavailable(f"cannot reach the RPC endpoint {rpc_url}: {type(exc).__name__}") from None
        self._nonces: dict[str, int] = {}
        self._lock = threading.Lock()
        self.decoder = RevertDecoder({})
        self._contract_names: dict[str, str] = {}

    def register_abis(self, abis: dict[str, list[dict]], addresses: dict[str, str]) -> None:
        """Teach the client the project's ABIs so reverts decode into named errors."""
        self.decoder = RevertDecoder(abis)
        self._contract_names = {Web3.to_checksum_address(a): n for n, a in addresses.items()}

    def check_signer(self, account: LocalAccount) -> None:
        check_key_allowed(account, self.chain_id)

    # -- reads -------------------------------------------------------------------------
    def call(self, fn: ContractFunction, *, sender: str | None = None) -> Any:
        try:
            return fn.call({"from": sender} if sender else {})
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._reverted(fn, exc) from None
        except Web3RPCError as exc:
            raise ChainError(f"{self._name(fn)}.{fn.fn_name} call failed: {exc}") from None

    # -- writes ------------------------------------------------------------------------
    def transact(self, account: LocalAccount, fn: ContractFunction, *, value: int = 0) -> TxResult:
        """Estimate (surfacing reverts), sign, send and wait for one transaction."""
        self.check_signer(account)
        tx_params = {"from": account.address, "value": value, "chainId": self.chain_id}
        try:
            gas = fn.estimate_gas(tx_params)
        except (ContractCustomError, ContractLogicError) as exc:
            raise self._reverted(fn, exc) from None
        except Web3RPCError as exc:
            raise ChainError(f"{self._name(fn)}.{fn.fn_name} failed: {exc}") from None
        with self._lock:
            nonce = self._next_nonce(account.address)
            tx = fn.build_transaction({**tx_params, "gas": int(gas * 1.2) + 10_000, "nonce": nonce})
            signed = account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception as exc:
                self._nonces.pop(account.address, None)  # resync from the node next time
                raise ChainError(f"{self._name(fn)}.{fn.fn_name} could not be sent: {exc}") from None
            self._nonces[account.address] = nonce + 1
        return self._wait(fn, tx_hash)

    def deploy(self, account: LocalAccount, abi: list[dict], bytecode: str, *args: Any) -> tuple[str, TxResult]:
        """Deploy a contract; returns its address and the receipt."""
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        result = self.transact(account, factory.constructor(*args))
        receipt = self.w3.eth.get_transaction_receipt(result.tx_hash)
        return Web3.to_checksum_address(receipt["contractAddress"]), result

    def resync_nonce(self, address: str) -> None:
        """Forget the cached nonce of `address`; the next send asks the node (after a reorg or a lost send)."""
        with self._lock:
            self._nonces.pop(address, None)

    def _next_nonce(self, address: str) -> int:
        if address not in self._nonces:
            self._nonces[address] = self.w3.eth.get_transaction_count(address, "pending")
        return self._nonces[address]

    def _wait(self, fn: Any, tx_hash: bytes) -> TxResult:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=0.05
            )
        except TimeExhausted:
            raise ChainError(
                f"{self._name(fn)}.{getattr(fn, 'fn_name', 'constructor')}: no receipt for "
                f"0x{tx_hash.hex()} within {self.receipt_timeout:.0f} s"
            ) from None
        if receipt["status"] != 1:
            raise TransactionReverted(self._name(fn), getattr(fn, "fn_name", "constructor"), "reverted on chain")
        return TxResult(
            tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            logs=list(receipt["logs"]),
        )

    def _name(self, fn: Any) -> str:
        address = getattr(fn, "address", None)
        if address is None:
            return "constructor"
        return self._contract_names.get(Web3.to_checksum_address(address), address)

    def _reverted(self, fn: ContractFunction, exc: Exception) -> TransactionReverted:
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            reason = self.decoder.decode(data)
        else:
            reason = str(getattr(exc, "message", None) or exc)
        return TransactionReverted(self._name(fn), fn.fn_name, reason)

    # -- time --------------------------------------------------------------------------
    def latest_timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

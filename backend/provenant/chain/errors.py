"""Turning reverts into errors that name the contract, the function and the reason."""

from __future__ import annotations

from dataclasses import dataclass

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector


class ChainError(RuntimeError):
    """Any failure talking to the chain; the message is one line meant for a person."""


class ChainUnavailable(ChainError):
    """The RPC endpoint cannot be reached."""


class TransactionReverted(ChainError):
    """A call or transaction reverted; `reason` is the decoded custom error or message."""

    def __init__(self, contract: str, function: str, reason: str) -> None:
        super().__init__(f"{contract}.{function} reverted: {reason}")
        self.contract = contract
        self.function = function
        self.reason = reason


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]


def _abi_type(param: dict) -> str:
    if param["type"].startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){param['type'][5:]}"
    return param["type"]


class RevertDecoder:
    """Decodes revert data against the custom errors of every known contract ABI."""

    def __init__(self, abis: dict[str, list[dict]]) -> None:
        self._errors: dict[bytes, _ErrorAbi] = {}
        for abi in abis.values():
            for item in abi:
                if item.get("type") != "error":
                    continue
                types = tuple(_abi_type(p) for p in item["inputs"])
                selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
                self._errors[selector] = _ErrorAbi(item["name"], types)
        # Solidity's built-ins: Error(string) and Panic(uint256).
        self._errors[function_signature_to_4byte_selector("Error(string)")] = _ErrorAbi("Error", ("string",))
        self._errors[function_signature_to_4byte_selector("Panic(uint256)")] = _ErrorAbi("Panic", ("uint256",))

    def decode(self, data: str | bytes | None) -> str:
        if data is None:
            return "no revert data"
        raw = bytes.fromhex(data[2:] if data.startswith("0x") else data) if isinstance(data, str) else data
        if len(raw) < 4:
            return "reverted without a reason"
        found = self._errors.get(raw[:4])
        if found is None:
            return f"unknown error 0x{raw[:4].hex()}"
        try:
            values = decode(list(found.types), raw[4:])
        except Exception:  # noqa: BLE001 - malformed revert data is reported, not raised
            return f"{found.name}(<undecodable>)"
        if found.name == "Error":
            return str(values[0])
        rendered = ", ".join("0x" + v.hex() if isinstance(v, bytes) else str(v) for v in values)
        return f"{found.name}({rendered})"

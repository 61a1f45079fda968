"""Raw JSON-RPC over one keep-alive httpx connection, with the errors an indexer must tell apart.

- `RangeTooLarge`: the node refuses the eth_getLogs range ("range too large", "too many results",
  "limit exceeded", HTTP 413, or HTTP 429 on eth_getLogs): the caller halves the range.
- `TransientRpcError`: connection failures, timeouts, HTTP 5xx, HTTP 429 on other calls: retried
  here with exponential backoff before giving up.
- `RpcError`: anything else the node answers with (a bug or a misconfiguration): not retried.

Responses are parsed with orjson; no web3.py formatting is applied to them.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import httpx
import orjson

log = logging.getLogger("provenant_indexer.rpc")

_RANGE_ERROR = re.compile(
    r"range|too many|more than|limit|exceed|too large|response size|query timeout|max results", re.IGNORECASE
)


class RpcError(RuntimeError):
    """The node answered with an error that retrying will not fix."""


class TransientRpcError(RpcError):
    """The node could not be reached or failed temporarily."""


class RateLimited(TransientRpcError):
    """HTTP 429: retried with backoff, except by eth_getLogs, which shrinks its range instead."""


class RangeTooLarge(RpcError):
    """The node refused an eth_getLogs range (too many blocks or results, or rate limited)."""

    def __init__(self, message: str, *, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited

    def __reduce__(self) -> Any:  # picklable across the fetch process
        return _range_too_large, (str(self), self.rate_limited)


def _range_too_large(message: str, rate_limited: bool) -> RangeTooLarge:
    return RangeTooLarge(message, rate_limited=rate_limited)


@dataclass(frozen=True)
class Header:
    number: int
    hash: str
    parent_hash: str


@dataclass(frozen=True)
class Backoff:
    retries: int = 6
    base_s: float = 0.05
    max_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * (2**attempt))


class JsonRpc:
    """One endpoint; safe for one thread at a time (the indexer loop owns it)."""

    def __init__(self, url: str, *, timeout: float = 30.0, backoff: Backoff | None = None,
                 client: httpx.Client | None = None) -> None:
        self.url = url
        self.backoff = backoff or Backoff()
        self._http = client or httpx.Client(timeout=timeout, headers={"content-type": "application/json"})
        self._ids = itertools.count(1)  # thread-safe: the prefetch thread shares this client

    def close(self) -> None:
        self._http.close()

    # -- transport -------------------------------------------------------------------------
    def _post(self, payload: Any) -> Any:
        try:
            response = self._http.post(self.url, content=orjson.dumps(payload))
        except httpx.TransportError as exc:
            raise TransientRpcError(f"{self.url} unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code == 429:
            raise RateLimited(f"{self.url} rate limited (HTTP 429)")
        if response.status_code == 413:
            raise RangeTooLarge(f"{self.url} refused the request size (HTTP 413)")
        if response.status_code >= 500:
            raise TransientRpcError(f"{self.url} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise RpcError(f"{self.url} answered HTTP {response.status_code}: {response.text[:200]}")
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransientRpcError(f"{self.url} answered malformed JSON") from None

    @staticmethod
    def _result(method: str, answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise RpcError(f"{method}: malformed JSON-RPC answer")
        error = answer.get("error")
        if error is not None:
            message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
            code = error.get("code") if isinstance(error, dict) else None
            if method == "eth_getLogs" and (code == -32005 or _RANGE_ERROR.search(message)):
                raise RangeTooLarge(f"{method}: {message}")
            if code in (-32603, -32000) and "timeout" in message.lower():
                raise TransientRpcError(f"{method}: {message}")
            raise RpcError(f"{method}: {message} (code {code})")
        return answer.get("result")

    def _with_retries(self, what: str, attempt_fn: Any) -> Any:
        attempt = 0
        while True:
            try:
                return attempt_fn()
            except TransientRpcError as exc:
                if attempt >= self.backoff.retries:
                    raise
                delay = self.backoff.delay(attempt)
                log.warning("%s failed (%s); retry %d in %.2f s", what, exc, attempt + 1, delay)
                time.sleep(delay)
                attempt += 1

    # -- calls -------------------------------------------------------------------------------
    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        def once() -> Any:
            return self._result(method, self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                                                    "params": list(params)}))

        return self._with_retries(method, once)

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in the order of `calls`."""
        if not calls:
            return []

        def once() -> list[Any]:
            ids = [next(self._ids) for _ in calls]
            payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": list(p)} for i, (m, p) in zip(ids, calls)]
            answers = self._post(payload)
            if not isinstance(answers, list):
                # Some nodes answer a whole batch with one error object (e.g. rate limits).
                return [self._result(calls[0][0], answers)]
            by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
            return [self._result(m, by_id.get(i)) for i, (m, _) in zip(ids, calls)]

        return self._with_retries(f"batch of {len(calls)}", once)

    def chain_id(self) -> int:
        return int(self.call("eth_chainId"), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def headers(self, numbers: Sequence[int]) -> dict[int, Header | None]:
        """Block headers by number; None for a block the chain does not have (yet)."""
        results = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        out: dict[int, Header | None] = {}
        for n, block in zip(numbers, results):
            out[n] = Header(n, block["hash"], block["parentHash"]) if block else None
        return out

    def get_logs(self, from_block: int, to_block: int, addresses: Sequence[str]) -> list[dict[str, Any]]:
        """Raw logs; range errors surface as RangeTooLarge for the caller to shrink the range."""
        params = [{"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": list(addresses)}]

        def once() -> Any:
            try:
                answer = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": "eth_getLogs",
                                     "params": params})
            except RateLimited as exc:
                raise RangeTooLarge(str(exc), rate_limited=True) from None
            return self._result("eth_getLogs", answer)

        return self._with_retries("eth_getLogs", once)  # type: ignore[no-any-return]

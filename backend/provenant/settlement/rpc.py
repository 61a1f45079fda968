"""Retrying chain reads and connects, so that a node that blinks does not fail an epoch, and a
node that is gone fails it with one clear line instead of a stack of requests' internals.

Only transport failures are retried (connection refused or reset, timeouts): a revert or a
bad argument is an answer, and asking again would only hide it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from provenant.chain.client import ChainClient
from provenant.chain.errors import ChainError, ChainUnavailable

T = TypeVar("T")
log = logging.getLogger("provenant.settlement")

# requests' ConnectionError and Timeout are OSErrors; ChainUnavailable is how ChainClient reports them.
RETRYABLE: tuple[type[BaseException], ...] = (OSError, ChainUnavailable)


class RpcUnavailable(ChainError):
    """The RPC endpoint did not answer after every retry."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    first_delay_s: float = 0.25  # doubled after each failure: 0.25 + 0.5 + 1 = 1.75 s before giving up

    def delays(self) -> list[float]:
        return [self.first_delay_s * 2**i for i in range(self.attempts - 1)]


DEFAULT_RETRY = RetryPolicy()


def retrying(what: str, rpc_url: str, fn: Callable[[], T], policy: RetryPolicy = DEFAULT_RETRY) -> T:
    """fn(), retried on transport errors; RpcUnavailable naming the endpoint and `what` at the end."""
    last: BaseException | None = None
    for delay in [*policy.delays(), None]:
        try:
            return fn()
        except RETRYABLE as exc:
            last = exc
            if delay is None:
                break
            log.warning("RPC %s failed while %s (%s); retrying in %.2f s", rpc_url, what, type(exc).__name__, delay)
            time.sleep(delay)
    raise RpcUnavailable(
        f"RPC endpoint {rpc_url} did not answer while {what} after {policy.attempts} attempts "
        f"({type(last).__name__}); is the node running and the URL right?"
    )


def connect(rpc_url: str, policy: RetryPolicy = DEFAULT_RETRY) -> ChainClient:
    """A ChainClient, retrying the first contact (a service may start before its node)."""
    return retrying("connecting", rpc_url, lambda: ChainClient(rpc_url), policy)

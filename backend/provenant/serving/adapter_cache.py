"""Just-in-time adapter loading with an LRU cache under a memory budget, with pinning.

A request `acquire`s its model's adapter before it is queued and `release`s it when its last token
is out, so an adapter in use is never evicted: eviction picks the least recently used entry that is
neither in use nor pinned, and when every resident adapter is busy a new load waits (up to
`wait_s`) for one to be released instead of overrunning the budget. Loads run outside the cache
lock (fetching by CID and parsing takes milliseconds), one load per adapter at a time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from provenant.serving.lora import LoraWeights


class AdapterCacheFull(RuntimeError):
    """Every resident adapter is in use or pinned and the budget leaves no room (HTTP 503)."""


class AdapterBusy(RuntimeError):
    """An unload was asked for an adapter that is in use (HTTP 409)."""


@dataclass
class _Entry:
    weights: LoraWeights
    in_use: int = 0
    pinned: bool = False


@dataclass
class CacheStats:
    cold_loads: int = 0
    hits: int = 0
    evictions: list[tuple[int, int]] = field(default_factory=list)  # (model id, in_use at eviction)
    peak_bytes: int = 0
    load_seconds: list[float] = field(default_factory=list)


class AdapterCache:
    def __init__(self, loader: Callable[[int], LoraWeights], budget_bytes: int, wait_s: float = 60.0) -> None:
        self._loader = loader
        self.budget_bytes = budget_bytes
        self.wait_s = wait_s
        self._entries: "OrderedDict[int, _Entry]" = OrderedDict()  # least recently used first
        self._cond = threading.Condition()
        self._load_locks: dict[int, threading.Lock] = {}
        self.stats = CacheStats()

    @property
    def resident_bytes(self) -> int:
        return sum(e.weights.nbytes for e in self._entries.values())

    def acquire(self, model_id: int) -> LoraWeights:
        """The adapter's weights, marked in use until `release(model_id)`."""
        return self._get(model_id, use=True)

    def release(self, model_id: int) -> None:
        with self._cond:
            entry = self._entries[model_id]
            entry.in_use -= 1
            self._cond.notify_all()

    def load(self, model_id: int, pin: bool = False) -> LoraWeights:
        """Load (or touch) an adapter without using it; optionally pin it."""
        weights = self._get(model_id, use=False)
        if pin:
            self.pin(model_id, True)
        return weights

    def pin(self, model_id: int, pinned: bool) -> None:
        with self._cond:
            if model_id not in self._entries:
                raise KeyError(f"adapter of model {model_id} is not loaded")
            self._entries[model_id].pinned = pinned
            self._cond.notify_all()

    def unload(self, model_id: int) -> bool:
        """Drop an adapter now (unpinning it); False when it was not loaded."""
        with self._cond:
            entry = self._entries.get(model_id)
            if entry is None:
                return False
            if entry.in_use:
                raise AdapterBusy(f"adapter of model {model_id} is serving {entry.in_use} request(s)")
            del self._entries[model_id]
            self._cond.notify_all()
            return True

    def snapshot(self) -> list[dict[str, object]]:
        with self._cond:
            return [{"model_id": k, "bytes": e.weights.nbytes, "in_use": e.in_use, "pinned": e.pinned}
                    for k, e in self._entries.items()]

    # -- internals ------------------------------------------------------------------------
    def _hit(self, model_id: int, use: bool) -> LoraWeights | None:
        entry = self._entries.get(model_id)
        if entry is None:
            return None
        self._entries.move_to_end(model_id)
        entry.in_use += 1 if use else 0
        return entry.weights

    def _get(self, model_id: int, use: bool) -> LoraWeights:
        with self._cond:
            weights = self._hit(model_id, use)
            if weights is not None:
                self.stats.hits += 1
                return weights
            load_lock = self._load_locks.setdefault(model_id, threading.Lock())
        with load_lock:  # one load per adapter; others wait here, then find it resident
            with self._cond:
                weights = self._hit(model_id, use)
                if weights is not None:
                    self.stats.hits += 1
                    return weights
            started = time.perf_counter()
            weights = self._loader(model_id)  # fetch by CID, check hash, parse: outside the lock
            self.stats.load_seconds.append(time.perf_counter() - started)
            with self._cond:
                self._make_room(weights.nbytes)
                self._entries[model_id] = _Entry(weights=weights, in_use=1 if use else 0)
                self.stats.cold_loads += 1
                self.stats.peak_bytes = max(self.stats.peak_bytes, self.resident_bytes)
                return weights

    def _make_room(self, nbytes: int) -> None:
        """Evict idle, unpinned adapters (LRU first) until nbytes fit; wait while all are busy."""
        if nbytes > self.budget_bytes:
            raise AdapterCacheFull(f"adapter of {nbytes} bytes exceeds the cache budget of {self.budget_bytes}")
        deadline = time.monotonic() + self.wait_s
        while self.resident_bytes + nbytes > self.budget_bytes:
            victim = next((k for k, e in self._entries.items() if e.in_use == 0 and not e.pinned), None)
            if victim is not None:
                self.stats.evictions.append((victim, self._entries[victim].in_use))
                del self._entries[victim]
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise AdapterCacheFull("every cached adapter is in use or pinned; try again shortly")
            self._cond.wait(timeout=left)

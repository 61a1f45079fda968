"""Serving limits and knobs, read once at start-up (env vars override the defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class ServingSettings:
    adapter_budget_bytes: int = 256 * 1024 * 1024  # LRU budget of resident LoRA adapters
    adapter_wait_s: float = 60.0  # how long a cold load waits for a busy cache to free room
    max_batch: int = 32  # rows per forward pass
    max_wait_s: float = 0.005  # how long the batcher waits for more requests to join a batch
    max_new_tokens: int = 256  # per request
    max_prompt_chars: int = 8_000
    max_body_bytes: int = 64 * 1024
    rate_per_s: float = 20.0  # per consumer (token bucket refill)
    rate_burst: int = 40
    # Bearer token of the admin endpoints (load/unload/pin). None: the admin API is disabled.
    # Never logged, never echoed in errors; `repr=False` keeps it out of reprs and tracebacks.
    admin_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, **overrides: object) -> "ServingSettings":
        values: dict[str, object] = {
            "adapter_budget_bytes": int(_env_float("PROVENANT_ADAPTER_BUDGET_MB", 256) * 1024 * 1024),
            "max_batch": int(_env_float("PROVENANT_MAX_BATCH", 32)),
            "max_new_tokens": int(_env_float("PROVENANT_MAX_NEW_TOKENS", 256)),
            "rate_per_s": _env_float("PROVENANT_RATE_PER_S", 20.0),
            "rate_burst": int(_env_float("PROVENANT_RATE_BURST", 40)),
            "admin_token": os.environ.get("PROVENANT_ADMIN_TOKEN") or None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

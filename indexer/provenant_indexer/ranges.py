"""The eth_getLogs block range: halve when the node refuses, grow back after successes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveRange:
    start: int = 2_000
    maximum: int = 2_000
    minimum: int = 1
    grow_after: int = 3  # consecutive successes before doubling
    size: int = field(init=False)
    _successes: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.start <= self.maximum:
            raise ValueError(f"need 1 <= minimum <= start <= maximum, got {self.minimum}, {self.start}, {self.maximum}")
        self.size = self.start

    def refused(self) -> bool:
        """The node refused the current size: halve it. False when it cannot shrink further."""
        self._successes = 0
        if self.size <= self.minimum:
            return False
        self.size = max(self.minimum, self.size // 2)
        return True

    def succeeded(self) -> None:
        self._successes += 1
        if self._successes >= self.grow_after and self.size < self.maximum:
            self.size = min(self.maximum, self.size * 2)
            self._successes = 0

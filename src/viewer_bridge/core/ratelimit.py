"""A token bucket, sans I/O: how many messages a client may send, with the clock passed in.

Each client gets ``rate`` tokens per second up to ``burst``; a message takes
one. The burst must cover the viewer's reconnect flush (it queues up to 256
messages while disconnected and sends them at once), so the default burst is
larger than that.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """``allow(now)`` spends a token if one is available and says whether it did."""

    __slots__ = ("_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def allow(self, now: float) -> bool:
        tokens = self._tokens
        if tokens < self.burst:
            elapsed = now - self._updated
            if elapsed > 0:
                tokens = min(self.burst, tokens + elapsed * self.rate)
        self._updated = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

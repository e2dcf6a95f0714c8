"""A token bucket, sans I/O: how much a client may send, with the clock passed in.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second.
The bridge keeps two per client (see :mod:`viewer_bridge.core.connection`):

* a *message* bucket, one token per accepted message, whose excess is
  dropped and reported: a velocity command that arrives late is worse than
  one that never arrives, so excess commands are not queued;
* a *work* bucket, charged for every frame before it is parsed (more for big
  or malformed ones), which may run into debt down to ``floor``: a client in
  debt is not read until the debt is repaid, so the cost a flood can put on
  the event loop is bounded by the refill rate.

The default message burst covers the viewer's reconnect flush (it queues up
to 256 messages while disconnected and sends them at once).
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """``allow(now)`` spends one token if there is one; ``charge(cost, now)`` spends regardless, into debt."""

    __slots__ = ("_tokens", "_updated", "burst", "floor", "rate")

    def __init__(self, rate: float, burst: float, now: float, floor: float = 0.0, start: float | None = None) -> None:
        """``start`` is the level at ``now`` (``burst`` if None): a bucket need not start full."""
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be a finite number >= 1, got {burst!r}")
        if not (math.isfinite(floor) and floor <= 0):
            raise ValueError(f"floor must be a finite number <= 0, got {floor!r}")
        self.rate = rate
        self.burst = burst
        self.floor = floor
        if start is not None and not (math.isfinite(start) and floor <= start <= burst):
            raise ValueError(f"start must be a finite number between floor and burst, got {start!r}")
        self._tokens = burst if start is None else start
        self._updated = now

    def level(self, now: float) -> float:
        """Tokens available at ``now`` (negative while in debt)."""
        tokens = self._tokens
        if tokens < self.burst:
            elapsed = now - self._updated
            if elapsed > 0:
                tokens = min(self.burst, tokens + elapsed * self.rate)
        return tokens

    # allow() and charge() run for every frame, so they repeat level()'s arithmetic inline.

    def allow(self, now: float) -> bool:
        """Spend one token if one is available; say whether it was."""
        tokens = self._tokens
        if tokens < self.burst:
            tokens += (now - self._updated) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        self._updated = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False

    def charge(self, cost: float, now: float) -> float:
        """Spend ``cost`` tokens whatever the level, down to ``floor``; returns the new level."""
        tokens = self._tokens
        if tokens < self.burst:
            tokens += (now - self._updated) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        tokens -= cost
        if tokens < self.floor:
            tokens = self.floor
        self._tokens = tokens
        self._updated = now
        return tokens

    def time_until(self, level: float, now: float) -> float:
        """Seconds from ``now`` until the bucket holds ``level`` tokens (0 if it already does)."""
        missing = min(level, self.burst) - self.level(now)
        return missing / self.rate if missing > 0 else 0.0

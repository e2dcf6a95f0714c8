"""A client's link, sans I/O: its round-trip time, the speed it may drive at, and whether a command is stale.

A driver on a bad link drives on old information: by the time its command
arrives the robot has moved on, and its release may be late by as much. So
the bridge pings each client (WebSocket ping frames, which every client
answers, the viewer included) about once a second and scales what it may
command by a curve of the round-trip time:

* up to ``full_speed_rtt``: full speed (factor 1);
* from there to ``slow_rtt``: linearly down to ``min_factor``;
* beyond ``slow_rtt``: ``min_factor``, up to ``max_rtt``;
* beyond ``max_rtt``, or while a ping has been unanswered that long:
  refused (``link_too_slow``).

An unanswered ping counts as a round trip at least as long as it has been
out, so a link that dies is slowed down and then refused without waiting
for an answer that will not come.

Commands that carry a send time (``timestamp_ms``, which the bridge's own
clients add) are also checked for age. The client's clock is not the
bridge's, so the age is measured against the best the link has done: the
smallest (arrival - send time) among recent commands is taken as the clock
offset plus the fastest delivery (about half a round trip), and a command
that took ``max_command_age`` longer than that is ``stale``: it sat in a
queue somewhere and must not move the robot now.

Times are seconds on the server's monotonic clock, passed in; the one
wall-clock reading (for ``timestamp_ms``) is passed in too.
"""

from __future__ import annotations

import collections
import math
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["LinkLimits", "LinkMonitor"]

_PING: Final = struct.Struct(">2sQ")  # b"vb" + sequence number: told apart from other pings' answers
_MAGIC: Final = b"vb"
# How many recent commands the clock-offset estimate looks back over.
_OFFSET_WINDOW: Final = 64


@dataclass(frozen=True)
class LinkLimits:
    """The speed curve and the staleness bound (see the module docstring); ``enabled=False`` turns both off."""

    enabled: bool = True
    full_speed_rtt: float = 0.15
    slow_rtt: float = 0.6
    min_factor: float = 0.3
    max_rtt: float = 1.5
    max_command_age: float = 0.5
    ping_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("full_speed_rtt", "slow_rtt", "max_rtt", "max_command_age", "ping_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not self.full_speed_rtt < self.slow_rtt <= self.max_rtt:
            raise ValueError(
                "link speeds must satisfy full_speed_rtt < slow_rtt <= max_rtt, got "
                f"{self.full_speed_rtt} / {self.slow_rtt} / {self.max_rtt}"
            )
        if not (math.isfinite(self.min_factor) and 0 < self.min_factor <= 1):
            raise ValueError(f"min_factor must be in (0, 1], got {self.min_factor!r}")

    def factor_for(self, rtt: float) -> float | None:
        """The speed factor for a round-trip time, or None when driving is refused."""
        if rtt > self.max_rtt:
            return None
        if rtt <= self.full_speed_rtt:
            return 1.0
        if rtt >= self.slow_rtt:
            return self.min_factor
        span = (rtt - self.full_speed_rtt) / (self.slow_rtt - self.full_speed_rtt)
        return 1.0 - span * (1.0 - self.min_factor)


class LinkMonitor:
    """One client's pings, round-trip time and command ages."""

    __slots__ = ("_deltas", "_factor", "_next_ping", "_out", "_seq", "limits", "rtt")

    def __init__(self, limits: LinkLimits, now: float) -> None:
        self.limits = limits
        self.rtt: float | None = None  # the last measured round trip
        self._out: tuple[bytes, float] | None = None  # the unanswered ping and when it went out
        self._next_ping = now
        self._seq = 0
        self._deltas: collections.deque[float] = collections.deque(maxlen=_OFFSET_WINDOW)
        # The factor for the last measured round trip, while no ping is out (asked for every twist).
        self._factor: float | None = 1.0

    def ping_due(self, now: float) -> bytes | None:
        """The payload of a ping to send now, or None (one is out, or the last was too recent)."""
        if self._out is not None or now < self._next_ping:
            return None
        self._seq += 1
        payload = _PING.pack(_MAGIC, self._seq)
        self._out = (payload, now)
        return payload

    def pong(self, payload: bytes, now: float) -> bool:
        """An answer arrived; True if it was to our outstanding ping (a round trip was measured)."""
        out = self._out
        if out is None or payload != out[0]:
            return False
        self.rtt = now - out[1]
        self._out = None
        self._factor = self.limits.factor_for(self.rtt) if self.limits.enabled else 1.0
        self._next_ping = out[1] + self.limits.ping_interval
        return True

    def estimate(self, now: float) -> float | None:
        """The round trip to go by: the last measured, or longer if a ping has been out longer than that."""
        rtt = self.rtt
        if self._out is None:
            return rtt
        waiting = now - self._out[1]
        return waiting if rtt is None else max(rtt, waiting)

    def factor(self, now: float) -> float | None:
        """The speed factor now (1.0 when off or not yet measured), or None: the link is too slow to drive."""
        if self._out is None:
            return self._factor
        if not self.limits.enabled:
            return 1.0
        rtt = self.estimate(now)
        return 1.0 if rtt is None else self.limits.factor_for(rtt)

    def command_age(self, timestamp_ms: float, wall: float) -> float:
        """How much longer than the link's best a command sent at ``timestamp_ms`` took to arrive (seconds)."""
        delta = wall - timestamp_ms / 1000.0
        deltas = self._deltas
        deltas.append(delta)
        best = min(deltas)
        return delta - best + (self.rtt or 0.0) / 2.0

    def stale(self, timestamp_ms: float, wall: float) -> float | None:
        """The command's age if it is over ``max_command_age`` (refuse it), else None."""
        if not self.limits.enabled:
            return None
        age = self.command_age(timestamp_ms, wall)
        return age if age > self.limits.max_command_age else None

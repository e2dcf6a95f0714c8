"""The cmd_vel mux rules, sans I/O: teleop pre-empts navigation.

Every input takes the time and returns a :class:`MuxOutcome` saying what to
publish, so the boundaries are tested with a fake clock. The wiring (streams,
transports, the event loop) is :class:`viewer_bridge.bus.mux.MuxNode`.

The rules, and why:
* A person driving wins. While teleop commands keep coming, and for
  ``cooldown`` seconds after the last one, navigation commands are dropped:
  a planner must not steer against someone avoiding an obstacle by hand, and
  the cooldown bridges the viewer's key-repeat gaps (~0.6 s).
* Taking over tells navigation. When teleop takes control from navigation
  (any teleop command after the cooldown ran out), ``stop_movement`` is
  published first so the planner cancels its goal instead of fighting on
  when the cooldown ends. The bridge already sends one when a person starts
  driving; the mux does not send a second for the same takeover.
* A teleop stop is forwarded. The bridge publishes exactly one zero when a
  drive ends (key release, stop, deadman, disconnect); the mux passes it on
  and holds navigation off for the cooldown after it, so the robot stops
  rather than lurching straight into the planner's last plan.
* A stale teleop zero is not. A zero arriving after navigation has taken
  over again (a deadman longer than the cooldown) would only interrupt it.
* Navigation resumes by itself: the first navigation command after the
  cooldown passes. Nothing old is replayed.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Final

from viewer_bridge.core.messages import Twist

__all__ = ["CmdVelMux", "MuxOutcome", "Source"]


class Source(enum.Enum):
    """Who last commanded the output."""

    NONE = "none"
    TELEOP = "teleop"
    NAV = "nav"


@dataclass(frozen=True, slots=True)
class MuxOutcome:
    """What one input led to: publish ``stop_movement`` (if set) and then ``cmd_vel`` (if not None)."""

    cmd_vel: Twist | None = None
    stop_movement: bool = False
    took_over: bool = False
    """Teleop took control (from navigation, or from nobody)."""
    resumed: bool = False
    """Navigation has control again after teleop."""
    dropped: bool = False
    """The input was suppressed (navigation during teleop, or a stale teleop zero)."""
    rejected: str | None = None
    """Why an input was refused outright (e.g. non-finite values)."""


_DROPPED: Final = MuxOutcome(dropped=True)


class CmdVelMux:
    """The mux's state machine. Times are seconds on any monotonic clock, passed in."""

    def __init__(self, cooldown: float = 1.0) -> None:
        if not (math.isfinite(cooldown) and cooldown >= 0):
            raise ValueError(f"cooldown must be a finite number >= 0, got {cooldown!r}")
        self.cooldown = cooldown
        self.source = Source.NONE
        self._teleop_until = -math.inf

    def teleop_active(self, now: float) -> bool:
        """Whether teleop holds the output at ``now`` (a command within the last ``cooldown`` s)."""
        return now < self._teleop_until

    def teleop(self, twist: Twist, now: float) -> MuxOutcome:
        """A command from the bridge's teleop stream."""
        if not twist.is_finite():
            return MuxOutcome(dropped=True, rejected="non_finite")
        active = self.teleop_active(now)
        if twist.is_zero():
            if not active and self.source is not Source.TELEOP:
                return _DROPPED
            self._teleop_until = now + self.cooldown
            self.source = Source.TELEOP
            return MuxOutcome(cmd_vel=twist)
        self._teleop_until = now + self.cooldown
        self.source = Source.TELEOP
        if active:
            return MuxOutcome(cmd_vel=twist)
        return MuxOutcome(cmd_vel=twist, stop_movement=True, took_over=True)

    def nav(self, twist: Twist, now: float) -> MuxOutcome:
        """A command from navigation."""
        if not twist.is_finite():
            return MuxOutcome(dropped=True, rejected="non_finite")
        if self.teleop_active(now):
            return _DROPPED
        resumed = self.source is Source.TELEOP
        self.source = Source.NAV
        return MuxOutcome(cmd_vel=twist, resumed=resumed)

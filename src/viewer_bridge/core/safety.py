"""Velocity safety, sans I/O: limits, the driver lease, the deadman, and republishing.

:class:`SafetyController` is a state machine. Every method takes the current
time as an argument (seconds on any monotonic clock) and returns what must be
published, so the rules can be tested to the exact boundary with a fake
clock. The server wires it to a real clock and a timer (see
:meth:`SafetyController.next_deadline`).

The rules, and why:

* One driver at a time. The first client to send a non-zero twist holds the
  lease; other clients' twists are refused (``not_driver``) until it stops,
  disconnects or falls silent. Two people steering one robot at once is
  never what either of them meant.
* Anyone may stop. An explicit ``stop`` from any client publishes one zero
  and ends the lease at once: an emergency stop must not need permission.
* A deadman on silence and on disconnect. The viewer sends twists only while
  a key is held and may vanish without a close frame; if the driver's last
  command was non-zero and nothing refreshes it for ``deadman_timeout``
  seconds, or its connection ends, one zero is published.
* After a stop, silence. A constant stream of zeros froze a real robot's
  controller (DimOS's finding), so exactly one zero ends each drive and
  nothing more is sent until somebody drives again.
* Limits before publishing: each axis is scaled then clamped; clamps are
  counted. Non-finite input is refused whole, never clamped into range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

from viewer_bridge.core.messages import Bool, Twist, Vector3

__all__ = ["AXES", "Limits", "SafetyController", "StopCause"]

AXES: Final = ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z")

ClientId = Hashable


class StopCause:
    """Why a zero twist was published; used for logs and metric labels."""

    STOP: Final = "stop"
    RELEASE: Final = "zero_twist"
    DEADMAN: Final = "deadman"
    DISCONNECT: Final = "disconnect"
    SHUTDOWN: Final = "shutdown"


@dataclass(frozen=True)
class Limits:
    """Per-axis scale factors and absolute clamps (``None`` = no clamp)."""

    scale: tuple[float, float, float, float, float, float] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    clamp: tuple[float | None, float | None, float | None, float | None, float | None, float | None] = (
        None,
        None,
        None,
        None,
        None,
        None,
    )

    def __post_init__(self) -> None:
        for axis, value in zip(AXES, self.scale, strict=True):
            if not math.isfinite(value):
                raise ValueError(f"scale for {axis} must be finite, got {value!r}")
        for axis, limit in zip(AXES, self.clamp, strict=True):
            if limit is not None and not (math.isfinite(limit) and limit >= 0):
                raise ValueError(f"max_{axis} must be a finite number >= 0, got {limit!r}")

    @property
    def is_identity(self) -> bool:
        return all(s == 1.0 for s in self.scale) and all(c is None for c in self.clamp)

    def apply(self, twist: Twist) -> tuple[Twist, bool]:
        """Scale then clamp every axis; returns the result and whether anything was clamped."""
        values = (*twist.linear, *twist.angular)
        out: list[float] = []
        clamped = False
        for value, scale, limit in zip(values, self.scale, self.clamp, strict=True):
            value *= scale
            if limit is not None:
                if value > limit:
                    value, clamped = limit, True
                elif value < -limit:
                    value, clamped = -limit, True
            out.append(value)
        return Twist(Vector3(out[0], out[1], out[2]), Vector3(out[3], out[4], out[5])), clamped


Emit = Callable[[str, "Twist | Bool"], object]
EventSink = Callable[[str, ClientId | None], object]

_ZERO: Final = Twist.zero()
_STOP_MOVEMENT: Final = Bool(True)


class SafetyController:
    """The arbitration and deadman state machine for ``tele_cmd_vel``.

    What it decides to publish goes to ``emit(stream, message)``, in order,
    during the call that decided it. Rare happenings (a driver taking or
    losing the lease, and why) go to ``on_event(kind, client)`` with ``kind``
    one of ``"lease"`` or a :class:`StopCause` value. Counters for metrics are
    plain attributes.

    ``deadman_timeout`` is how long a non-zero command stays valid without a
    refresh; ``republish_hz`` (0 = off) re-sends the current command at that
    rate while it is valid, for bases whose own watchdog is shorter than the
    gaps between the viewer's key repeats.

    ``stop_movement=False`` never emits ``stop_movement`` (a DimOS 0.0.15
    stack's MovementManager announces it); ``idle_stop=True`` makes a stop
    while nobody drives emit one zero too, as DimOS 0.0.15 does.
    """

    def __init__(
        self,
        emit: Emit,
        *,
        deadman_timeout: float = 1.0,
        republish_hz: float = 0.0,
        limits: Limits | None = None,
        on_event: EventSink | None = None,
        stop_movement: bool = True,
        idle_stop: bool = False,
    ) -> None:
        if not (math.isfinite(deadman_timeout) and deadman_timeout > 0):
            raise ValueError(f"deadman_timeout must be a finite number > 0, got {deadman_timeout!r}")
        if not (math.isfinite(republish_hz) and republish_hz >= 0):
            raise ValueError(f"republish_hz must be a finite number >= 0, got {republish_hz!r}")
        self._emit = emit
        self._on_event = on_event
        self._stop_movement = stop_movement
        self._idle_stop = idle_stop
        self.deadman_timeout = deadman_timeout
        self.republish_period = 1.0 / republish_hz if republish_hz > 0 else 0.0
        self.limits = limits or Limits()
        self._identity = self.limits.is_identity
        self.driver: ClientId | None = None
        self.command: Twist | None = None  # the non-zero command in force, if any
        self.last_command_at = -math.inf
        self._next_republish = math.inf
        # Counters, read by the metrics endpoint.
        self.clamped = 0
        self.lease_changes = 0
        self.stops: dict[str, int] = {}

    # -- inputs -----------------------------------------------------------

    def twist(self, client: ClientId, twist: Twist, now: float) -> str | None:
        """A twist from ``client`` at ``now``. Returns a rejection reason, or None if accepted."""
        lin, ang = twist.linear, twist.angular
        total = lin.x + lin.y + lin.z + ang.x + ang.y + ang.z
        # NaN or infinity anywhere makes the sum non-finite (so does an
        # overflowing sum of huge values, which the precise check then clears).
        if total - total != 0.0 and not twist.is_finite():
            return "non_finite"
        driver = self.driver
        if driver is not None and driver != client:
            return "not_driver"
        if not self._identity:
            twist, clamped = self.limits.apply(twist)
            if clamped:
                self.clamped += 1
            lin, ang = twist.linear, twist.angular
        if not (lin.x or lin.y or lin.z or ang.x or ang.y or ang.z):
            if driver is not None:
                self._halt(StopCause.RELEASE)
            # With nobody driving, a zero would only add to a stream of zeros
            # that must not happen: nothing is published.
            return None
        if driver is None:
            self.driver = client
            self.lease_changes += 1
            if self._on_event is not None:
                self._on_event("lease", client)
            if self._stop_movement:
                self._emit("stop_movement", _STOP_MOVEMENT)
        self.command = twist
        self.last_command_at = now
        if self.republish_period:
            self._next_republish = now + self.republish_period
        self._emit("tele_cmd_vel", twist)
        return None

    def stop(self, client: ClientId, now: float) -> None:
        """An explicit ``stop`` from any client: honoured at once."""
        if self.driver is not None:
            self._halt(StopCause.STOP)
        elif self._idle_stop:
            self.stops[StopCause.STOP] = self.stops.get(StopCause.STOP, 0) + 1
            self._emit("tele_cmd_vel", _ZERO)

    def disconnect(self, client: ClientId, now: float) -> None:
        """``client``'s connection ended, however it ended."""
        if self.driver is not None and self.driver == client:
            self._halt(StopCause.DISCONNECT)

    def shutdown(self, now: float) -> None:
        """The bridge is going away: stop whoever is driving."""
        if self.driver is not None:
            self._halt(StopCause.SHUTDOWN)

    def tick(self, now: float) -> None:
        """Advance time: fire the deadman or a republish if due."""
        if self.driver is None:
            return
        # Compared as an absolute deadline, the same sum next_deadline() reports,
        # so a timer armed for that deadline always finds the deadman due.
        if now >= self.last_command_at + self.deadman_timeout:
            self._halt(StopCause.DEADMAN)
            return
        if self.command is not None and now >= self._next_republish:
            # Keep phase with the schedule, but never queue a burst of catch-ups.
            self._next_republish += self.republish_period
            if self._next_republish <= now:
                self._next_republish = now + self.republish_period
            self._emit("tele_cmd_vel", self.command)

    def next_deadline(self) -> float | None:
        """The next time :meth:`tick` may have something to do, or ``None``."""
        if self.driver is None:
            return None
        deadline = self.last_command_at + self.deadman_timeout
        if self.republish_period and self._next_republish < deadline:
            return self._next_republish
        return deadline

    # -- internals --------------------------------------------------------

    def _halt(self, cause: str) -> None:
        previous = self.driver
        self.driver = None
        self.command = None
        self.last_command_at = -math.inf
        self._next_republish = math.inf
        self.stops[cause] = self.stops.get(cause, 0) + 1
        self.lease_changes += 1
        self._emit("tele_cmd_vel", _ZERO)
        if self._on_event is not None:
            self._on_event(cause, previous)

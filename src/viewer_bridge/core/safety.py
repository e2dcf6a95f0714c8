"""Velocity safety, sans I/O: limits, the driver lease, the deadman, and republishing.

:class:`SafetyController` is a state machine. Every method takes the current
time as an argument (seconds on the server's monotonic clock) and returns a
:class:`Decision`: what to publish, in order, and why. Nothing is called back,
so the rules can be tested to the exact boundary with a fake clock. The
server arms a timer for :meth:`SafetyController.next_deadline`, and hands each
command's :attr:`Decision.expires` to the watchdog that publishes the zero
itself if the server is too late to (see :mod:`viewer_bridge.bus.watchdog`).

The rules, and why:

* One driver at a time. The first client to send a non-zero twist holds the
  lease; other clients' twists are refused (``not_driver``) until it stops,
  disconnects or falls silent. Two people steering one robot at once is
  never what either of them meant.
* Anyone may stop, and every explicit stop acts. A ``stop`` from any client
  publishes one zero and ends the lease at once, whoever drives or nobody:
  after a bridge restart, or with another command source on the robot's
  bus, the operator's stop must still reach the robot.
* A stop lasts until the driver lets go. When someone else stops the driver
  (or an e-stop is latched), the driver's continuing twists are refused
  (``stopped_by_other``) until it releases: a ``stop``, a zero twist, or
  silence past the deadman. Otherwise the next key repeat would take the
  lease straight back and drive on.
* A latched e-stop holds until someone clears it: one zero at once, the
  ``estop`` stream set, and every twist refused (``estopped``), whoever
  latched it and whether or not they are still connected.
* A deadman on silence and on disconnect. The viewer sends twists only while
  a key is held and may vanish without a close frame; if the driver's last
  command was non-zero and nothing refreshes it for ``deadman_timeout``
  seconds, or its connection ends, one zero is published. A command that
  arrives after its predecessor lapsed starts a new drive (the zero for the
  old one comes first), however late the timer is.
* After a stop, silence. A constant stream of zeros froze a real robot's
  controller (DimOS's finding), so exactly one zero ends each drive and
  nothing more is sent until somebody drives again.
* Limits before publishing: each axis is scaled then clamped; clamps are
  counted. Non-finite input is refused whole (never clamped into range), and
  finiteness is checked again on the result, so a finite input that a scale
  pushes past the float range is refused too: nothing non-finite is ever
  published.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgspec

from viewer_bridge.core.messages import Bool, Message, Twist, Vector3

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.config import BridgeConfig

__all__ = ["AXES", "Cause", "Decision", "Limits", "Refused", "SafetyController", "SafetySnapshot"]

# The six velocity axes, in wire order: the one definition settings, limits and clients use.
AXES: Final = ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z")

ClientId = Hashable


class Cause(enum.StrEnum):
    """Why a drive ended (and one zero twist was published); used in logs and metric labels."""

    STOP = "stop"
    ESTOP = "estop"
    RELEASE = "release"
    DEADMAN = "deadman"
    DISCONNECT = "disconnect"
    SHUTDOWN = "shutdown"


class Refused(enum.StrEnum):
    """Why a twist was not accepted; the values are the protocol's error reasons."""

    NON_FINITE = "non_finite"
    NOT_DRIVER = "not_driver"
    STOPPED_BY_OTHER = "stopped_by_other"
    ESTOPPED = "estopped"


@dataclass(frozen=True)
class Limits:
    """Per-axis scale factors and absolute clamps (``None`` = no clamp), in :data:`AXES` order."""

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
                raise ValueError(f"scale_{axis} must be finite, got {value!r}")
        for axis, limit in zip(AXES, self.clamp, strict=True):
            if limit is not None and not (math.isfinite(limit) and limit >= 0):
                raise ValueError(f"max_{axis} must be a finite number >= 0, got {limit!r}")

    @classmethod
    def from_config(cls, config: BridgeConfig) -> Limits:
        """The ``scale_<axis>`` and ``max_<axis>`` settings."""
        scale = tuple(float(getattr(config, f"scale_{axis}")) for axis in AXES)
        clamp = tuple(getattr(config, f"max_{axis}") for axis in AXES)
        return cls(scale, clamp)  # type: ignore[arg-type]

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


TELE_CMD_VEL: Final = "tele_cmd_vel"
STOP_MOVEMENT: Final = "stop_movement"
ESTOP: Final = "estop"
_ZERO: Final = Twist.zero()
_STOP_MOVEMENT: Final = Bool(True)
_LATCHED: Final = Bool(True)
_CLEARED: Final = Bool(False)

Publish = tuple[str, Message]


def _finite(twist: Twist) -> bool:
    lin, ang = twist.linear, twist.angular
    total = lin.x + lin.y + lin.z + ang.x + ang.y + ang.z
    # NaN or infinity anywhere makes the sum non-finite (so does an overflowing
    # sum of huge values, which the precise check then clears).
    return total - total == 0.0 or twist.is_finite()


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What one input led to.

    ``publish`` lists ``(stream, message)`` pairs to publish, in order.
    ``expires`` is when the command just published lapses unless refreshed
    (``None`` when nothing non-zero was published). ``started`` names the
    client that took the lease with this input; ``ended`` says why a drive
    ended with it, and ``previous`` who was driving. ``by`` names who is
    to blame for a refusal (who stopped the driver, who latched the e-stop).
    """

    publish: tuple[Publish, ...] = ()
    refused: Refused | None = None
    expires: float | None = None
    started: ClientId | None = None
    ended: Cause | None = None
    previous: ClientId | None = None
    by: ClientId | None = None


_NOTHING: Final = Decision()
_ONE_ZERO: Final = Decision(((TELE_CMD_VEL, _ZERO),))
_NOT_DRIVER: Final = Decision(refused=Refused.NOT_DRIVER)
_NON_FINITE: Final = Decision(refused=Refused.NON_FINITE)


class Latch(msgspec.Struct, frozen=True):
    """A latched e-stop: who latched it, when (wall-clock epoch seconds) and why."""

    by: str
    at: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SafetySnapshot:
    """The controller's state and counters at one moment, for ``/status``, metrics and tests."""

    driver: ClientId | None
    command: Twist | None
    deadline: float | None
    clamped: int
    lease_changes: int
    zeros: dict[str, int] = field(default_factory=dict)
    estop: Latch | None = None
    held: dict[ClientId, ClientId] = field(default_factory=dict)
    """Clients stopped by someone else, who must release before driving again: client -> who stopped it."""


class SafetyController:
    """The arbitration and deadman state machine for ``tele_cmd_vel``.

    ``deadman_timeout`` is how long a non-zero command stays valid without a
    refresh; ``republish_hz`` (0 = off) re-sends the current command at that
    rate while it is valid, for bases whose own watchdog is shorter than the
    gaps between the viewer's key repeats. ``announce_drive`` publishes one
    ``stop_movement`` when someone starts driving, so a planner cancels its
    goal (the original DimOS server's behaviour). ``estop`` starts the
    controller latched (a latch restored from the state file after a restart).
    """

    def __init__(
        self,
        *,
        deadman_timeout: float = 1.0,
        republish_hz: float = 0.0,
        limits: Limits | None = None,
        announce_drive: bool = True,
        estop: Latch | None = None,
    ) -> None:
        if not (math.isfinite(deadman_timeout) and deadman_timeout > 0):
            raise ValueError(f"deadman_timeout must be a finite number > 0, got {deadman_timeout!r}")
        if not (math.isfinite(republish_hz) and republish_hz >= 0):
            raise ValueError(f"republish_hz must be a finite number >= 0, got {republish_hz!r}")
        self.deadman_timeout = deadman_timeout
        self.republish_period = 1.0 / republish_hz if republish_hz > 0 else 0.0
        self.limits = limits or Limits()
        self.announce_drive = announce_drive
        self.estop = estop
        # A driver stopped by someone else -> (who stopped it, when it last sent a twist).
        self._held: dict[ClientId, tuple[ClientId, float]] = {}
        self._identity = self.limits.is_identity
        self.driver: ClientId | None = None
        self.command: Twist | None = None  # the non-zero command in force, if any
        self.last_command_at = -math.inf
        self._next_republish = math.inf
        # Counters, read by the metrics endpoint.
        self.clamped = 0
        self.lease_changes = 0
        self.zeros: dict[str, int] = {}

    # -- inputs -----------------------------------------------------------

    def twist(self, client: ClientId, twist: Twist, now: float, factor: float = 1.0) -> Decision:
        """A twist from ``client`` at ``now``; ``factor`` (0..1) scales it after the limits (a slow link)."""
        driver = self.driver
        if driver is not None and now >= self.last_command_at + self.deadman_timeout:
            # The command in force lapsed before this one was handled (a late timer): end that drive first.
            ended = self._halt(Cause.DEADMAN)
            return self._merge(ended, self.twist(client, twist, now, factor))
        if driver is not None and driver != client:
            return _NOT_DRIVER
        if self.estop is not None:
            if self._held and client in self._held:
                # Twists refused for the e-stop still count as holding on (a zero lets go): the key
                # held through a long e-stop must not drive the moment it is cleared.
                self._still_held(client, twist, now)
            return _ESTOPPED
        if self._held and client in self._held:
            refused = self._still_held(client, twist, now)
            if refused is not None:
                return refused
        limited = self._limited(twist, factor)
        if limited is None:
            return _NON_FINITE
        twist, clamped = limited
        if clamped:
            self.clamped += 1
        lin, ang = twist.linear, twist.angular
        if not (lin.x or lin.y or lin.z or ang.x or ang.y or ang.z):
            if driver is not None:
                return self._halt(Cause.RELEASE)
            # With nobody driving, a zero would only add to a stream of zeros
            # that must not happen: nothing is published.
            return _NOTHING
        self.command = twist
        self.last_command_at = now
        expires = now + self.deadman_timeout
        if self.republish_period:
            self._next_republish = now + self.republish_period
        if driver is None:
            self.driver = client
            self.lease_changes += 1
            if self.announce_drive:
                return Decision(
                    ((STOP_MOVEMENT, _STOP_MOVEMENT), (TELE_CMD_VEL, twist)), expires=expires, started=client
                )
            return Decision(((TELE_CMD_VEL, twist),), expires=expires, started=client)
        return Decision(((TELE_CMD_VEL, twist),), expires=expires)

    def twist_run(
        self, client: ClientId, twists: Sequence[Twist], now: float, factors: Sequence[float] | None = None
    ) -> tuple[list[Twist], float]:
        """Twists from ``client`` that arrived together at ``now``, each scaled by its factor (default 1).

        Takes the leading ones that its drive accepts as they are: ``client``
        drives, its drive has not lapsed, no e-stop or hold, and each twist is
        finite and still moving after the limits. That is exactly what
        :meth:`twist` gives for each of them: each command to publish on
        ``tele_cmd_vel``, in order, all with one deadline. Returns those
        commands (as many as were taken) and the deadline; the caller hands
        the next twist to :meth:`twist`, which deals with anything else, then
        may start another run after it.
        """
        expires = now + self.deadman_timeout
        published: list[Twist] = []
        if (
            self.driver is None or self.driver != client or now >= self.last_command_at + self.deadman_timeout
            or self.estop is not None or (self._held and client in self._held)
        ):  # fmt: skip
            return published, expires
        append = published.append
        clamps = 0
        if self._identity and factors is None:
            # Without limits or factors _limited is the finiteness check alone: made here (as _finite does it)
            # for every twist of a run.
            for twist in twists:
                lin, ang = twist.linear, twist.angular
                total = lin.x + lin.y + lin.z + ang.x + ang.y + ang.z
                if not (total - total == 0.0 or twist.is_finite()):
                    break  # refused: twist() says so
                if not (lin.x or lin.y or lin.z or ang.x or ang.y or ang.z):
                    break  # a release: twist() ends the drive
                append(twist)
        else:
            for index, twist in enumerate(twists):
                limited = self._limited(twist, 1.0 if factors is None else factors[index])
                if limited is None:
                    break  # refused: twist() says so
                twist, clamped = limited
                lin, ang = twist.linear, twist.angular
                if not (lin.x or lin.y or lin.z or ang.x or ang.y or ang.z):
                    break  # a release: twist() ends the drive
                append(twist)
                clamps += clamped
        if published:
            self.clamped += clamps
            self.command = published[-1]
            self.last_command_at = now
            if self.republish_period:
                self._next_republish = now + self.republish_period
        return published, expires

    def _limited(self, twist: Twist, factor: float) -> tuple[Twist, bool] | None:
        """``twist`` after the limits and ``factor``, and whether a limit clamped it; None if not finite.

        Non-finite input is refused whole, never clamped into range; and a
        finite input that scaling pushes past the float range is refused too.
        """
        if not _finite(twist):
            return None
        clamped = False
        if not self._identity:
            twist, clamped = self.limits.apply(twist)
            if not _finite(twist):
                return None
        if factor != 1.0:
            twist = _scaled(twist, factor)
        return twist, clamped

    def stop(self, client: ClientId, now: float) -> Decision:
        """An explicit ``stop`` from any client: one zero at once, whoever drives or nobody."""
        # A stop is also its sender's release, if someone else had stopped it.
        self._held.pop(client, None)
        driver = self.driver
        if driver is not None:
            if driver != client:
                self._held[driver] = (client, now)
            return self._halt(Cause.STOP)
        self.zeros[Cause.STOP] = self.zeros.get(Cause.STOP, 0) + 1
        return _ONE_ZERO

    def latch(self, client: ClientId, name: str, wall: float, now: float, reason: str | None = None) -> Decision:
        """Latch the e-stop (``name`` shows who, ``wall`` when): one zero now, ``estop`` set, no driving until cleared.

        Latching an already latched e-stop changes nothing.
        """
        if self.estop is not None:
            return _NOTHING
        self.estop = Latch(name, wall, reason)
        driver = self.driver
        if driver is not None:
            self._held[driver] = (client, now)
            halted = self._halt(Cause.ESTOP)
            return Decision(((ESTOP, _LATCHED), *halted.publish), ended=Cause.ESTOP, previous=driver)
        self.zeros[Cause.ESTOP] = self.zeros.get(Cause.ESTOP, 0) + 1
        return Decision(((ESTOP, _LATCHED), (TELE_CMD_VEL, _ZERO)))

    def clear(self, client: ClientId, now: float) -> Decision:
        """Release a latched e-stop. Whoever was driving when it latched must still release before driving."""
        if self.estop is None:
            return _NOTHING
        self.estop = None
        return Decision(((ESTOP, _CLEARED),))

    def held_by(self, client: ClientId) -> ClientId | None:
        """Who stopped ``client`` while it drove, if it has not let go since."""
        held = self._held.get(client)
        return None if held is None else held[0]

    def click_refused(self) -> Refused | None:
        """Whether a click (a navigation goal) may be published now."""
        return Refused.ESTOPPED if self.estop is not None else None

    def disconnect(self, client: ClientId, now: float) -> Decision:
        """``client``'s connection ended, however it ended."""
        self._held.pop(client, None)
        if self.driver is not None and self.driver == client:
            return self._halt(Cause.DISCONNECT)
        return _NOTHING

    def shutdown(self, now: float) -> Decision:
        """The bridge is going away: stop whoever is driving."""
        if self.driver is not None:
            return self._halt(Cause.SHUTDOWN)
        return _NOTHING

    def tick(self, now: float) -> Decision:
        """Advance time: fire the deadman or a republish if due."""
        if self.driver is None:
            return _NOTHING
        # Compared as an absolute deadline, the same sum next_deadline() reports,
        # so a timer armed for that deadline always finds the deadman due.
        if now >= self.last_command_at + self.deadman_timeout:
            return self._halt(Cause.DEADMAN)
        if self.command is not None and now >= self._next_republish:
            # Keep phase with the schedule, but never queue a burst of catch-ups.
            self._next_republish += self.republish_period
            if self._next_republish <= now:
                self._next_republish = now + self.republish_period
            return Decision(((TELE_CMD_VEL, self.command),), expires=self.last_command_at + self.deadman_timeout)
        return _NOTHING

    def next_deadline(self) -> float | None:
        """The next time :meth:`tick` may have something to do, or ``None``."""
        if self.driver is None:
            return None
        deadline = self.last_command_at + self.deadman_timeout
        if self.republish_period and self._next_republish < deadline:
            return self._next_republish
        return deadline

    def snapshot(self) -> SafetySnapshot:
        deadline = self.last_command_at + self.deadman_timeout if self.driver is not None else None
        return SafetySnapshot(
            self.driver,
            self.command,
            deadline,
            self.clamped,
            self.lease_changes,
            dict(self.zeros),
            self.estop,
            {client: who for client, (who, _) in self._held.items()},
        )

    # -- internals --------------------------------------------------------

    def _still_held(self, client: ClientId, twist: Twist, now: float) -> Decision | None:
        """A twist from a client someone else stopped: refused until it lets go (None: it has)."""
        who, last = self._held[client]
        lin, ang = twist.linear, twist.angular
        if now - last >= self.deadman_timeout:
            del self._held[client]  # silence past the deadman: the key was let go
            return None
        if not (lin.x or lin.y or lin.z or ang.x or ang.y or ang.z):
            del self._held[client]  # a zero twist: the key was let go (nothing to publish: nobody drives)
            return _NOTHING
        self._held[client] = (who, now)
        return Decision(refused=Refused.STOPPED_BY_OTHER, by=who)

    def _halt(self, cause: Cause) -> Decision:
        previous = self.driver
        self.driver = None
        self.command = None
        self.last_command_at = -math.inf
        self._next_republish = math.inf
        self.zeros[cause] = self.zeros.get(cause, 0) + 1
        self.lease_changes += 1
        return Decision(((TELE_CMD_VEL, _ZERO),), ended=cause, previous=previous)

    @staticmethod
    def _merge(first: Decision, then: Decision) -> Decision:
        return Decision(
            first.publish + then.publish,
            then.refused,
            then.expires,
            then.started,
            first.ended,
            first.previous,
            then.by,
        )


_ESTOPPED: Final = Decision(refused=Refused.ESTOPPED)


def _scaled(twist: Twist, factor: float) -> Twist:
    lin, ang = twist.linear, twist.angular
    return Twist(
        Vector3(lin.x * factor, lin.y * factor, lin.z * factor),
        Vector3(ang.x * factor, ang.y * factor, ang.z * factor),
    )

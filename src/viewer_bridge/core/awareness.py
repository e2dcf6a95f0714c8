"""What the operator is shown about the bridge inside the 3D view, sans I/O: texts, trails and rate limits.

The Rerun sink (:mod:`viewer_bridge.bus.rerun_sink`) logs four things into
the recording the viewer shows (see ``docs/viewer-awareness.md``): the
bridge's status, the last goals, refusals and the commands published. This
module decides *what* those entries say and *when* one is due; the sink only
does the logging. Time is always passed in (monotonic seconds).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping
from typing import Any, Final

from viewer_bridge.core.messages import PointStamped, Twist

__all__ = [
    "CMD_VEL_AXES",
    "GoalTrail",
    "RefusalGate",
    "Spacing",
    "cmd_vel_values",
    "refusal_text",
    "status_text",
]

# The three commanded axes a ground robot uses, in the order the cmd_vel series logs them.
CMD_VEL_AXES: Final = ("linear_x", "linear_y", "angular_z")


def cmd_vel_values(twist: Twist) -> tuple[float, float, float]:
    """The published twist as the three values of the ``cmd_vel`` series (see :data:`CMD_VEL_AXES`)."""
    return (twist.linear.x, twist.linear.y, twist.angular.z)


class Spacing:
    """At most one entry every ``interval`` seconds: :meth:`wait` says how long until the next may go."""

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float) -> None:
        if not (math.isfinite(interval) and interval >= 0):
            raise ValueError(f"interval must be a finite number >= 0, got {interval!r}")
        self.interval = interval
        self._last = -math.inf

    def wait(self, now: float) -> float:
        """Seconds until an entry may go (0 when one may go now)."""
        return max(0.0, self._last + self.interval - now)

    def sent(self, now: float) -> None:
        self._last = now


class RefusalGate:
    """Which refusals are worth an entry: the first of each (client, reason), then one per ``interval``.

    A client that keeps getting the same refusal (a flood of ``rate_limited``,
    a held key while someone else drives) would otherwise write an entry per
    message; :meth:`admit` lets one through per ``interval`` and reports how
    many it held back, so the next entry can say "+N more". It runs on the
    event loop for every refusal, so it does a dict lookup and little else.
    At most ``max_keys`` (client, reason) pairs are remembered; past that the
    memory starts afresh (a client that churns through addresses costs at most
    a few extra entries, never unbounded memory).
    """

    __slots__ = ("_held", "_last", "interval", "max_keys")

    def __init__(self, interval: float = 1.0, max_keys: int = 1024) -> None:
        if not (math.isfinite(interval) and interval >= 0):
            raise ValueError(f"interval must be a finite number >= 0, got {interval!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def admit(self, client: str, reason: str, now: float) -> int | None:
        """``None`` to hold this refusal back; otherwise how many of its kind were held back before it."""
        key = (client, reason)
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)


def refusal_text(client: str, reason: str, detail: str, held_back: int = 0) -> str:
    """One line of the refusal log: the reason first (what the operator scans for), then who and why."""
    more = f" (+{held_back} more like it)" if held_back else ""
    return f"{reason}: {detail} [client {client}]{more}"


class GoalTrail:
    """The last ``length`` goals, newest last: the goal marker and the short trail behind it."""

    __slots__ = ("_goals", "count")

    def __init__(self, length: int = 5) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length!r}")
        self._goals: collections.deque[PointStamped] = collections.deque(maxlen=length)
        self.count = 0  # goals ever added, so the label can number them

    def add(self, goal: PointStamped) -> None:
        self._goals.append(goal)
        self.count += 1

    @property
    def last(self) -> PointStamped | None:
        return self._goals[-1] if self._goals else None

    @property
    def points(self) -> list[tuple[float, float, float]]:
        """Every goal kept, oldest first."""
        return [(goal.x, goal.y, goal.z) for goal in self._goals]

    def label(self) -> str:
        """The marker's label: which goal this is and where, e.g. ``goal 3: (1.20, -0.40, 0.00) world``."""
        goal = self.last
        if goal is None:
            return ""
        return f"goal {self.count}: ({goal.x:.2f}, {goal.y:.2f}, {goal.z:.2f}) {goal.frame_id}"


def _axis(value: float) -> str:
    # "-0.00" would read as a command to the operator.
    return f"{value:+.2f}" if round(value, 2) != 0 else "0.00"


def _twist_text(twist: Twist) -> str:
    lin, ang = twist.linear, twist.angular
    parts = [f"linear x {_axis(lin.x)} y {_axis(lin.y)}"]
    if lin.z:
        parts.append(f"z {_axis(lin.z)}")
    parts.append(f"m/s, angular z {_axis(ang.z)} rad/s")
    if ang.x or ang.y:
        parts.append(f"(x {_axis(ang.x)}, y {_axis(ang.y)})")
    return " ".join(parts)


def status_text(status: Mapping[str, Any]) -> str:
    """The ``status`` entry, as Markdown, from a status mapping.

    Keys (missing ones are left out of the text): ``driver`` (the driving
    client's label, or None), ``clients`` (how many are connected),
    ``command`` (the :class:`Twist` in force after scaling and limits, or
    None), ``command_age`` (seconds since the last command was published, or
    None), ``estop`` (None/False when released; True or a short text saying
    who latched it when latched). The text only changes when one of those
    does: the command's age is shown only while someone drives (where it
    matters: it is the deadman's clock), and to a tenth of a second, so an
    idle bridge's status stays the same and is not logged again.
    """
    lines: list[str] = []
    estop = status.get("estop")
    if estop:
        lines.append(f"**E-STOP latched**{': ' + str(estop) if isinstance(estop, str) else ''}")
    driver = status.get("driver")
    lines.append(f"**Driver:** {driver}" if driver else "**Driver:** nobody")
    command = status.get("command")
    if driver and isinstance(command, Twist) and not command.is_zero():
        lines.append(f"**Command in force:** {_twist_text(command)}")
        age = status.get("command_age")
        if isinstance(age, (int, float)) and math.isfinite(age):
            lines.append(f"**Last command:** {max(0.0, age):.1f} s ago")
    else:
        lines.append("**Command in force:** none (stopped)")
    clients = status.get("clients")
    if isinstance(clients, int):
        lines.append(f"**Clients connected:** {clients}")
    return "\n\n".join(lines)

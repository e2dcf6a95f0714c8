"""Keyboard teleop, sans I/O: key presses in, the twists and stops to send out. The clock is passed in.

The keys are dimos-viewer's: W/S linear_x +/-0.5, Q/E linear_y +/-0.5, A/D
angular_z +/-0.8; Shift (or Caps Lock: an upper-case letter) doubles; keys on
different axes combine. Space is a stop; ``+``/``-`` scale speed.

``X`` latches the bridge's e-stop at once. Releasing it takes two deliberate
steps, so no slip of a finger can do it: :meth:`KeyTeleop.ask_release` (the
UI binds it to Ctrl-R) opens a prompt, and only ``y`` within
``confirm_timeout`` (5 s) sends ``estop_clear``; any other key, or the
timeout, cancels it (Space and X still act as themselves).

A terminal reports key presses and the OS's auto-repeats, never releases.
So a key counts as held until ``key_timeout`` (0.5 s, as ROS's
teleop_twist_keyboard) passes without a repeat of it, and then one ``stop``
is sent. The first repeat comes only after the OS repeat delay (X11 660 ms,
macOS/Windows/GNOME 500-600 ms), longer than ``key_timeout``: waiting only
``key_timeout`` after the first press would stop the robot in that gap and
start it again at the first repeat (stop/start flapping on every hold). A
newly pressed key therefore gets ``first_timeout`` (0.8 s) instead; once it
has repeated, ``key_timeout`` applies. The cost: a single tap drives for up
to 0.8 s.

Terminals auto-repeat only the last key pressed, so two held keys cannot be
told from one: pressing the opposite key of an axis (S while W is held)
replaces the other at once, and a key on another axis combines until the
earlier key times out (it no longer repeats).

While a key is held the command is sent at once whenever it changes, and
re-sent every ``resend_interval`` (0.1 s) otherwise, so the bridge's deadman
(1 s) is fed even during the repeat delay and the robot sees a steady rate
whatever the terminal's repeat rate. After the stop: silence, as the bridge
itself does (a stream of zeros froze a real robot's controller).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Union

from viewer_bridge.core.messages import Twist, Vector3

__all__ = [
    "CONFIRM_KEYS",
    "DRIVE_KEYS",
    "ESTOP_KEYS",
    "KeyTeleop",
    "SendEstop",
    "SendEstopClear",
    "SendStop",
    "SendTwist",
    "StopWhy",
]

# key -> (axis, value). Axes: 0 linear_x, 1 linear_y, 2 angular_z.
DRIVE_KEYS: Final[dict[str, tuple[int, float]]] = {
    "w": (0, 0.5),
    "s": (0, -0.5),
    "q": (1, 0.5),
    "e": (1, -0.5),
    "a": (2, 0.8),
    "d": (2, -0.8),
}
SPEED_UP_KEYS: Final = frozenset({"+", "="})  # "=" is "+" without Shift on US layouts
SPEED_DOWN_KEYS: Final = frozenset({"-", "_"})
STOP_KEYS: Final = frozenset({" "})
ESTOP_KEYS: Final = frozenset({"x", "X"})
CONFIRM_KEYS: Final = frozenset({"y", "Y"})


class StopWhy:
    """Why a stop is sent; shown to the user."""

    RELEASED: Final = "key released"
    SPACE: Final = "space"
    QUIT: Final = "quit"
    FOCUS_LOST: Final = "focus lost"


@dataclass(frozen=True)
class SendTwist:
    twist: Twist


@dataclass(frozen=True)
class SendStop:
    why: str


@dataclass(frozen=True)
class SendEstop:
    """Latch the bridge's e-stop."""


@dataclass(frozen=True)
class SendEstopClear:
    """Release the bridge's e-stop (only after a confirmed :meth:`KeyTeleop.ask_release`)."""


Action = Union[SendTwist, SendStop, SendEstop, SendEstopClear]


@dataclass
class _Held:
    boosted: bool
    expires: float


class KeyTeleop:
    """The key state machine. Feed it :meth:`key` events and :meth:`tick` at :meth:`next_deadline`.

    Every method takes ``now`` (seconds, any monotonic clock) and returns the
    one action to perform now, or ``None``.
    """

    def __init__(
        self,
        *,
        key_timeout: float = 0.5,
        first_timeout: float = 0.8,
        resend_interval: float = 0.1,
        speed: float = 1.0,
        speed_step: float = 0.1,
        min_speed: float = 0.1,
        max_speed: float = 2.0,
        confirm_timeout: float = 5.0,
    ) -> None:
        for name, value in (
            ("confirm_timeout", confirm_timeout),
            ("key_timeout", key_timeout),
            ("first_timeout", first_timeout),
            ("resend_interval", resend_interval),
            ("speed_step", speed_step),
            ("min_speed", min_speed),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if first_timeout < key_timeout:
            raise ValueError("first_timeout must be >= key_timeout (it covers the OS key-repeat delay)")
        if not (math.isfinite(max_speed) and min_speed <= speed <= max_speed):
            raise ValueError(f"speed must be within [{min_speed}, {max_speed}], got {speed!r}")
        self.key_timeout = key_timeout
        self.first_timeout = first_timeout
        self.resend_interval = resend_interval
        self.speed = speed
        self.speed_step = speed_step
        self.min_speed = min_speed
        self.max_speed = max_speed
        self.confirm_timeout = confirm_timeout
        self._release_until: float | None = None  # the release prompt is open until then
        self._held: dict[str, _Held] = {}
        self._sent: Twist | None = None  # the twist in force at the bridge on our account; None = stopped
        self._sent_at = -math.inf

    # -- state ------------------------------------------------------------

    @property
    def held(self) -> str:
        """The keys counted as held, as typed (upper case when boosted), in press order."""
        return "".join(k.upper() if h.boosted else k for k, h in self._held.items())

    @property
    def moving(self) -> bool:
        """True while the last thing sent was a twist (not yet followed by a stop)."""
        return self._sent is not None

    @property
    def sent(self) -> Twist | None:
        return self._sent

    @property
    def release_asked(self) -> bool:
        """True while the e-stop release prompt waits for its confirmation."""
        return self._release_until is not None

    def command(self) -> Twist:
        """The twist the held keys ask for now."""
        axes = [0.0, 0.0, 0.0]
        for key, held in self._held.items():
            axis, value = DRIVE_KEYS[key]
            axes[axis] += value * (2.0 if held.boosted else 1.0) * self.speed
        return Twist(Vector3(axes[0], axes[1], 0.0), Vector3(0.0, 0.0, axes[2]))

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or None while idle."""
        deadlines = [held.expires for held in self._held.values()]
        if self._sent is not None:
            deadlines.append(self._sent_at + self.resend_interval)
        if self._release_until is not None:
            deadlines.append(self._release_until)
        return min(deadlines) if deadlines else None

    # -- inputs -----------------------------------------------------------

    def key(self, char: str, now: float) -> Action | None:
        """One key press or auto-repeat: ``char`` is the character typed (``"w"``, ``"W"``, ``" "``, ``"+"``)."""
        self._expire(now)
        if self._release_until is not None:
            # The release prompt takes the next key: "y" confirms, anything else cancels it (and
            # does nothing more, unless it is a stop).
            self._release_until = None
            if char in CONFIRM_KEYS:
                return SendEstopClear()
            if char not in STOP_KEYS and char not in ESTOP_KEYS:
                return None
        lower = char.lower()
        if char in STOP_KEYS:
            return self.emergency_stop()
        if char in ESTOP_KEYS:
            return self.latch_estop()
        if lower in DRIVE_KEYS and len(char) == 1:
            held = self._held.get(lower)
            if held is None:
                axis = DRIVE_KEYS[lower][0]
                # Same axis, other direction: the terminal now repeats this
                # key, not that one, so that one was released.
                for other in [k for k in self._held if DRIVE_KEYS[k][0] == axis]:
                    del self._held[other]
                self._held[lower] = _Held(char.isupper(), now + self.first_timeout)
            else:
                held.boosted = char.isupper()
                held.expires = now + self.key_timeout
        elif char in SPEED_UP_KEYS:
            self.speed = min(self.max_speed, round(self.speed + self.speed_step, 9))
        elif char in SPEED_DOWN_KEYS:
            self.speed = max(self.min_speed, round(self.speed - self.speed_step, 9))
        else:
            return None
        return self._update(now)

    def tick(self, now: float) -> Action | None:
        """Time passed: drop keys that stopped repeating, re-send a held command when due."""
        self._expire(now)
        return self._update(now)

    def latch_estop(self) -> SendEstop:
        """X: forget every key and latch the e-stop (the bridge publishes the one zero)."""
        self._held.clear()
        self._sent = None
        return SendEstop()

    def ask_release(self, now: float) -> None:
        """Open the release prompt: ``y`` within ``confirm_timeout`` seconds releases the e-stop."""
        self._release_until = now + self.confirm_timeout

    def cancel_release(self) -> None:
        self._release_until = None

    def emergency_stop(self) -> SendStop:
        """Space: forget every key and stop, whether or not we were moving (anyone may stop)."""
        self._held.clear()
        self._sent = None
        return SendStop(StopWhy.SPACE)

    def halt(self, why: str) -> SendStop | None:
        """Quit or lost focus: forget every key; stop if we were driving.

        Returns None when idle, since a ``stop`` would halt whoever else is driving.
        """
        self._held.clear()
        if self._sent is None:
            return None
        self._sent = None
        return SendStop(why)

    # ---------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        if self._release_until is not None and now >= self._release_until:
            self._release_until = None
        for key in [k for k, held in self._held.items() if now >= held.expires]:
            del self._held[key]

    def _update(self, now: float) -> Action | None:
        command = self.command()
        if command.is_zero():
            if self._sent is None:
                return None
            self._sent = None
            return SendStop(StopWhy.RELEASED)
        if command != self._sent or now >= self._sent_at + self.resend_interval:
            self._sent = command
            self._sent_at = now
            return SendTwist(command)
        return None

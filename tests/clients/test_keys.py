"""The key state machine behind the terminal teleop, driven with an exact fake clock."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from viewer_bridge.clients.keys import (
    Action,
    KeyTeleop,
    SendEstop,
    SendEstopClear,
    SendStop,
    SendTwist,
    StopWhy,
)
from viewer_bridge.core.messages import Twist, Vector3


def drive(linear_x: float = 0.0, linear_y: float = 0.0, angular_z: float = 0.0) -> SendTwist:
    return SendTwist(Twist(Vector3(linear_x, linear_y, 0.0), Vector3(0.0, 0.0, angular_z)))


def run(keys: KeyTeleop, events: Iterable[tuple[float, str | None]], until: float) -> list[tuple[float, Action]]:
    """Feed key events (``None`` = no key) at their times, ticking at every deadline in between, as the UI does."""
    out: list[tuple[float, Action]] = []

    def advance(to: float) -> None:
        while (deadline := keys.next_deadline()) is not None and deadline <= to:
            action = keys.tick(deadline)
            if action is not None:
                out.append((deadline, action))

    for at, char in events:
        advance(at)
        if char is not None:
            action = keys.key(char, at)
            if action is not None:
                out.append((at, action))
    advance(until)
    return out


def test_a_tap_drives_until_the_first_timeout_then_sends_one_stop() -> None:
    keys = KeyTeleop()
    assert keys.key("w", 0.0) == drive(0.5)
    assert keys.moving and keys.held == "w"
    assert keys.next_deadline() == pytest.approx(0.1)
    assert keys.tick(0.0999) is None
    assert keys.tick(0.1) == drive(0.5)  # re-sent at the resend interval
    assert keys.tick(0.7999) == drive(0.5)
    assert keys.tick(0.8) == SendStop(StopWhy.RELEASED)
    assert not keys.moving and keys.held == ""
    assert keys.next_deadline() is None
    assert keys.tick(5.0) is None  # silence after the stop, never a stream of zeros


def test_a_held_key_through_the_os_repeat_delay_never_flaps() -> None:
    # X11's default: first repeat after 660 ms, then 25 Hz; released at 2.0 s.
    repeats = [0.66 + i * 0.04 for i in range(35)]
    events = [(0.0, "w"), *((t, "w") for t in repeats)]
    out = run(KeyTeleop(), events, until=5.0)
    stops = [(t, a) for t, a in out if isinstance(a, SendStop)]
    assert stops == [(pytest.approx(repeats[-1] + 0.5), SendStop(StopWhy.RELEASED))]
    assert all(a == drive(0.5) for _, a in out[:-1])
    # Sent every 0.1 s, not once per 25 Hz repeat.
    times = [t for t, _ in out[:-1]]
    assert all(later - earlier >= 0.1 - 1e-9 for earlier, later in itertools.pairwise(times))
    assert len(times) == pytest.approx((repeats[-1] + 0.5) / 0.1, abs=2)


def test_without_the_longer_first_timeout_a_hold_would_flap() -> None:
    # Why first_timeout exists: with 0.5 s for the first press too, the
    # robot stops in the repeat-delay gap and restarts at the first repeat.
    repeats = [0.66 + i * 0.04 for i in range(10)]
    out = run(KeyTeleop(first_timeout=0.5), [(0.0, "w"), *((t, "w") for t in repeats)], until=3.0)
    kinds = [type(a).__name__ for _, a in out]
    assert kinds.count("SendStop") == 2
    assert out[kinds.index("SendStop")][0] == pytest.approx(0.5)


def test_shift_or_caps_doubles_and_can_change_mid_hold() -> None:
    keys = KeyTeleop()
    assert keys.key("W", 0.0) == drive(1.0)
    assert keys.held == "W"
    assert keys.key("w", 0.05) == drive(0.5)  # Shift let go while W repeats: sent at once
    assert keys.key("D", 0.06) == drive(0.5, angular_z=-1.6)
    assert keys.key("Q", 0.07) == drive(0.5, 1.0, -1.6)


def test_keys_on_different_axes_combine_until_the_earlier_one_times_out() -> None:
    keys = KeyTeleop()
    assert keys.key("w", 0.0) == drive(0.5)
    assert keys.key("a", 0.1) == drive(0.5, angular_z=0.8)
    assert keys.key("e", 0.15) == drive(0.5, -0.5, 0.8)
    assert keys.held == "wae"
    assert keys.tick(0.8) == drive(0.0, -0.5, 0.8)  # w stopped repeating
    assert keys.tick(0.9) == drive(0.0, -0.5, 0.0)
    assert keys.tick(0.96) == SendStop(StopWhy.RELEASED)


def test_the_opposite_key_on_an_axis_replaces_the_other_without_a_stop() -> None:
    keys = KeyTeleop()
    assert keys.key("w", 0.0) == drive(0.5)
    assert keys.key("s", 0.2) == drive(-0.5)
    assert keys.held == "s"
    assert keys.key("a", 0.3) == drive(-0.5, angular_z=0.8)
    assert keys.key("d", 0.4) == drive(-0.5, angular_z=-0.8)
    assert keys.key("q", 0.45) == drive(-0.5, 0.5, -0.8)
    assert keys.key("e", 0.5) == drive(-0.5, -0.5, -0.8)
    assert keys.held == "sde"


def test_space_stops_at_once_even_when_idle() -> None:
    keys = KeyTeleop()
    assert keys.key(" ", 0.0) == SendStop(StopWhy.SPACE)  # an emergency stop needs no reason
    keys.key("w", 1.0)
    keys.key("a", 1.1)
    assert keys.key(" ", 1.2) == SendStop(StopWhy.SPACE)
    assert keys.held == "" and not keys.moving
    assert keys.next_deadline() is None
    assert keys.key("w", 1.3) == drive(0.5)  # and one can drive again


def test_halt_stops_only_when_driving() -> None:
    keys = KeyTeleop()
    assert keys.halt(StopWhy.QUIT) is None  # idle: a stop would halt someone else's drive
    keys.key("w", 0.0)
    assert keys.halt(StopWhy.FOCUS_LOST) == SendStop(StopWhy.FOCUS_LOST)
    assert keys.halt(StopWhy.QUIT) is None
    assert keys.tick(0.5) is None and keys.next_deadline() is None


def test_speed_keys_scale_clamp_and_apply_at_once_while_driving() -> None:
    keys = KeyTeleop()
    assert keys.key("+", 0.0) is None  # idle: nothing to send
    assert keys.speed == pytest.approx(1.1)
    assert keys.key("w", 0.1) == drive(0.5 * 1.1)
    assert keys.key("-", 0.15) == drive(0.5)
    assert keys.key("_", 0.16) == drive(0.5 * 0.9)
    for step in range(30):
        keys.key("-", 0.2 + step * 0.001)
    assert keys.speed == pytest.approx(0.1)
    for step in range(30):
        keys.key("=", 0.3 + step * 0.001)
    assert keys.speed == pytest.approx(2.0)
    assert keys.command() == Twist(Vector3(1.0, 0.0, 0.0), Vector3())


def test_other_keys_do_nothing() -> None:
    keys = KeyTeleop()
    for char in ("c", "z", "1", "\t", "é"):
        assert keys.key(char, 0.0) is None
    assert keys.key("ww", 0.0) is None  # not a single character
    assert keys.held == "" and not keys.moving
    keys.key("w", 1.0)
    assert keys.key("z", 1.05) is None
    assert keys.moving


def test_x_latches_the_estop_at_once_and_forgets_every_key() -> None:
    keys = KeyTeleop()
    assert isinstance(keys.key("w", 0.0), SendTwist)
    assert keys.key("x", 0.1) == SendEstop()
    assert keys.held == "" and not keys.moving and keys.next_deadline() is None
    # Idle or not, with Caps Lock or not: it latches (the bridge ignores a second latch).
    assert keys.key("X", 0.2) == SendEstop()


def test_releasing_takes_ctrl_r_then_y_within_the_confirm_timeout() -> None:
    keys = KeyTeleop(confirm_timeout=5.0)
    assert keys.key("y", 0.0) is None  # Y alone does nothing
    keys.ask_release(1.0)
    assert keys.release_asked and keys.next_deadline() == 6.0
    assert keys.key("Y", 2.0) == SendEstopClear()
    assert not keys.release_asked and keys.next_deadline() is None


def test_any_other_key_or_the_timeout_cancels_the_release() -> None:
    keys = KeyTeleop(confirm_timeout=5.0)
    keys.ask_release(0.0)
    assert keys.key("w", 1.0) is None  # cancels, and does not drive either
    assert not keys.release_asked and not keys.moving
    assert keys.key("y", 1.1) is None
    keys.ask_release(2.0)
    assert keys.tick(6.999999) is None and keys.release_asked
    assert keys.tick(7.0) is None and not keys.release_asked  # exactly at the timeout: closed
    assert keys.key("y", 7.0) is None
    keys.ask_release(8.0)
    keys.cancel_release()
    assert keys.key("y", 8.1) is None


def test_stop_and_estop_keys_still_act_while_the_release_is_asked() -> None:
    keys = KeyTeleop()
    keys.ask_release(0.0)
    assert keys.key(" ", 0.1) == SendStop(StopWhy.SPACE)
    assert not keys.release_asked
    keys.ask_release(0.2)
    assert keys.key("x", 0.3) == SendEstop()
    assert not keys.release_asked


def test_a_fast_repeat_is_sent_at_the_resend_rate_not_the_repeat_rate() -> None:
    # Binary fractions, so the times are exact: a 64 Hz repeat, an 8 Hz resend.
    keys = KeyTeleop(resend_interval=1 / 8)
    sent = [t for t in (i / 64 for i in range(64)) if keys.key("w", t) is not None]
    assert sent == [i / 8 for i in range(8)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_timeout": 0}, "key_timeout"),
        ({"key_timeout": float("nan")}, "key_timeout"),
        ({"resend_interval": -1}, "resend_interval"),
        ({"key_timeout": 1.0, "first_timeout": 0.5}, "first_timeout"),
        ({"speed": 3.0}, "speed"),
        ({"confirm_timeout": 0}, "confirm_timeout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KeyTeleop(**kwargs)


@given(
    st.lists(
        st.tuples(st.floats(0.0, 0.6), st.sampled_from(["w", "s", "A", "d", "q", "E", " ", "+", "-", "x", None])),
        max_size=40,
    )
)
def test_any_key_sequence_ends_stopped_and_never_repeats_a_stop(steps: list[tuple[float, str | None]]) -> None:
    keys = KeyTeleop()
    events: list[tuple[float, str | None]] = []
    now = 0.0
    for gap, char in steps:
        now += gap
        events.append((now, char))
    out = run(keys, events, until=now + 0.8)
    # The robot is left stopped: whatever was sent last was a stop (or nothing was sent).
    assert not keys.moving and keys.next_deadline() is None
    if out:
        assert isinstance(out[-1][1], (SendStop, SendEstop))
    # Only Space may stop an already stopped robot; no other stop repeats one.
    for (_, earlier), (_, later) in itertools.pairwise(out):
        if isinstance(earlier, SendStop) and isinstance(later, SendStop):
            assert later.why == StopWhy.SPACE
    # Every twist is within the reach of two doubled keys at top speed.
    for _, action in out:
        if isinstance(action, SendTwist):
            assert not action.twist.is_zero()
            assert abs(action.twist.linear.x) <= 2.0 and abs(action.twist.angular.z) <= 3.2

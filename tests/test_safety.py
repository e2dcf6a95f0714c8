"""The safety state machine with a fake clock: lease, deadman, stops, limits and republishing, at the boundaries."""

from __future__ import annotations

import math

import pytest

from viewer_bridge.messages import Bool, Twist, Vector3
from viewer_bridge.safety import Limits, SafetyController, StopCause

FWD = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0))
TURN = Twist(Vector3(0, 0, 0), Vector3(0, 0, 0.8))
ZERO = Twist.zero()


def published(outcome: object) -> list[tuple[str, object]]:
    return list(outcome.publish)  # type: ignore[attr-defined]


def test_first_twist_takes_lease_and_announces_stop_movement() -> None:
    s = SafetyController()
    out = s.twist("a", FWD, 0.0)
    assert published(out) == [("stop_movement", Bool(True)), ("tele_cmd_vel", FWD)]
    assert out.lease_changed and out.lease_to == "a" and s.driver == "a"
    out = s.twist("a", TURN, 0.1)
    assert published(out) == [("tele_cmd_vel", TURN)]
    assert not out.lease_changed


def test_other_client_cannot_steal_the_lease() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    out = s.twist("b", TURN, 0.1)
    assert out.rejected == "not_driver" and not out.publish
    # Even a zero twist from b is not a stop: only the explicit message is.
    assert s.twist("b", ZERO, 0.2).rejected == "not_driver"
    assert s.driver == "a"


def test_anyone_can_stop_and_that_releases_the_lease() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    out = s.stop("b", 0.1)
    assert published(out) == [("tele_cmd_vel", ZERO)]
    assert out.stop_cause == StopCause.STOP and s.driver is None
    out = s.twist("b", TURN, 0.2)
    assert out.lease_to == "b" and published(out)[0] == ("stop_movement", Bool(True))


def test_after_a_stop_nothing_more_until_a_new_command() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    s.stop("a", 0.1)
    assert not s.stop("a", 0.2).publish
    assert not s.twist("a", ZERO, 0.3).publish
    assert not s.tick(100.0).publish
    assert s.next_deadline() is None


def test_zero_twist_from_driver_is_one_zero_and_release() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    out = s.twist("a", ZERO, 0.1)
    assert published(out) == [("tele_cmd_vel", ZERO)] and out.stop_cause == StopCause.RELEASE
    assert s.driver is None


def test_deadman_fires_exactly_at_the_timeout() -> None:
    s = SafetyController(deadman_timeout=1.0)
    s.twist("a", FWD, 10.0)
    assert s.next_deadline() == 11.0
    assert not s.tick(10.999999).publish
    out = s.tick(11.0)
    assert published(out) == [("tele_cmd_vel", ZERO)] and out.stop_cause == StopCause.DEADMAN
    assert s.driver is None and s.next_deadline() is None
    assert not s.tick(12.0).publish


def test_each_twist_refreshes_the_deadman() -> None:
    s = SafetyController(deadman_timeout=1.0)
    s.twist("a", FWD, 0.0)
    s.twist("a", FWD, 0.9)
    assert not s.tick(1.5).publish
    assert s.next_deadline() == pytest.approx(1.9)
    assert s.tick(1.9).stop_cause == StopCause.DEADMAN


def test_disconnect_of_driver_stops_others_do_not() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    assert not s.disconnect("b", 0.1).publish
    out = s.disconnect("a", 0.2)
    assert published(out) == [("tele_cmd_vel", ZERO)] and out.stop_cause == StopCause.DISCONNECT


def test_shutdown_stops_driver_once() -> None:
    s = SafetyController()
    assert not s.shutdown(0.0).publish
    s.twist("a", FWD, 0.0)
    assert s.shutdown(0.1).stop_cause == StopCause.SHUTDOWN
    assert not s.shutdown(0.2).publish


def test_republish_keeps_phase_and_stops_with_deadman() -> None:
    s = SafetyController(deadman_timeout=1.0, republish_hz=4.0)
    s.twist("a", FWD, 0.0)
    assert s.next_deadline() == 0.25
    assert not s.tick(0.2499).publish
    assert published(s.tick(0.25)) == [("tele_cmd_vel", FWD)]
    assert s.next_deadline() == 0.5
    # A late tick does not produce a burst of catch-ups.
    assert published(s.tick(0.9)) == [("tele_cmd_vel", FWD)]
    assert s.next_deadline() == 1.0
    assert s.tick(1.0).stop_cause == StopCause.DEADMAN


def test_republish_is_off_by_default() -> None:
    s = SafetyController()
    s.twist("a", FWD, 0.0)
    assert s.next_deadline() == 1.0
    assert not s.tick(0.5).publish


def test_limits_scale_then_clamp_each_axis() -> None:
    limits = Limits(scale=(2.0, 1, 1, 1, 1, 0.5), clamp=(0.8, 0.1, None, None, None, 0.3))
    out, clamped = limits.apply(Twist(Vector3(0.3, -0.5, 5.0), Vector3(0, 0, -0.8)))
    assert out == Twist(Vector3(0.6, -0.1, 5.0), Vector3(0, 0, -0.3)) and clamped
    out, clamped = limits.apply(Twist(Vector3(0.4, 0, 0), Vector3(0, 0, 0.2)))
    assert out == Twist(Vector3(0.8, 0, 0), Vector3(0, 0, 0.1)) and not clamped


def test_clamping_is_reported_and_applied_before_publishing() -> None:
    s = SafetyController(limits=Limits(clamp=(0.2, None, None, None, None, None)))
    out = s.twist("a", Twist(Vector3(1e300, 0, 0), Vector3()), 0.0)
    assert out.clamped and published(out)[-1] == ("tele_cmd_vel", Twist(Vector3(0.2, 0, 0), Vector3()))


def test_scaling_to_zero_counts_as_a_stop() -> None:
    s = SafetyController(limits=Limits(scale=(0.0, 1, 1, 1, 1, 1)))
    assert not s.twist("a", FWD, 0.0).publish and s.driver is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected_whole(bad: float) -> None:
    s = SafetyController(limits=Limits(clamp=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)))
    out = s.twist("a", Twist(Vector3(0.1, bad, 0), Vector3()), 0.0)
    assert out.rejected == "non_finite" and not out.publish and s.driver is None


@pytest.mark.parametrize(
    "kwargs",
    [{"deadman_timeout": 0}, {"deadman_timeout": math.nan}, {"republish_hz": -1}, {"republish_hz": math.inf}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SafetyController(**kwargs)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_linear_y"):
        Limits(clamp=(None, -1.0, None, None, None, None))
    with pytest.raises(ValueError, match="linear_x"):
        Limits(scale=(math.nan, 1, 1, 1, 1, 1))

"""The safety state machine with a fake clock: lease, deadman, stops, limits and republishing, at the boundaries."""

from __future__ import annotations

import math

import pytest

from viewer_bridge.core.messages import Bool, Twist, Vector3
from viewer_bridge.core.safety import Limits, SafetyController, StopCause

FWD = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0))
TURN = Twist(Vector3(0, 0, 0), Vector3(0, 0, 0.8))
ZERO = Twist.zero()


class Harness:
    """A controller whose output is recorded: ``take()`` returns and clears what was published."""

    def __init__(self, **kwargs: object) -> None:
        self.out: list[tuple[str, object]] = []
        self.events: list[tuple[str, object]] = []
        self.s = SafetyController(
            lambda stream, msg: self.out.append((stream, msg)),
            on_event=lambda kind, client: self.events.append((kind, client)),
            **kwargs,  # type: ignore[arg-type]
        )

    def take(self) -> list[tuple[str, object]]:
        out, self.out = self.out, []
        return out


def test_first_twist_takes_lease_and_announces_stop_movement() -> None:
    h = Harness()
    assert h.s.twist("a", FWD, 0.0) is None
    assert h.take() == [("stop_movement", Bool(True)), ("tele_cmd_vel", FWD)]
    assert h.s.driver == "a" and h.events == [("lease", "a")] and h.s.lease_changes == 1
    assert h.s.twist("a", TURN, 0.1) is None
    assert h.take() == [("tele_cmd_vel", TURN)]
    assert h.s.lease_changes == 1


def test_other_client_cannot_steal_the_lease() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.take()
    assert h.s.twist("b", TURN, 0.1) == "not_driver"
    # Even a zero twist from b is not a stop: only the explicit message is.
    assert h.s.twist("b", ZERO, 0.2) == "not_driver"
    assert h.take() == [] and h.s.driver == "a"


def test_anyone_can_stop_and_that_releases_the_lease() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.take()
    h.s.stop("b", 0.1)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.driver is None and h.s.stops == {StopCause.STOP: 1}
    assert h.events[-1] == (StopCause.STOP, "a")
    h.s.twist("b", TURN, 0.2)
    assert h.take()[0] == ("stop_movement", Bool(True)) and h.s.driver == "b"


def test_after_a_stop_nothing_more_until_a_new_command() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.s.stop("a", 0.1)
    h.take()
    h.s.stop("a", 0.2)
    h.s.twist("a", ZERO, 0.3)
    h.s.tick(100.0)
    assert h.take() == []
    assert h.s.next_deadline() is None


def test_zero_twist_from_driver_is_one_zero_and_release() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.take()
    assert h.s.twist("a", ZERO, 0.1) is None
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.stops == {StopCause.RELEASE: 1} and h.s.driver is None


def test_negative_zero_is_zero() -> None:
    h = Harness()
    h.s.twist("a", Twist(Vector3(-0.0, 0, 0), Vector3(0, -0.0, 0)), 0.0)
    assert h.take() == [] and h.s.driver is None


def test_deadman_fires_exactly_at_the_timeout() -> None:
    h = Harness(deadman_timeout=1.0)
    h.s.twist("a", FWD, 10.0)
    h.take()
    assert h.s.next_deadline() == 11.0
    h.s.tick(10.999999)
    assert h.take() == []
    h.s.tick(11.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.stops == {StopCause.DEADMAN: 1} and h.events[-1] == (StopCause.DEADMAN, "a")
    assert h.s.driver is None and h.s.next_deadline() is None
    h.s.tick(12.0)
    assert h.take() == []


def test_each_twist_refreshes_the_deadman() -> None:
    h = Harness(deadman_timeout=1.0)
    h.s.twist("a", FWD, 0.0)
    h.s.twist("a", FWD, 0.9)
    h.take()
    h.s.tick(1.5)
    assert h.take() == []
    deadline = h.s.next_deadline()
    assert deadline == pytest.approx(1.9)
    assert deadline is not None
    h.s.tick(deadline)
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_disconnect_of_driver_stops_others_do_not() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.take()
    h.s.disconnect("b", 0.1)
    assert h.take() == []
    h.s.disconnect("a", 0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)] and h.s.stops == {StopCause.DISCONNECT: 1}


def test_shutdown_stops_driver_once() -> None:
    h = Harness()
    h.s.shutdown(0.0)
    assert h.take() == []
    h.s.twist("a", FWD, 0.0)
    h.take()
    h.s.shutdown(0.1)
    h.s.shutdown(0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)] and h.s.stops == {StopCause.SHUTDOWN: 1}


def test_republish_keeps_phase_and_stops_with_deadman() -> None:
    h = Harness(deadman_timeout=1.0, republish_hz=4.0)
    h.s.twist("a", FWD, 0.0)
    h.take()
    assert h.s.next_deadline() == 0.25
    h.s.tick(0.2499)
    assert h.take() == []
    h.s.tick(0.25)
    assert h.take() == [("tele_cmd_vel", FWD)]
    assert h.s.next_deadline() == 0.5
    # A late tick does not produce a burst of catch-ups.
    h.s.tick(0.9)
    assert h.take() == [("tele_cmd_vel", FWD)]
    assert h.s.next_deadline() == 1.0
    h.s.tick(1.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_republish_is_off_by_default() -> None:
    h = Harness()
    h.s.twist("a", FWD, 0.0)
    h.take()
    assert h.s.next_deadline() == 1.0
    h.s.tick(0.5)
    assert h.take() == []


def test_limits_scale_then_clamp_each_axis() -> None:
    limits = Limits(scale=(2.0, 1, 1, 1, 1, 0.5), clamp=(0.8, 0.1, None, None, None, 0.3))
    out, clamped = limits.apply(Twist(Vector3(0.3, -0.5, 5.0), Vector3(0, 0, -0.8)))
    assert out == Twist(Vector3(0.6, -0.1, 5.0), Vector3(0, 0, -0.3)) and clamped
    out, clamped = limits.apply(Twist(Vector3(0.4, 0, 0), Vector3(0, 0, 0.2)))
    assert out == Twist(Vector3(0.8, 0, 0), Vector3(0, 0, 0.1)) and not clamped


def test_clamping_is_counted_and_applied_before_publishing() -> None:
    h = Harness(limits=Limits(clamp=(0.2, None, None, None, None, None)))
    h.s.twist("a", Twist(Vector3(1e300, 0, 0), Vector3()), 0.0)
    assert h.take()[-1] == ("tele_cmd_vel", Twist(Vector3(0.2, 0, 0), Vector3()))
    assert h.s.clamped == 1


def test_huge_finite_values_are_not_mistaken_for_non_finite() -> None:
    h = Harness()
    huge = Twist(Vector3(1.7e308, 1.7e308, 0), Vector3())
    assert h.s.twist("a", huge, 0.0) is None
    assert h.take()[-1] == ("tele_cmd_vel", huge)


def test_scaling_to_zero_counts_as_a_stop() -> None:
    h = Harness(limits=Limits(scale=(0.0, 1, 1, 1, 1, 1)))
    h.s.twist("a", FWD, 0.0)
    assert h.take() == [] and h.s.driver is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected_whole(bad: float) -> None:
    h = Harness(limits=Limits(clamp=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)))
    assert h.s.twist("a", Twist(Vector3(0.1, bad, 0), Vector3()), 0.0) == "non_finite"
    assert h.take() == [] and h.s.driver is None


@pytest.mark.parametrize(
    "kwargs",
    [{"deadman_timeout": 0}, {"deadman_timeout": math.nan}, {"republish_hz": -1}, {"republish_hz": math.inf}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SafetyController(lambda stream, msg: None, **kwargs)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_linear_y"):
        Limits(clamp=(None, -1.0, None, None, None, None))
    with pytest.raises(ValueError, match="linear_x"):
        Limits(scale=(math.nan, 1, 1, 1, 1, 1))


# -- the DimOS 0.0.15 compatibility profile (config stop_movement / idle_stop) ---------------------------


def test_stop_movement_off_never_announces_a_drive() -> None:
    h = Harness(stop_movement=False)
    h.s.twist("a", FWD, 0.0)
    h.s.stop("a", 0.1)
    h.s.twist("b", TURN, 0.2)
    assert h.take() == [("tele_cmd_vel", FWD), ("tele_cmd_vel", ZERO), ("tele_cmd_vel", TURN)]
    # The lease still works as before.
    assert h.s.driver == "b" and h.s.twist("a", FWD, 0.3) == "not_driver"


def test_idle_stop_publishes_one_zero_per_stop_while_nobody_drives() -> None:
    h = Harness(idle_stop=True)
    h.s.stop("a", 0.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.driver is None and h.s.next_deadline() is None
    # While someone drives, a stop is the usual one zero that ends the drive, not two.
    h.s.twist("a", FWD, 0.1)
    h.take()
    h.s.stop("b", 0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.stops == {StopCause.STOP: 2}


def test_without_idle_stop_a_stop_while_nobody_drives_publishes_nothing() -> None:
    h = Harness()
    h.s.stop("a", 0.0)
    assert h.take() == [] and h.s.stops == {}

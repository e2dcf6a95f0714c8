"""The safety state machine with a fake clock: lease, deadman, stops, limits and republishing, at the boundaries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viewer_bridge.core.messages import Bool, Twist, Vector3
from viewer_bridge.core.safety import Cause, Decision, Limits, SafetyController

FWD = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0))
TURN = Twist(Vector3(0, 0, 0), Vector3(0, 0, 0.8))
ZERO = Twist.zero()


class Harness:
    """A controller whose decisions are recorded: ``take()`` returns and clears what was to be published.

    ``h.twist``/``stop``/``disconnect``/``shutdown``/``tick`` call the
    controller (``h.s``) and return the refusal, if any; ``events`` lists
    lease changes as ``("lease", client)`` and ``(cause, previous driver)``.
    """

    def __init__(self, **kwargs: object) -> None:
        self.out: list[tuple[str, object]] = []
        self.events: list[tuple[str, object]] = []
        self.decisions: list[Decision] = []
        self.s = SafetyController(**kwargs)  # type: ignore[arg-type]

    def _record(self, decision: Decision) -> str | None:
        self.decisions.append(decision)
        self.out.extend(decision.publish)
        if decision.ended is not None:
            self.events.append((decision.ended, decision.previous))
        if decision.started is not None:
            self.events.append(("lease", decision.started))
        return decision.refused

    def twist(self, client: str, twist: Twist, now: float, factor: float = 1.0) -> str | None:
        return self._record(self.s.twist(client, twist, now, factor))

    def stop(self, client: str, now: float) -> str | None:
        return self._record(self.s.stop(client, now))

    def disconnect(self, client: str, now: float) -> str | None:
        return self._record(self.s.disconnect(client, now))

    def shutdown(self, now: float) -> str | None:
        return self._record(self.s.shutdown(now))

    def tick(self, now: float) -> str | None:
        return self._record(self.s.tick(now))

    def take(self) -> list[tuple[str, object]]:
        out, self.out = self.out, []
        return out


def test_first_twist_takes_lease_and_announces_stop_movement() -> None:
    h = Harness()
    assert h.twist("a", FWD, 0.0) is None
    assert h.take() == [("stop_movement", Bool(True)), ("tele_cmd_vel", FWD)]
    assert h.s.driver == "a" and h.events == [("lease", "a")] and h.s.lease_changes == 1
    assert h.twist("a", TURN, 0.1) is None
    assert h.take() == [("tele_cmd_vel", TURN)]
    assert h.s.lease_changes == 1


def test_other_client_cannot_steal_the_lease() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.twist("b", TURN, 0.1) == "not_driver"
    # Even a zero twist from b is not a stop: only the explicit message is.
    assert h.twist("b", ZERO, 0.2) == "not_driver"
    assert h.take() == [] and h.s.driver == "a"


def test_anyone_can_stop_and_that_releases_the_lease() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    h.stop("b", 0.1)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.driver is None and h.s.zeros == {Cause.STOP: 1}
    assert h.events[-1] == (Cause.STOP, "a")
    h.twist("b", TURN, 0.2)
    assert h.take()[0] == ("stop_movement", Bool(True)) and h.s.driver == "b"


def test_after_a_stop_nothing_more_until_a_new_command() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.stop("a", 0.1)
    h.take()
    h.twist("a", ZERO, 0.3)  # a key-up after the stop: not a stream of zeros
    h.tick(100.0)
    assert h.take() == []
    assert h.s.next_deadline() is None
    h.stop("a", 100.1)  # but another explicit stop acts again
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_zero_twist_from_driver_is_one_zero_and_release() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.twist("a", ZERO, 0.1) is None
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.zeros == {Cause.RELEASE: 1} and h.s.driver is None


def test_negative_zero_is_zero() -> None:
    h = Harness()
    h.twist("a", Twist(Vector3(-0.0, 0, 0), Vector3(0, -0.0, 0)), 0.0)
    assert h.take() == [] and h.s.driver is None


def test_deadman_fires_exactly_at_the_timeout() -> None:
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 10.0)
    h.take()
    assert h.s.next_deadline() == 11.0
    h.tick(10.999999)
    assert h.take() == []
    h.tick(11.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.zeros == {Cause.DEADMAN: 1} and h.events[-1] == (Cause.DEADMAN, "a")
    assert h.s.driver is None and h.s.next_deadline() is None
    h.tick(12.0)
    assert h.take() == []


def test_each_twist_refreshes_the_deadman() -> None:
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 0.0)
    h.twist("a", FWD, 0.9)
    h.take()
    h.tick(1.5)
    assert h.take() == []
    deadline = h.s.next_deadline()
    assert deadline == pytest.approx(1.9)
    assert deadline is not None
    h.tick(deadline)
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_disconnect_of_driver_stops_others_do_not() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    h.disconnect("b", 0.1)
    assert h.take() == []
    h.disconnect("a", 0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)] and h.s.zeros == {Cause.DISCONNECT: 1}


def test_shutdown_stops_driver_once() -> None:
    h = Harness()
    h.shutdown(0.0)
    assert h.take() == []
    h.twist("a", FWD, 0.0)
    h.take()
    h.shutdown(0.1)
    h.shutdown(0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)] and h.s.zeros == {Cause.SHUTDOWN: 1}


def test_republish_keeps_phase_and_stops_with_deadman() -> None:
    h = Harness(deadman_timeout=1.0, republish_hz=4.0)
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.s.next_deadline() == 0.25
    h.tick(0.2499)
    assert h.take() == []
    h.tick(0.25)
    assert h.take() == [("tele_cmd_vel", FWD)]
    assert h.s.next_deadline() == 0.5
    # A late tick does not produce a burst of catch-ups.
    h.tick(0.9)
    assert h.take() == [("tele_cmd_vel", FWD)]
    assert h.s.next_deadline() == 1.0
    h.tick(1.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_republish_is_off_by_default() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.s.next_deadline() == 1.0
    h.tick(0.5)
    assert h.take() == []


def test_limits_scale_then_clamp_each_axis() -> None:
    limits = Limits(scale=(2.0, 1, 1, 1, 1, 0.5), clamp=(0.8, 0.1, None, None, None, 0.3))
    out, clamped = limits.apply(Twist(Vector3(0.3, -0.5, 5.0), Vector3(0, 0, -0.8)))
    assert out == Twist(Vector3(0.6, -0.1, 5.0), Vector3(0, 0, -0.3)) and clamped
    out, clamped = limits.apply(Twist(Vector3(0.4, 0, 0), Vector3(0, 0, 0.2)))
    assert out == Twist(Vector3(0.8, 0, 0), Vector3(0, 0, 0.1)) and not clamped


def test_clamping_is_counted_and_applied_before_publishing() -> None:
    h = Harness(limits=Limits(clamp=(0.2, None, None, None, None, None)))
    h.twist("a", Twist(Vector3(1e300, 0, 0), Vector3()), 0.0)
    assert h.take()[-1] == ("tele_cmd_vel", Twist(Vector3(0.2, 0, 0), Vector3()))
    assert h.s.clamped == 1


def test_huge_finite_values_are_not_mistaken_for_non_finite() -> None:
    h = Harness()
    huge = Twist(Vector3(1.7e308, 1.7e308, 0), Vector3())
    assert h.twist("a", huge, 0.0) is None
    assert h.take()[-1] == ("tele_cmd_vel", huge)


def test_scaling_to_zero_counts_as_a_stop() -> None:
    h = Harness(limits=Limits(scale=(0.0, 1, 1, 1, 1, 1)))
    h.twist("a", FWD, 0.0)
    assert h.take() == [] and h.s.driver is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected_whole(bad: float) -> None:
    h = Harness(limits=Limits(clamp=(1.0, 1.0, 1.0, 1.0, 1.0, 1.0)))
    assert h.twist("a", Twist(Vector3(0.1, bad, 0), Vector3()), 0.0) == "non_finite"
    assert h.take() == [] and h.s.driver is None


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


def test_a_scale_that_overflows_is_refused_never_published() -> None:
    h = Harness(limits=Limits(scale=(2.0, 1, 1, 1, 1, 1)))
    assert h.twist("a", Twist(Vector3(1e308, 0, 0), Vector3()), 0.0) == "non_finite"
    assert h.take() == [] and h.s.driver is None


def test_a_clamp_catches_an_overflowing_scale() -> None:
    h = Harness(limits=Limits(scale=(2.0, 1, 1, 1, 1, 1), clamp=(1.0, None, None, None, None, None)))
    assert h.twist("a", Twist(Vector3(1e308, 0, 0), Vector3()), 0.0) is None
    assert h.take()[-1] == ("tele_cmd_vel", Twist(Vector3(1.0, 0, 0), Vector3()))


def test_every_accepted_command_says_when_it_expires() -> None:
    h = Harness(deadman_timeout=0.5)
    h.twist("a", FWD, 10.0)
    assert h.decisions[-1].expires == 10.5
    h.twist("a", TURN, 10.2)
    assert h.decisions[-1].expires == 10.7
    h.twist("a", ZERO, 10.3)
    assert h.decisions[-1].expires is None


def test_a_command_handled_after_its_predecessor_lapsed_starts_a_new_drive() -> None:
    # The loop handled the next twist before its deadman timer ran (it was busy): the
    # old drive ends with its zero first, then the new one starts.
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.twist("a", TURN, 1.0) is None
    assert h.take() == [("tele_cmd_vel", ZERO), ("stop_movement", Bool(True)), ("tele_cmd_vel", TURN)]
    assert h.events[-2:] == [(Cause.DEADMAN, "a"), ("lease", "a")]
    # Just before the deadline it is a refresh.
    assert h.twist("a", FWD, 1.999999) is None
    assert h.take() == [("tele_cmd_vel", FWD)]


def test_a_lapsed_drive_frees_the_lease_for_someone_else() -> None:
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 0.0)
    h.take()
    assert h.twist("b", TURN, 0.999) == "not_driver"
    assert h.twist("b", TURN, 1.0) is None
    assert h.take() == [("tele_cmd_vel", ZERO), ("stop_movement", Bool(True)), ("tele_cmd_vel", TURN)]
    assert h.s.driver == "b"


def test_announcing_a_drive_can_be_turned_off() -> None:
    h = Harness(announce_drive=False)
    h.twist("a", FWD, 0.0)
    assert h.take() == [("tele_cmd_vel", FWD)]


def test_snapshot() -> None:
    h = Harness(deadman_timeout=1.0, limits=Limits(clamp=(0.1, None, None, None, None, None)))
    h.twist("a", FWD, 5.0)
    snap = h.s.snapshot()
    assert (snap.driver, snap.deadline, snap.clamped, snap.lease_changes) == ("a", 6.0, 1, 1)
    assert snap.command == Twist(Vector3(0.1, 0, 0), Vector3())
    h.stop("b", 5.5)
    snap = h.s.snapshot()
    assert (snap.driver, snap.command, snap.deadline, snap.zeros) == (None, None, None, {"stop": 1})


# -- every stop acts (a stop while nobody drives is one zero: the bridge may not know who drives) ----------


def test_a_stop_while_nobody_drives_is_one_zero_per_stop() -> None:
    h = Harness()
    h.stop("a", 0.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.decisions[-1].ended is None and h.decisions[-1].expires is None
    assert h.s.driver is None and h.s.next_deadline() is None
    # While someone drives, a stop is the usual one zero that ends the drive, not two.
    h.twist("a", FWD, 0.1)
    h.take()
    h.stop("b", 0.2)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.s.zeros == {Cause.STOP: 2}
    # Nothing else: no republished zero, no zero from time passing.
    h.tick(10.0)
    assert h.take() == []


# -- a stop that lasts until the driver lets go ---------------------------------------------------


def test_someone_elses_stop_holds_the_driver_until_it_releases() -> None:
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 0.0)
    h.stop("b", 0.1)
    h.take()
    # The driver's key is still held: its next refreshes are refused, naming who stopped it.
    assert h.twist("a", FWD, 0.3) == "stopped_by_other"
    assert h.decisions[-1].by == "b"
    assert h.twist("a", FWD, 1.2) == "stopped_by_other"  # each refused twist counts as holding on
    assert h.take() == [] and h.s.driver is None
    assert h.s.snapshot().held == {"a": "b"}
    # Anyone else may drive meanwhile.
    assert h.twist("c", TURN, 1.3) is None
    h.stop("c", 1.4)
    h.take()
    # A zero twist is the release (nothing to publish: nobody drives); then a new press drives.
    assert h.twist("a", ZERO, 1.5) is None
    assert h.take() == [] and h.s.snapshot().held == {}
    assert h.twist("a", FWD, 1.6) is None
    assert h.take() == [("stop_movement", Bool(True)), ("tele_cmd_vel", FWD)]


def test_the_held_driver_is_released_by_its_own_stop_or_silence_past_the_deadman() -> None:
    h = Harness(deadman_timeout=1.0)
    h.twist("a", FWD, 0.0)
    h.stop("b", 0.0)
    assert h.twist("a", FWD, 0.5) == "stopped_by_other"
    h.stop("a", 0.6)  # its own stop: one zero (every stop acts) and the release
    assert h.take()[-1] == ("tele_cmd_vel", ZERO)
    assert h.twist("a", FWD, 0.7) is None
    h.stop("b", 0.8)
    assert h.twist("a", FWD, 1.0) == "stopped_by_other"
    # Silence exactly one deadman long after its last (refused) twist: the key was let go.
    assert h.twist("a", FWD, 1.999999) == "stopped_by_other"
    assert h.twist("a", FWD, 2.999999 + 1e-6) is None
    assert h.s.driver == "a"


def test_the_drivers_own_stop_does_not_hold_it() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.stop("a", 0.1)
    assert h.twist("a", FWD, 0.2) is None


def test_a_held_client_that_disconnects_is_forgotten() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.stop("b", 0.1)
    h.disconnect("a", 0.2)
    assert h.s.snapshot().held == {}


# -- the latched e-stop ---------------------------------------------------------------------------


def latch(h: Harness, client: str, now: float, reason: str | None = None) -> None:
    h._record(h.s.latch(client, f"{client}-name", 1_700_000_000.0 + now, now, reason))


def test_an_estop_publishes_one_zero_and_the_latch_even_with_nobody_driving() -> None:
    h = Harness()
    latch(h, "panel", 0.0, "person in the aisle")
    assert h.take() == [("estop", Bool(True)), ("tele_cmd_vel", ZERO)]
    assert h.s.estop is not None and (h.s.estop.by, h.s.estop.reason) == ("panel-name", "person in the aisle")
    assert h.s.zeros == {Cause.ESTOP: 1}
    latch(h, "other", 1.0)  # latching again changes nothing and publishes nothing
    assert h.take() == [] and h.s.estop.by == "panel-name"


def test_while_latched_no_one_drives_and_goals_are_refused_but_stops_still_act() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    h.take()
    latch(h, "panel", 0.1)
    assert h.take() == [("estop", Bool(True)), ("tele_cmd_vel", ZERO)]
    assert h.events[-1] == (Cause.ESTOP, "a")
    for client in ("a", "b", "panel"):
        assert h.twist(client, FWD, 0.2) == "estopped"
    assert h.s.click_refused() == "estopped"
    h.stop("b", 0.3)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    # Clearing releases the latch, not the driver it stopped: that one must let go first.
    h._record(h.s.clear("c", 0.4))
    assert h.take() == [("estop", Bool(False))]
    assert h.s.click_refused() is None
    assert h.twist("a", FWD, 0.5) == "stopped_by_other" and h.decisions[-1].by == "panel"
    assert h.twist("b", TURN, 0.6) is None  # anyone else drives at once
    h._record(h.s.clear("c", 0.7))
    assert h.take()[-1] == ("tele_cmd_vel", TURN)  # clearing again: nothing


def test_twists_refused_for_the_estop_still_hold_on_however_long_it_lasts() -> None:
    h = Harness()  # deadman 1.0
    h.twist("a", FWD, 0.0)
    latch(h, "panel", 0.1)
    # The driver's key stays down through a latch far longer than the deadman: each refused twist holds on.
    for now in (0.5, 1.25, 2.0, 2.75):
        assert h.twist("a", FWD, now) == "estopped"
    h._record(h.s.clear("panel", 3.0))
    assert h.twist("a", FWD, 3.5) == "stopped_by_other"  # 0.75 s after its last refused twist: still held
    h.take()
    # Silence for exactly the deadman is letting go.
    assert h.twist("a", FWD, 4.5) is None
    assert h.take()[-1] == ("tele_cmd_vel", FWD)


def test_a_zero_twist_during_the_estop_is_a_release() -> None:
    h = Harness()
    h.twist("a", FWD, 0.0)
    latch(h, "panel", 0.1)
    assert h.twist("a", FWD, 0.5) == "estopped"
    assert h.twist("a", ZERO, 0.6) == "estopped"  # refused (latched), but the key was let go
    assert h.s.held_by("a") is None
    h._record(h.s.clear("panel", 0.7))
    assert h.twist("a", FWD, 0.8) is None


def test_a_controller_can_start_latched() -> None:
    from viewer_bridge.core.safety import Latch

    h = Harness(estop=Latch("field-laptop", 1_700_000_000.0, "restart"))
    assert h.twist("a", FWD, 0.0) == "estopped"
    h._record(h.s.clear("a", 1.0))
    assert h.take() == [("estop", Bool(False))]
    assert h.twist("a", FWD, 1.1) is None


def test_a_slow_link_scales_the_command_after_the_limits() -> None:
    h = Harness(limits=Limits(clamp=(0.4, None, None, None, None, None)))
    h.twist("a", Twist(Vector3(1.0, 0, 0), Vector3(0, 0, 0.5)), 0.0, factor=0.5)
    assert h.take()[-1] == ("tele_cmd_vel", Twist(Vector3(0.2, 0, 0), Vector3(0, 0, 0.25)))
    assert h.s.command == Twist(Vector3(0.2, 0, 0), Vector3(0, 0, 0.25))


# -- runs: twists that arrived together ---------------------------------------------------------------------

_RUN_TWISTS = st.sampled_from([
    FWD, TURN, ZERO,
    Twist(Vector3(2.0, 0, 0), Vector3(0, 0, -1.5)),  # over the clamp
    Twist(Vector3(math.nan, 0, 0), Vector3()),
    Twist(Vector3(1e308, 0, 0), Vector3()),  # finite, past the float range once scaled
])
_RUN_LIMITS = st.sampled_from([
    Limits(),
    Limits(clamp=(0.8, None, None, None, None, 1.0)),
    Limits(scale=(2.0, 1.0, 1.0, 1.0, 1.0, 0.0)),
])
# What happens first: (seconds later, client, action).
_BEFORE = st.lists(st.tuples(
    st.sampled_from([0.0, 0.3, 2.0]), st.sampled_from(["a", "b"]),
    st.sampled_from(["fwd", "zero", "stop", "latch", "clear", "disconnect"]),
), max_size=5)


def _flat(decision: Decision) -> list[object]:
    if decision.refused is not None:
        return [("refused", decision.refused)]
    return [*decision.publish, ("ended", decision.ended), ("started", decision.started)]


def _safety_state(s: SafetyController) -> tuple[object, ...]:
    return (
        s.driver, s.command, s.last_command_at, s.clamped, s.lease_changes, s.next_deadline(), s.estop,
        s.snapshot(),
    )


@settings(max_examples=300, deadline=None)
@given(limits=_RUN_LIMITS, before=_BEFORE, client=st.sampled_from(["a", "b"]),
       twists=st.lists(_RUN_TWISTS, max_size=12),
       factors=st.one_of(st.none(), st.lists(st.sampled_from([1.0, 0.5, 0.0]), min_size=12, max_size=12)),
       gap=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_a_run_of_twists_is_exactly_those_twists_one_at_a_time(
    limits: Limits, before: list[tuple[float, str, str]], client: str, twists: list[Twist],
    factors: list[float] | None, gap: float,
) -> None:
    one, run = (SafetyController(deadman_timeout=1.0, republish_hz=10.0, limits=limits) for _ in range(2))
    now = 0.0
    for later, who, action in before:
        now += later
        for s in (one, run):
            if action in ("fwd", "zero"):
                s.twist(who, FWD if action == "fwd" else ZERO, now)
            elif action == "stop":
                s.stop(who, now)
            elif action == "latch":
                s.latch(who, who, 0.0, now)
            elif action == "clear":
                s.clear(who, now)
            else:
                s.disconnect(who, now)
    now += gap
    factor = [1.0] * len(twists) if factors is None else factors[: len(twists)]
    expected = [item for i, twist in enumerate(twists) for item in _flat(one.twist(client, twist, now, factor[i]))]
    got: list[object] = []
    start = 0
    while start < len(twists):
        commands, expires = run.twist_run(client, twists[start:], now, None if factors is None else factor[start:])
        assert expires == now + 1.0
        if commands:
            for command in commands:
                got.extend([("tele_cmd_vel", command), ("ended", None), ("started", None)])
            start += len(commands)
            if start == len(twists):
                break
        got.extend(_flat(run.twist(client, twists[start], now, factor[start])))
        start += 1
    assert got == expected
    assert _safety_state(run) == _safety_state(one)


def test_a_run_takes_the_drivers_moving_twists_and_stops_where_twist_must_decide() -> None:
    s = SafetyController(deadman_timeout=1.0)
    assert s.twist_run("a", [FWD, TURN], 0.0)[0] == []  # nobody drives yet: twist() starts the drive
    s.twist("a", FWD, 0.0)
    assert s.twist_run("a", [TURN, FWD, ZERO, TURN], 0.5) == ([TURN, FWD], 1.5)  # up to the release
    assert s.command == FWD and s.last_command_at == 0.5
    assert s.twist_run("a", [TURN, Twist(Vector3(math.inf), Vector3())], 0.6) == ([TURN], 1.6)  # up to the refusal
    assert s.twist_run("b", [FWD], 0.7)[0] == []  # not the driver: twist() refuses it
    assert s.twist_run("a", [FWD], 1.7)[0] == []  # the drive lapsed: twist() ends it first
    assert s.command == TURN and s.last_command_at == 0.6

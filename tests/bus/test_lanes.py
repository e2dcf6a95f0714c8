"""Publishing lanes on their real threads: order, never blocking the producer, conflation, bounds, health, stop.

A destination here is a function that records what it is handed, on the
lane's thread; one that must be slow waits on an event the test sets, so
every "while the destination is busy" is exact, not timed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.bus.lane_support import CMD, ZERO, Clock, Destination, twist
from viewer_bridge.bus.lanes import Lane
from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist


@pytest.fixture
def dest() -> Iterator[Destination]:
    d = Destination()
    yield d
    d.release()  # never leave a lane's thread waiting at the gate


def started(lane: Lane) -> Lane:
    lane.start()
    return lane


@pytest.fixture
def lanes() -> Iterator[list[Lane]]:
    made: list[Lane] = []
    yield made
    for lane in made:
        assert lane.stop(5.0)


def busy(lane: Lane, dest: Destination, lanes: list[Lane], first: Twist) -> Lane:
    """Start ``lane`` with its destination stuck delivering ``first``: what is put next stays queued."""
    lanes.append(started(lane))
    dest.hold()
    lane.put(CMD, first)
    assert dest.waiting.wait(5)
    return lane


def test_every_message_is_delivered_in_order_on_the_lanes_own_thread(dest: Destination, lanes: list[Lane]) -> None:
    lane = started(Lane("subscribers", dest))
    lanes.append(lane)
    sent = [(CMD, twist(i)) if i % 3 else ("clicked_point", PointStamped(i, 0, 0, 0.0, "map")) for i in range(1, 500)]
    for stream, message in sent:
        lane.put(stream, message)
    lane.barrier().wait(5)
    assert dest.got == sent
    assert dest.threads == {"viewer-bridge-subscribers"}
    assert lane.delivered == {CMD: 333, "clicked_point": 166}


def test_putting_never_waits_for_a_busy_destination(dest: Destination, lanes: list[Lane]) -> None:
    lane = busy(Lane("slow", dest), dest, lanes, twist(1))
    for i in range(2, 2001):
        lane.put(CMD, twist(i))  # returns at once although the destination is stuck
    assert lane.pending == 1999
    dest.release()
    lane.barrier().wait(5)
    assert [m for _, m in dest.got] == [twist(i) for i in range(1, 2001)]


def test_a_command_lane_keeps_only_the_newest_of_a_run_of_twists(dest: Destination, lanes: list[Lane]) -> None:
    lane = busy(Lane("lcm-commands", dest, conflate=True), dest, lanes, twist(1))
    for i in range(2, 6):
        lane.put(CMD, twist(i))
    assert lane.pending == 1 and lane.conflated == 3
    dest.release()
    lane.barrier().wait(5)
    assert dest.got == [(CMD, twist(1)), (CMD, twist(5))]


def test_conflation_never_reorders_or_crosses_streams(dest: Destination, lanes: list[Lane]) -> None:
    lane = busy(Lane("lcm-commands", dest, conflate=True), dest, lanes, twist(1))
    lane.put(CMD, twist(2))
    lane.put("stop_movement", Bool(True))  # a barrier for conflation: what is before it stays before it
    lane.put(CMD, twist(3))
    lane.put(CMD, twist(4))
    lane.put("nav_cmd_vel", twist(5))  # another stream's twist replaces nothing
    lane.put(CMD, twist(6))
    dest.release()
    lane.barrier().wait(5)
    assert dest.got == [
        (CMD, twist(1)),
        (CMD, twist(2)),
        ("stop_movement", Bool(True)),
        (CMD, twist(4)),
        ("nav_cmd_vel", twist(5)),
        (CMD, twist(6)),
    ]
    assert lane.conflated == 1



def test_other_kinds_of_message_are_conflated_only_when_asked(dest: Destination, lanes: list[Lane]) -> None:
    goal = [PointStamped(float(i), 0.0, 0.0, 0.0, "map") for i in range(4)]
    lane = busy(Lane("rerun", dest, conflate=True, conflate_types=(Twist, PointStamped)), dest, lanes, twist(1))
    for g in goal:
        lane.put("clicked_point", g)
    plain = Destination()
    commands = busy(Lane("lcm-commands", plain, conflate=True), plain, lanes, twist(1))
    for g in goal:
        commands.put("clicked_point", g)
    dest.release()
    plain.release()
    lane.barrier().wait(5)
    commands.barrier().wait(5)
    assert dest.got == [(CMD, twist(1)), ("clicked_point", goal[3])]  # the newest goal of the run
    assert plain.got == [(CMD, twist(1)), *(("clicked_point", g) for g in goal)]  # twists only, by default

def test_past_max_pending_the_oldest_is_dropped_counted_and_reported_once(
    dest: Destination, lanes: list[Lane], caplog: pytest.LogCaptureFixture
) -> None:
    lane = busy(Lane("echo", dest, max_pending=10), dest, lanes, twist(0))
    with caplog.at_level(logging.ERROR, logger="viewer_bridge.bus.lanes"):
        for i in range(1, 26):
            lane.put(CMD, twist(i))
    assert lane.dropped == 15
    assert [r.getMessage() for r in caplog.records] == [
        "echo: more than 10 messages waiting; dropping the oldest (its destination is not keeping up; "
        "counted in viewer_bridge_lane_dropped_total)"
    ]
    dest.release()
    lane.barrier().wait(5)
    assert [m for _, m in dest.got] == [twist(i) for i in [0, *range(16, 26)]]


def test_a_zero_that_waits_too_long_makes_the_lane_unhealthy_until_it_is_out(
    dest: Destination, lanes: list[Lane]
) -> None:
    clock = Clock()
    lane = busy(Lane("lcm-commands", dest, conflate=True, clock=clock), dest, lanes, twist(1))
    clock.now = 10.0
    lane.put(CMD, ZERO)
    assert lane.health(10.49).ok  # just under half a second: not yet overdue
    health = lane.health(10.5)
    assert not health.ok
    assert health.problem == "lcm-commands: a zero twist has waited 0.5 s to be published"
    dest.release()
    lane.barrier().wait(5)
    assert lane.health(20.0).ok


def test_a_zero_replaced_by_a_newer_command_is_no_longer_waited_for(dest: Destination, lanes: list[Lane]) -> None:
    clock = Clock()
    lane = busy(Lane("lcm-commands", dest, conflate=True, clock=clock), dest, lanes, twist(1))
    lane.put(CMD, ZERO)
    lane.put(CMD, twist(2))  # the key pressed again before the zero went out: the zero is superseded
    assert lane.health(5.0).ok
    dest.release()
    lane.barrier().wait(5)
    assert dest.got == [(CMD, twist(1)), (CMD, twist(2))]


def test_a_failing_destination_is_counted_and_a_failed_zero_is_unhealthy_until_one_goes_out(
    dest: Destination, lanes: list[Lane], caplog: pytest.LogCaptureFixture
) -> None:
    lane = started(Lane("lcm-commands", dest, conflate=True))
    lanes.append(lane)
    dest.failing = OSError("No route to host")
    with caplog.at_level(logging.ERROR, logger="viewer_bridge.bus.lanes"):
        lane.put(CMD, twist(1))
        lane.put("stop_movement", Bool(True))
        lane.put(CMD, ZERO)
        lane.barrier().wait(5)
    assert lane.failures == {CMD: 2, "stop_movement": 1}
    assert lane.health(0.0).problem == (
        "lcm-commands: the last zero twist failed to publish (OSError: No route to host)"
    )
    # Logged at most every few seconds, not once per failure.
    assert [r.getMessage() for r in caplog.records] == [
        "lcm-commands: publishing tele_cmd_vel failed: No route to host (1 failures so far)"
    ]
    dest.failing = None
    lane.put(CMD, ZERO)
    lane.barrier().wait(5)
    assert lane.health(0.0).ok
    assert dest.got == [(CMD, ZERO)]


def test_stop_delivers_what_is_queued_and_gives_up_on_a_stuck_destination(
    dest: Destination, caplog: pytest.LogCaptureFixture
) -> None:
    lane = started(Lane("subscribers", dest))
    for i in range(100):
        lane.put(CMD, twist(i))
    assert lane.stop(5.0)
    assert len(dest.got) == 100 and lane.thread is None

    stuck = started(Lane("stuck", dest))
    dest.hold()
    stuck.put(CMD, twist(1))
    assert dest.waiting.wait(5)
    stuck.put(CMD, twist(2))
    with caplog.at_level(logging.WARNING, logger="viewer_bridge.bus.lanes"):
        assert stuck.stop(0.05) is False
    assert "stuck: still delivering after 0.1 s (1 messages queued); leaving it behind" in caplog.text
    thread = stuck.thread
    assert thread is not None
    dest.release()  # let it finish, so the test leaves no thread behind
    thread.join(5)
    assert not thread.is_alive()
    assert dest.got[-1] == (CMD, twist(2))


def test_past_max_pending_a_runs_oldest_messages_go_and_a_barrier_among_them_is_reached(
    dest: Destination, lanes: list[Lane]
) -> None:
    lane = busy(Lane("echo", dest, max_pending=10), dest, lanes, twist(0))
    lane.put_run(CMD, [twist(i) for i in range(1, 7)])
    reached = lane.barrier()
    lane.put_run(CMD, [twist(i) for i in range(7, 15)])
    assert lane.dropped == 4 and lane.pending == 10  # the first run's four oldest went, not the whole run
    assert not reached.is_set()  # twist(5) and twist(6), queued before it, are still there
    lane.put_run(CMD, [twist(i) for i in range(15, 21)])
    assert lane.dropped == 10 and lane.pending == 10
    assert reached.is_set()  # all that was queued before it is gone
    dest.release()
    lane.barrier().wait(5)
    assert [m for _, m in dest.got] == [twist(0), *(twist(i) for i in range(11, 21))]


# -- runs: what one read held, put together ----------------------------------------------------------------


class RunDestination(Destination):
    """A destination that also takes runs (``deliver_run``), recording each run's length."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []

    def run(self, stream: str, messages: list[Message]) -> None:
        self.runs.append(len(messages))
        for message in messages:
            self(stream, message)


def test_a_lane_with_deliver_run_delivers_runs_of_a_stream_in_order_around_barriers(lanes: list[Lane]) -> None:
    dest = RunDestination()
    lane = Lane("subscribers", dest, deliver_run=dest.run)
    lane.put(CMD, twist(0))
    lanes.append(started(lane))
    lane.barrier().wait(5)
    dest.hold()
    lane.put(CMD, twist(1))  # the thread takes it and waits at the gate: what follows queues up
    assert dest.waiting.wait(5)
    lane.put_run(CMD, [twist(i) for i in range(2, 6)])
    lane.put("clicked_point", PointStamped(1.0, 0.0, 0.0, 0.0, "map"))
    reached = lane.barrier()
    lane.put_run(CMD, [twist(6), twist(7)])
    pending = lane.pending
    dest.release()
    assert pending == 7  # by message, as put() would count them
    assert reached.wait(5)
    lane.barrier().wait(5)
    assert dest.got == [
        *((CMD, twist(i)) for i in range(2)),
        *((CMD, twist(i)) for i in range(2, 6)),
        ("clicked_point", PointStamped(1.0, 0.0, 0.0, 0.0, "map")),
        (CMD, twist(6)),
        (CMD, twist(7)),
    ]
    assert dest.runs[-3:] == [4, 1, 2]  # one call per run of a stream, none across the barrier
    assert lane.delivered == {CMD: 8, "clicked_point": 1}


def test_a_run_on_a_command_lane_leaves_its_newest_as_puts_would(dest: Destination, lanes: list[Lane]) -> None:
    lane = busy(Lane("lcm-commands", dest, conflate=True), dest, lanes, twist(1))
    lane.put("stop_movement", Bool(True))
    lane.put_run(CMD, [twist(i) for i in range(2, 7)])
    assert lane.pending == 2 and lane.conflated == 4
    dest.release()
    lane.barrier().wait(5)
    assert dest.got == [(CMD, twist(1)), ("stop_movement", Bool(True)), (CMD, twist(6))]


def test_a_failing_run_is_counted_and_the_next_run_still_goes(lanes: list[Lane]) -> None:
    dest = RunDestination()
    lane = Lane("subscribers", dest, deliver_run=dest.run)
    lanes.append(started(lane))
    dest.failing = RuntimeError("boom")
    lane.put_run(CMD, [twist(1), twist(2)])
    lane.barrier().wait(5)
    assert lane.failures == {CMD: 1}
    assert lane.health(0.0).problem == "subscribers: publishing fails (RuntimeError: boom)"
    dest.failing = None
    lane.put_run(CMD, [twist(3)])
    lane.barrier().wait(5)
    assert dest.got == [(CMD, twist(3))] and lane.health(0.0).ok

"""The outlet and its watchdog on real lanes and threads, with the clock in the test's hand.

The watchdog sleeps in real time until the deadline its clock says is next;
here that clock only moves when the test moves it, and a ``poke`` makes the
watchdog look again at once, so "the loop was late" and "the loop refreshed
the command just in time" are exact, not timed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from tests.bus.lane_support import CMD, ZERO, Clock, Destination, twist
from tests.conftest import wait_until
from viewer_bridge.bus.lanes import Lane
from viewer_bridge.bus.outlet import Outlet
from viewer_bridge.bus.watchdog import Watchdog
from viewer_bridge.core.messages import Bool, Message, PointStamped

GRACE = 0.03


class Rig:
    """An outlet with a command lane and a subscriber lane for ``tele_cmd_vel``, a click lane, inline calls."""

    def __init__(self, inline: bool = False, defer: Callable[[Callable[[], None]], object] | None = None) -> None:
        self.clock = Clock()
        self.bus = Destination()
        self.bus_clicks = Destination()
        self.subscribers = Destination()
        self.inline: list[tuple[str, Message]] = []
        self.commands = Lane("lcm-commands", self.bus, conflate=True, clock=self.clock)
        self.clicks = Lane("lcm-clicks", self.bus_clicks, clock=self.clock)
        self.subs = Lane("subscribers", self.subscribers, clock=self.clock)
        self.outlet = Outlet(
            {CMD: [self.commands, self.subs], "clicked_point": [self.clicks, self.subs]},
            command_streams={CMD},
            clock=self.clock,
            inline=(lambda stream, message: self.inline.append((stream, message))) if inline else None,
            grace=GRACE,
            defer=defer,
        )
        self.outlet.start()

    def settle(self) -> None:
        """Wait until every lane has delivered what was put on it so far."""
        for lane in self.outlet.lanes:
            assert lane.barrier().wait(5)

    def expire_at(self, now: float) -> None:
        """Move the clock to ``now`` and have the watchdog look at once."""
        self.clock.now = now
        self.outlet.watchdog.poke()

    def stop(self) -> None:
        self.bus.release()
        self.subscribers.release()
        self.outlet.stop(5.0)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.stop()


def test_every_message_reaches_each_lane_of_its_stream_in_order(rig: Rig) -> None:
    click = PointStamped(1.0, 2.0, 0.0, 0.0, "map")
    rig.outlet.publish(CMD, twist(1), 1.0)
    rig.outlet.publish("clicked_point", click)
    rig.outlet.publish(CMD, ZERO)
    rig.settle()
    assert rig.subscribers.got == [(CMD, twist(1)), ("clicked_point", click), (CMD, ZERO)]
    assert rig.bus_clicks.got == [("clicked_point", click)]
    # The command lane keeps the newest command: the twist may have been replaced by the zero before it went out.
    assert rig.bus.got in ([(CMD, twist(1)), (CMD, ZERO)], [(CMD, ZERO)])
    assert rig.outlet.due() is None  # the zero ended the command


def test_a_lapsed_command_gets_exactly_one_zero_from_the_watchdog(rig: Rig) -> None:
    rig.outlet.publish(CMD, twist(1), expires=1.0)
    rig.settle()  # out on the bus, so the zero cannot replace it on the command lane
    assert rig.outlet.due() == 1.0
    rig.expire_at(1.0 + GRACE - 0.001)  # the loop is late, but within the grace: still the loop's to do
    rig.settle()
    assert rig.outlet.watchdog.fired == 0 and rig.outlet.due() == 1.0
    rig.expire_at(1.0 + GRACE)
    wait_until(lambda: rig.outlet.watchdog.fired == 1, what="the watchdog's zero")
    rig.settle()
    assert rig.bus.got == [(CMD, twist(1)), (CMD, ZERO)]
    assert rig.subscribers.got == [(CMD, twist(1)), (CMD, ZERO)]
    assert rig.outlet.due() is None
    # The loop comes round and publishes its own zero for that drive: the lanes already have one.
    rig.outlet.publish(CMD, ZERO)
    rig.expire_at(5.0)
    rig.settle()
    assert rig.bus.got == [(CMD, twist(1)), (CMD, ZERO)]
    assert rig.outlet.watchdog.fired == 1


def test_a_refreshed_command_is_not_zeroed_and_its_new_deadline_is_kept(rig: Rig) -> None:
    rig.outlet.publish(CMD, twist(1), expires=1.0)
    rig.clock.now = 0.9
    rig.outlet.publish(CMD, twist(2), expires=1.9)  # a held key's next command, just in time
    rig.expire_at(1.5)  # past the first deadline, not the second
    rig.settle()
    assert rig.outlet.watchdog.fired == 0 and rig.outlet.due() == 1.9
    rig.expire_at(1.9 + GRACE)
    wait_until(lambda: rig.outlet.watchdog.fired == 1, what="the watchdog's zero")
    rig.settle()
    assert [m for _, m in rig.subscribers.got] == [twist(1), twist(2), ZERO]


def test_the_loops_zero_in_time_leaves_nothing_for_the_watchdog(rig: Rig) -> None:
    rig.outlet.publish(CMD, twist(1), expires=1.0)
    rig.outlet.publish(CMD, ZERO)
    rig.expire_at(10.0)
    rig.settle()
    assert rig.outlet.watchdog.fired == 0
    assert [m for _, m in rig.subscribers.got] == [twist(1), ZERO]


def test_a_new_drive_after_the_watchdogs_zero_is_guarded_again(rig: Rig) -> None:
    rig.outlet.publish(CMD, twist(1), expires=1.0)
    rig.expire_at(1.0 + GRACE)
    wait_until(lambda: rig.outlet.watchdog.fired == 1, what="the first zero")
    rig.outlet.publish(CMD, twist(2), expires=3.0)  # a new drive, before the loop's own zero for the old one
    rig.expire_at(3.0 + GRACE)
    wait_until(lambda: rig.outlet.watchdog.fired == 2, what="the second zero")
    rig.settle()
    assert [m for _, m in rig.subscribers.got] == [twist(1), ZERO, twist(2), ZERO]


def test_the_watchdogs_zero_reaches_the_bus_while_the_subscribers_are_stuck(rig: Rig) -> None:
    rig.subscribers.hold()
    rig.outlet.publish(CMD, twist(1), expires=1.0)
    assert rig.subscribers.waiting.wait(5)
    wait_until(lambda: rig.bus.got == [(CMD, twist(1))], what="the twist on the bus")
    rig.expire_at(1.0 + GRACE)
    wait_until(lambda: rig.bus.got == [(CMD, twist(1)), (CMD, ZERO)], what="the zero on the bus")
    assert rig.subscribers.got == []  # still stuck on the twist: it delays only itself
    rig.subscribers.release()
    rig.settle()
    assert rig.subscribers.got == [(CMD, twist(1)), (CMD, ZERO)]


def test_with_inline_subscribers_the_loops_zero_still_reaches_them_after_the_watchdogs() -> None:
    rig = Rig(inline=True)
    try:
        rig.outlet.publish(CMD, twist(1), expires=1.0)
        rig.settle()
        rig.expire_at(1.0 + GRACE)
        wait_until(lambda: rig.outlet.watchdog.fired == 1, what="the watchdog's zero")
        rig.outlet.publish(CMD, ZERO)  # the loop, unblocked: its subscribers are told now
        rig.settle()
        assert rig.inline == [(CMD, twist(1)), (CMD, ZERO)]
        assert rig.bus.got == [(CMD, twist(1)), (CMD, ZERO)]  # and the bus got one zero, not two
    finally:
        rig.stop()


def test_deferred_wakes_cost_one_callback_per_burst_and_a_zero_never_waits_for_it() -> None:
    deferred: list[Callable[[], None]] = []
    rig = Rig(defer=deferred.append)
    try:
        for i in range(1, 101):
            rig.outlet.publish(CMD, twist(i), expires=10.0)
        rig.outlet.publish("stop_movement", Bool(True))  # no lane for it: routed nowhere, and no error
        assert len(deferred) == 1
        deferred.pop()()
        rig.settle()
        assert [m for _, m in rig.subscribers.got] == [twist(i) for i in range(1, 101)]
        rig.outlet.publish(CMD, twist(101), expires=10.0)
        rig.outlet.publish(CMD, ZERO)  # woken at once, with what was queued before it
        wait_until(lambda: rig.bus.got[-1:] == [(CMD, ZERO)], what="the zero, without the deferred wake")
        wait_until(lambda: rig.subscribers.got[-2:] == [(CMD, twist(101)), (CMD, ZERO)], what="both, in order")
        assert len(deferred) == 1  # the twist's wake is still pending: the zero did not wait for it
        deferred.pop()()
    finally:
        rig.stop()


def test_a_watchdog_whose_expire_raises_logs_it_and_keeps_watching(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls: list[float] = []
    done = threading.Event()

    def expire(now: float) -> int:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("bus gone")
        done.set()
        return 1

    watchdog = Watchdog(lambda: None if done.is_set() else 1.0, expire, clock, grace=0.01)
    with caplog.at_level(logging.ERROR, logger="viewer_bridge.bus.watchdog"):
        watchdog.start()
        try:
            clock.now = 2.0
            watchdog.poke()
            assert done.wait(5)  # tried again after the failure (a grace later), and got through
        finally:
            watchdog.stop()
    assert watchdog.thread is None
    assert calls == [2.0, 2.0] and watchdog.fired == 1
    assert "the watchdog could not check or publish the zero" in caplog.text


def test_a_run_is_published_as_its_messages_one_at_a_time_would_be(rig: Rig) -> None:
    clicks = [PointStamped(float(i), 0.0, 0.0, 0.0, "map") for i in range(3)]
    rig.outlet.publish_run(CMD, [twist(1), twist(2), twist(3)], 1.0)
    rig.outlet.publish_run("clicked_point", clicks)
    rig.settle()
    assert rig.subscribers.got == [
        (CMD, twist(1)), (CMD, twist(2)), (CMD, twist(3)), *(("clicked_point", c) for c in clicks)
    ]
    assert rig.bus.got[-1] == (CMD, twist(3)) and rig.bus_clicks.got == [("clicked_point", c) for c in clicks]
    assert rig.outlet.due() == 1.0  # armed once, with the run's deadline
    rig.expire_at(1.0 + GRACE)
    wait_until(lambda: rig.bus.got[-1] == (CMD, ZERO), what="the watchdog's zero")
    rig.settle()
    assert rig.bus.got.count((CMD, ZERO)) == 1
    # A run that holds a zero goes one at a time: the zero ends the command it follows.
    rig.outlet.publish_run(CMD, [twist(4), ZERO], 3.0)
    rig.settle()
    assert rig.subscribers.got[-2:] == [(CMD, twist(4)), (CMD, ZERO)] and rig.outlet.due() is None

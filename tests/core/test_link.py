"""The link monitor with a fake clock: the speed curve at its corners, pings, and stale commands."""

from __future__ import annotations

import pytest

from viewer_bridge.core.link import LinkLimits, LinkMonitor

DEFAULTS = LinkLimits()


@pytest.mark.parametrize(
    ("rtt", "factor"),
    [
        (0.0, 1.0),
        (0.05, 1.0),
        (0.15, 1.0),
        (0.3, pytest.approx(0.7666666)),
        (0.375, pytest.approx(0.65)),
        (0.6, 0.3),
        (0.8, 0.3),
        (1.5, 0.3),
        (1.5000001, None),
        (2.0, None),
    ],
)
def test_the_default_curve(rtt: float, factor: float | None) -> None:
    assert DEFAULTS.factor_for(rtt) == factor


def measured(rtt: float) -> LinkMonitor:
    link = LinkMonitor(DEFAULTS, 0.0)
    payload = link.ping_due(0.0)
    assert payload is not None
    assert link.pong(payload, rtt)
    return link


def test_a_ping_answered_sets_the_round_trip_and_the_next_ping_a_second_after_the_last() -> None:
    link = measured(0.3)
    assert link.rtt == pytest.approx(0.3) and link.factor(0.3) == pytest.approx(0.7666666)
    assert link.ping_due(0.999) is None
    second = link.ping_due(1.0)
    assert second is not None and link.ping_due(1.5) is None  # one out at a time


def test_only_our_outstanding_ping_counts() -> None:
    link = LinkMonitor(DEFAULTS, 0.0)
    payload = link.ping_due(0.0)
    assert payload is not None and link.ping_due(0.1) is None  # one at a time
    assert not link.pong(b"", 0.05)  # someone else's ping (e.g. the keepalive's empty one)
    assert not link.pong(payload[:-1] + b"\x99", 0.05)
    assert link.pong(payload, 0.05) and not link.pong(payload, 0.06)


def test_an_unanswered_ping_slows_and_then_stops_the_driver() -> None:
    link = measured(0.05)
    payload = link.ping_due(1.0)
    assert payload is not None
    assert link.factor(1.1) == 1.0
    assert link.factor(1.3) == pytest.approx(0.7666666)
    assert link.factor(2.5) == 0.3
    assert link.factor(2.5000001) is None  # overdue: too slow
    assert link.pong(payload, 2.6)
    assert link.factor(2.6) is None  # it really was that slow
    later = link.ping_due(2.6)
    assert later is not None and link.pong(later, 2.65)
    assert link.factor(2.65) == 1.0


def test_before_any_answer_the_link_counts_as_fast() -> None:
    link = LinkMonitor(DEFAULTS, 0.0)
    assert link.factor(0.0) == 1.0
    link.ping_due(0.0)
    assert link.factor(0.1) == 1.0 and link.factor(0.3) == pytest.approx(0.7666666)


def test_limits_off_means_full_speed_and_nothing_stale() -> None:
    link = LinkMonitor(LinkLimits(enabled=False), 0.0)
    link.ping_due(0.0)
    assert link.factor(100.0) == 1.0
    assert link.stale(0.0, 1000.0) is None


def test_a_command_delayed_beyond_the_links_best_is_stale() -> None:
    link = measured(0.1)
    # The client's clock is 40 s behind the bridge's; commands take ~20 ms.
    wall = 1_700_000_040.0
    assert link.stale((wall - 40.02) * 1000, wall) is None
    assert link.stale((wall + 1.0 - 40.03) * 1000, wall + 1.0) is None  # 10 ms worse: fine
    # Held up 0.6 s in a queue somewhere: stale, by (0.62 - 0.02) + rtt/2.
    age = link.stale((wall + 2.0 - 40.62) * 1000, wall + 2.0)
    assert age == pytest.approx(0.62 - 0.02 + 0.05, abs=1e-6)
    # Exactly at the bound is not stale.
    link2 = measured(0.0)
    assert link2.stale(0.0, 100.0) is None
    assert link2.stale(1000.0, 101.5) is None
    assert link2.stale(2000.0, 102.500001) is not None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="full_speed_rtt < slow_rtt <= max_rtt"):
        LinkLimits(full_speed_rtt=0.7)
    with pytest.raises(ValueError, match="min_factor"):
        LinkLimits(min_factor=0.0)

"""What the operator is shown in the 3D view: status text, refusal gating, goal trail, spacing (time passed in)."""

from __future__ import annotations

import math

import pytest

from viewer_bridge.core.awareness import (
    GoalTrail,
    RefusalGate,
    Spacing,
    cmd_vel_values,
    refusal_text,
    status_text,
)
from viewer_bridge.core.messages import PointStamped, Twist, Vector3


def _twist(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> Twist:
    return Twist(Vector3(x, y, 0.0), Vector3(0.0, 0.0, yaw))


def test_status_names_the_driver_and_the_command_in_force() -> None:
    text = status_text({"driver": "127.0.0.1:5000 #0001", "clients": 2, "command": _twist(0.5, yaw=-0.25),
                        "command_age": 0.123})
    assert text == (
        "**Driver:** 127.0.0.1:5000 #0001\n\n"
        "**Command in force:** linear x +0.50 y 0.00 m/s, angular z -0.25 rad/s\n\n"
        "**Last command:** 0.1 s ago\n\n"
        "**Clients connected:** 2"
    )


def test_an_idle_status_does_not_change_as_time_passes() -> None:
    # The age is shown only while someone drives: an idle bridge's status is logged once, not every tick.
    first = status_text({"driver": None, "clients": 1, "command": None, "command_age": 3.0})
    later = status_text({"driver": None, "clients": 1, "command": None, "command_age": 60.0})
    assert first == later == "**Driver:** nobody\n\n**Command in force:** none (stopped)\n\n**Clients connected:** 1"


def test_status_shows_a_latched_estop_first() -> None:
    text = status_text({"driver": None, "clients": 0, "estop": "by 10.0.0.5:4000 #0007 at 12:00:01"})
    assert text.startswith("**E-STOP latched**: by 10.0.0.5:4000 #0007 at 12:00:01\n\n")
    assert status_text({"estop": True}).startswith("**E-STOP latched**\n\n")
    assert "E-STOP" not in status_text({"estop": False})


def test_status_never_shows_minus_zero_and_names_unusual_axes() -> None:
    twist = Twist(Vector3(-0.001, 0.0, 0.2), Vector3(0.1, 0.0, 0.0))
    text = status_text({"driver": "a", "command": twist, "command_age": -1e-9})
    assert "linear x 0.00 y 0.00 z +0.20 m/s, angular z 0.00 rad/s (x +0.10, y 0.00)" in text
    assert "0.0 s ago" in text
    assert "-0.00" not in text


def test_status_with_a_non_finite_age_leaves_the_age_out() -> None:
    text = status_text({"driver": "a", "command": _twist(1.0), "command_age": math.inf})
    assert "Last command" not in text and "Command in force:** linear x +1.00" in text


def test_refusal_gate_lets_one_per_client_and_reason_per_interval_and_counts_the_rest() -> None:
    gate = RefusalGate(interval=1.0)
    assert gate.admit("a", "not_driver", 0.0) == 0
    assert gate.admit("a", "not_driver", 0.5) is None
    assert gate.admit("a", "not_driver", 0.9) is None
    assert gate.admit("a", "click_not_3d", 0.9) == 0  # another reason: its own entry
    assert gate.admit("b", "not_driver", 0.9) == 0  # another client: its own entry
    assert gate.admit("a", "not_driver", 1.0) == 2  # "+2 more like it"
    assert gate.admit("a", "not_driver", 1.5) is None


def test_refusal_gate_memory_is_bounded() -> None:
    gate = RefusalGate(interval=10.0, max_keys=3)
    for i in range(3):
        assert gate.admit(f"c{i}", "x", 0.0) == 0
    assert gate.admit("c0", "x", 1.0) is None
    assert gate.admit("c3", "x", 1.0) == 0  # a fourth key: the memory starts afresh
    assert gate.admit("c0", "x", 1.0) == 0


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_intervals_must_be_finite_and_not_negative(bad: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        RefusalGate(interval=bad)
    with pytest.raises(ValueError, match="interval"):
        Spacing(bad)


def test_refusal_text_leads_with_the_reason() -> None:
    text = refusal_text("1.2.3.4:5 #0002", "click_not_3d", "it had no z")
    assert text == "click_not_3d: it had no z [client 1.2.3.4:5 #0002]"
    assert refusal_text("c", "rate_limited", "slow down", 41).endswith("[client c] (+41 more like it)")


def test_goal_trail_keeps_the_last_goals_and_numbers_them() -> None:
    trail = GoalTrail(length=3)
    assert trail.last is None and trail.points == [] and trail.label() == ""
    for i in range(5):
        trail.add(PointStamped(float(i), -float(i), 0.5, 0.0, "map"))
    assert trail.points == [(2.0, -2.0, 0.5), (3.0, -3.0, 0.5), (4.0, -4.0, 0.5)]
    assert trail.label() == "goal 5: (4.00, -4.00, 0.50) map"
    with pytest.raises(ValueError, match="length"):
        GoalTrail(length=0)


def test_spacing_says_how_long_until_the_next_entry() -> None:
    spacing = Spacing(0.2)
    assert spacing.wait(10.0) == 0.0
    spacing.sent(10.0)
    assert spacing.wait(10.05) == pytest.approx(0.15)
    assert spacing.wait(10.2) == 0.0


def test_cmd_vel_values_are_the_ground_robot_axes() -> None:
    assert cmd_vel_values(_twist(0.5, 0.25, -1.0)) == (0.5, 0.25, -1.0)

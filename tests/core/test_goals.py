"""Goal sanity limits, at their boundaries."""

from __future__ import annotations

import pytest

from viewer_bridge.core.goals import goal_out_of_range


def test_no_limits_let_everything_through() -> None:
    assert goal_out_of_range(1e6, -1e6, 1e5, "world", None, None) is None


@pytest.mark.parametrize(("x", "y"), [(500.0, 0.0), (0.0, -500.0), (300.0, 400.0)])
def test_the_horizontal_radius_is_inclusive(x: float, y: float) -> None:
    assert goal_out_of_range(x, y, 0.0, "world", 500.0, None) is None


def test_beyond_the_radius_is_refused_naming_the_distance_and_the_setting() -> None:
    refused = goal_out_of_range(400.0, 300.5, 1.0, "map", 500.0, 50.0)
    assert refused is not None
    field, detail = refused
    assert field is None
    assert detail == (
        "click at (400, 300.5, 1) is 500.3 m from the origin of 'map' horizontally, "
        "beyond max_goal_distance = 500 m; it was not published"
    )


def test_the_height_band_is_inclusive_and_both_ways() -> None:
    assert goal_out_of_range(0.0, 0.0, 50.0, "world", None, 50.0) is None
    assert goal_out_of_range(0.0, 0.0, -50.0, "world", None, 50.0) is None
    above = goal_out_of_range(1.0, 2.0, 50.5, "world", None, 50.0)
    below = goal_out_of_range(1.0, 2.0, -60.0, "world", None, 50.0)
    assert above is not None and above[0] == "z" and "50.5 m above" in above[1] and "max_goal_height = 50 m" in above[1]
    assert below is not None and "60.0 m below" in below[1]

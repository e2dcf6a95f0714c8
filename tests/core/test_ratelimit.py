"""The token bucket, with the clock passed in: levels, refills and its arguments at their boundaries."""

from __future__ import annotations

import math

import pytest

from viewer_bridge.core.ratelimit import TokenBucket


def test_a_bucket_starts_full_unless_told_otherwise() -> None:
    assert TokenBucket(10, 100, 0.0).level(0.0) == 100
    part = TokenBucket(10, 100, 0.0, start=20)
    assert part.level(0.0) == 20
    assert part.level(2.0) == 40  # refills at its rate from the start level
    assert part.level(100.0) == 100  # and never beyond the burst


def test_a_start_between_floor_and_burst_is_accepted_at_both_ends() -> None:
    assert TokenBucket(1, 5, 0.0, floor=-5, start=-5).level(0.0) == -5
    assert TokenBucket(1, 5, 0.0, floor=-5, start=5).level(0.0) == 5


@pytest.mark.parametrize("start", [5.5, -0.5, math.nan, math.inf])
def test_a_start_outside_floor_and_burst_is_refused_with_its_value(start: float) -> None:
    with pytest.raises(ValueError, match=f"start must be .* got {start!r}"):
        TokenBucket(1, 5, 0.0, start=start)

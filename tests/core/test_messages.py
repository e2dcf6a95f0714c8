"""Message value types: helpers, and byte-for-byte agreement of the LCM codec with dimos-lcm's classes."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3

finite = st.floats(allow_nan=False, allow_infinity=False)
vectors = st.builds(Vector3, finite, finite, finite)


def test_twist_helpers() -> None:
    assert Twist.zero().is_zero() and Twist.zero() == Twist(Vector3(), Vector3())
    assert not Twist(Vector3(0.5, 0, 0), Vector3()).is_zero()
    assert Twist(Vector3(-0.0, 0, 0), Vector3()).is_zero()
    assert list(Vector3(1, 2, 3)) == [1, 2, 3]
    assert not Twist(Vector3(math.nan, 0, 0), Vector3()).is_finite()


@given(vectors, vectors)
def test_twist_encoding_matches_dimos_lcm(linear: Vector3, angular: Vector3) -> None:
    twist = Twist(linear, angular)
    encoded = twist.lcm_encode()
    assert len(encoded) == 56
    assert encoded == bytes(twist.to_lcm().lcm_encode())
    assert Twist.lcm_decode(encoded) == twist


@given(finite, finite, finite, st.floats(0, 2**31 - 2), st.text(max_size=30))
def test_point_encoding_matches_dimos_lcm(x: float, y: float, z: float, ts: float, frame: str) -> None:
    point = PointStamped(x, y, z, ts, frame)
    encoded = point.lcm_encode()
    assert encoded == bytes(point.to_lcm().lcm_encode())
    decoded = PointStamped.lcm_decode(encoded)
    assert (decoded.x, decoded.y, decoded.z, decoded.frame_id) == (x, y, z, frame)
    assert abs(decoded.ts - ts) < 1e-6 * max(1.0, ts)


def test_bool_encoding_matches_dimos_lcm() -> None:
    for value in (True, False):
        message = Bool(value)
        assert message.lcm_encode() == bytes(message.to_lcm().lcm_encode())
        assert Bool.lcm_decode(message.lcm_encode()) == message


def test_lcm_objects_are_fresh() -> None:
    # dimos-lcm's generated constructors share default instances; ours never do.
    a = Twist(Vector3(1, 0, 0), Vector3()).to_lcm()
    b = Twist(Vector3(2, 0, 0), Vector3()).to_lcm()
    assert a.linear is not b.linear and a.linear.x == 1 and b.linear.x == 2

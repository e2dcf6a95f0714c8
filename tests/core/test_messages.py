"""Message value types: helpers, and byte-for-byte agreement of the LCM codec with dimos-lcm's classes."""

from __future__ import annotations

import importlib.util
import math
import struct
import subprocess
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import require
from viewer_bridge.core import messages
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3

finite = st.floats(allow_nan=False, allow_infinity=False)
vectors = st.builds(Vector3, finite, finite, finite)


@pytest.fixture(autouse=True)
def dimos_lcm_installed() -> None:
    # These tests compare with dimos-lcm (the lcm extra; make test installs it). Importing it here,
    # not in the first example that needs it, keeps its import time out of Hypothesis's deadline
    # whatever order the tests run in.
    require(importlib.util.find_spec("dimos_lcm") is not None, "dimos-lcm is not installed (pip install -e '.[lcm]')")
    importlib.import_module("dimos_lcm.geometry_msgs")
    importlib.import_module("dimos_lcm.std_msgs")


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




def test_fingerprints_are_dimos_lcms() -> None:
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped
    from dimos_lcm.geometry_msgs import Twist as LcmTwist
    from dimos_lcm.std_msgs import Bool as LcmBool

    for constant, lcm_class in (
        (messages.TWIST_FINGERPRINT, LcmTwist),
        (messages.POINT_STAMPED_FINGERPRINT, LcmPointStamped),
        (messages.BOOL_FINGERPRINT, LcmBool),
    ):
        assert constant.to_bytes(8, "big") == lcm_class._get_packed_fingerprint(), lcm_class


def test_the_bus_codec_imports_no_dimos_lcm() -> None:
    # Encoding runs on the event loop for every message; an import there would stall it once.
    code = """
import sys
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3
for message in (Twist(Vector3(1, 2, 3)), PointStamped(1, 2, 3, 4.5, "map"), Bool(True)):
    assert type(message).lcm_decode(message.lcm_encode()) == message
assert "dimos_lcm" not in sys.modules and "lcm" not in sys.modules, sorted(sys.modules)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _dimos_decode(lcm_class: Any, ours: Any, data: bytes) -> Any:
    try:
        return ours.from_lcm(lcm_class.lcm_decode(data))
    except Exception:
        return None


def _our_decode(ours: Any, data: bytes) -> Any:
    try:
        return ours.lcm_decode(data)
    except ValueError:
        return None


def _same(a: Any, b: Any) -> bool:
    # NaN payloads decode to NaN on both sides, which == cannot see: compare the packed bits too.
    return bool(a == b or msgspec.msgpack.encode(a) == msgspec.msgpack.encode(b))


@given(st.binary(max_size=80))
def test_twist_decoding_agrees_with_dimos_lcm_on_any_payload(tail: bytes) -> None:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    for data in (tail, messages.TWIST_FINGERPRINT.to_bytes(8, "big") + tail):
        assert _same(_our_decode(Twist, data), _dimos_decode(LcmTwist, Twist, data))


@given(st.binary(max_size=8), st.integers(0, 40), st.binary(max_size=60))
def test_point_decoding_agrees_with_dimos_lcm_on_any_payload(stamp: bytes, size: int, tail: bytes) -> None:
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped

    fingerprint = messages.POINT_STAMPED_FINGERPRINT.to_bytes(8, "big")
    data = fingerprint + b"\0\0\0\0" + stamp.ljust(8, b"\0") + struct.pack(">I", size) + tail
    for candidate in (data, data[: len(data) // 2], tail):
        assert _same(_our_decode(PointStamped, candidate), _dimos_decode(LcmPointStamped, PointStamped, candidate))


@given(st.binary(max_size=4))
def test_bool_decoding_agrees_with_dimos_lcm_on_any_payload(tail: bytes) -> None:
    from dimos_lcm.std_msgs import Bool as LcmBool

    for data in (tail, messages.BOOL_FINGERPRINT.to_bytes(8, "big") + tail):
        assert _same(_our_decode(Bool, data), _dimos_decode(LcmBool, Bool, data))


def test_a_payload_of_another_type_is_refused_with_both_fingerprints() -> None:
    expected = "geometry_msgs.Twist: fingerprint 0x1ebef06a50950e3e is not 0x2e7c07d7cdf7e027"
    with pytest.raises(ValueError, match=expected):
        Twist.lcm_decode(Bool(True).lcm_encode())
    with pytest.raises(ValueError, match="too short"):
        Twist.lcm_decode(Twist().lcm_encode()[:-1])

"""Message value types published by the bridge, and their dimos-lcm conversions.

The types are small immutable ``msgspec`` structs: cheap to build on the hot
path, hashable, comparable by value, and safe to hand to any number of
subscribers since nobody can mutate a message another subscriber holds.

Field names follow DimOS so that code written against DimOS's messages
(``pt.x``, ``pt.ts``, ``pt.frame_id``, ``tw.linear.x``) runs unchanged.

The LCM wire encoding (``lcm_encode``/``lcm_decode``, used on LCM and as the
Zenoh payload) is packed here directly, with DimOS's type fingerprints as
constants, so the bus needs no ``dimos_lcm`` import (tests check both against
dimos-lcm). Conversion to and from the ``dimos_lcm`` classes (``to_lcm``,
``from_lcm``) is lazy: that package is imported only when asked for.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Any, ClassVar, Final, Union

import msgspec

if TYPE_CHECKING:  # pragma: no cover - typing only
    from collections.abc import Iterator

__all__ = ["Bool", "Message", "PointStamped", "Twist", "Vector3"]


# LCM's wire layout for the types above: an 8-byte type fingerprint, then the
# fields big-endian, nested structs inline without fingerprints. A string is
# its length including a NUL terminator (uint32), the bytes, then the NUL.
_TWIST: Final = struct.Struct(">Q6d")
_HEADER_START: Final = struct.Struct(">QiiiI")  # fingerprint, seq, stamp.sec, stamp.nsec, len(frame_id)+1
_POINT: Final = struct.Struct(">3d")
_BOOL: Final = struct.Struct(">Qb")

# The fingerprints dimos-lcm's generated classes compute from the type
# definitions (a hash of field names and types, rotated through nested
# types). They change only if the type definition does; a test compares them
# with dimos-lcm's ``_get_packed_fingerprint()``.
TWIST_FINGERPRINT: Final = 0x2E7C07D7CDF7E027
POINT_STAMPED_FINGERPRINT: Final = 0x9CD764738EA629AF
BOOL_FINGERPRINT: Final = 0x1EBEF06A50950E3E


def _check_fingerprint(data: bytes, expected: int, type_name: str) -> None:
    if len(data) < 8:
        raise ValueError(f"{type_name}: {len(data)} bytes is too short for an LCM message")
    found = int.from_bytes(data[:8], "big")
    if found != expected:
        raise ValueError(f"{type_name}: fingerprint {found:#018x} is not {expected:#018x} (another type)")


class Vector3(msgspec.Struct, frozen=True, gc=False):
    """A 3-vector of float64 (geometry_msgs/Vector3)."""

    x: float = 0.0
    y: float = 0.0
    z: float = 0.0

    lcm_name: ClassVar[str] = "geometry_msgs.Vector3"

    def __iter__(self) -> Iterator[float]:
        yield self.x
        yield self.y
        yield self.z

    def is_zero(self) -> bool:
        return self.x == 0.0 and self.y == 0.0 and self.z == 0.0

    def is_finite(self) -> bool:
        return math.isfinite(self.x) and math.isfinite(self.y) and math.isfinite(self.z)

    def to_lcm(self) -> Any:
        from dimos_lcm.geometry_msgs import Vector3 as LcmVector3

        # The generated constructor shares mutable default instances, so every
        # field is passed explicitly and a fresh object is returned.
        return LcmVector3(float(self.x), float(self.y), float(self.z))

    @classmethod
    def from_lcm(cls, msg: Any) -> Vector3:
        return cls(float(msg.x), float(msg.y), float(msg.z))


_ZERO3 = Vector3()


class Twist(msgspec.Struct, frozen=True, gc=False):
    """A velocity command (geometry_msgs/Twist): no stamp, no frame."""

    linear: Vector3 = _ZERO3
    angular: Vector3 = _ZERO3

    lcm_name: ClassVar[str] = "geometry_msgs.Twist"

    @classmethod
    def zero(cls) -> Twist:
        return _ZERO_TWIST

    def is_zero(self) -> bool:
        # Written out, not through Vector3.is_zero: subscribers call this for every command.
        lin, ang = self.linear, self.angular
        return lin.x == 0.0 and lin.y == 0.0 and lin.z == 0.0 and ang.x == 0.0 and ang.y == 0.0 and ang.z == 0.0

    def is_finite(self) -> bool:
        return self.linear.is_finite() and self.angular.is_finite()

    def to_lcm(self) -> Any:
        from dimos_lcm.geometry_msgs import Twist as LcmTwist

        return LcmTwist(self.linear.to_lcm(), self.angular.to_lcm())

    @classmethod
    def from_lcm(cls, msg: Any) -> Twist:
        return cls(Vector3.from_lcm(msg.linear), Vector3.from_lcm(msg.angular))

    def lcm_encode(self) -> bytes:
        """The dimos-lcm encoding (56 bytes), packed directly: this runs for every command on the bus."""
        lin, ang = self.linear, self.angular
        return _TWIST.pack(TWIST_FINGERPRINT, lin.x, lin.y, lin.z, ang.x, ang.y, ang.z)

    @classmethod
    def lcm_decode(cls, data: bytes) -> Twist:
        """Decode the dimos-lcm encoding; raises ValueError for another type or a short payload."""
        _check_fingerprint(data, TWIST_FINGERPRINT, "geometry_msgs.Twist")
        try:
            _, lx, ly, lz, ax, ay, az = _TWIST.unpack_from(data)
        except struct.error:
            raise ValueError(f"geometry_msgs.Twist: {len(data)} bytes is too short") from None
        return cls(Vector3(lx, ly, lz), Vector3(ax, ay, az))

    def __str__(self) -> str:
        lx, ly, lz = self.linear
        ax, ay, az = self.angular
        return (
            f"Twist(linear=({lx:.3f}, {ly:.3f}, {lz:.3f}), "
            f"angular=({ax:.3f}, {ay:.3f}, {az:.3f}))"
        )


_ZERO_TWIST = Twist()


class PointStamped(msgspec.Struct, frozen=True, gc=False):
    """A point in a named frame at a time (geometry_msgs/PointStamped).

    ``ts`` is seconds since the Unix epoch, as a float.
    """

    x: float
    y: float
    z: float
    ts: float
    frame_id: str = "world"

    lcm_name: ClassVar[str] = "geometry_msgs.PointStamped"

    def is_finite(self) -> bool:
        return (
            math.isfinite(self.x)
            and math.isfinite(self.y)
            and math.isfinite(self.z)
            and math.isfinite(self.ts)
        )

    def to_lcm(self) -> Any:
        from dimos_lcm.geometry_msgs import Point as LcmPoint
        from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped
        from dimos_lcm.std_msgs import Header as LcmHeader
        from dimos_lcm.std_msgs import Time as LcmTime

        sec, nsec = self._stamp()
        header = LcmHeader(0, LcmTime(sec, nsec), self.frame_id)
        return LcmPointStamped(header, LcmPoint(float(self.x), float(self.y), float(self.z)))

    @classmethod
    def from_lcm(cls, msg: Any) -> PointStamped:
        stamp = msg.header.stamp
        return cls(
            x=float(msg.point.x),
            y=float(msg.point.y),
            z=float(msg.point.z),
            ts=stamp.sec + stamp.nsec / 1e9,
            frame_id=str(msg.header.frame_id),
        )

    def lcm_encode(self) -> bytes:
        """The dimos-lcm encoding, packed directly (seq 0, stamp from ``ts``)."""
        sec, nsec = self._stamp()
        frame = self.frame_id.encode("utf-8")
        return b"".join(
            (
                _HEADER_START.pack(POINT_STAMPED_FINGERPRINT, 0, sec, nsec, len(frame) + 1),
                frame,
                b"\0",
                _POINT.pack(self.x, self.y, self.z),
            )
        )

    def _stamp(self) -> tuple[int, int]:
        sec = math.floor(self.ts)
        return int(sec), min(round((self.ts - sec) * 1e9), 999_999_999)

    @classmethod
    def lcm_decode(cls, data: bytes) -> PointStamped:
        """Decode the dimos-lcm encoding; raises ValueError for another type or a short payload.

        As dimos-lcm does: the frame_id's last byte (its NUL) is dropped, bad
        UTF-8 is replaced, and bytes after the point are ignored.
        """
        _check_fingerprint(data, POINT_STAMPED_FINGERPRINT, "geometry_msgs.PointStamped")
        try:
            _, _seq, sec, nsec, size = _HEADER_START.unpack_from(data)
            start = _HEADER_START.size
            frame = data[start : start + size][:-1].decode("utf-8", "replace")
            x, y, z = _POINT.unpack_from(data, start + size)
        except struct.error:
            raise ValueError(f"geometry_msgs.PointStamped: {len(data)} bytes is too short") from None
        return cls(x=x, y=y, z=z, ts=sec + nsec / 1e9, frame_id=frame)


class Bool(msgspec.Struct, frozen=True, gc=False):
    """A boolean (std_msgs/Bool)."""

    data: bool = False

    lcm_name: ClassVar[str] = "std_msgs.Bool"

    def __bool__(self) -> bool:
        return self.data

    def to_lcm(self) -> Any:
        from dimos_lcm.std_msgs import Bool as LcmBool

        return LcmBool(bool(self.data))

    @classmethod
    def from_lcm(cls, msg: Any) -> Bool:
        return cls(bool(msg.data))

    def lcm_encode(self) -> bytes:
        return _BOOL.pack(BOOL_FINGERPRINT, 1 if self.data else 0)

    @classmethod
    def lcm_decode(cls, data: bytes) -> Bool:
        """Decode the dimos-lcm encoding; raises ValueError for another type or a short payload."""
        _check_fingerprint(data, BOOL_FINGERPRINT, "std_msgs.Bool")
        try:
            _, value = _BOOL.unpack_from(data)
        except struct.error:
            raise ValueError(f"std_msgs.Bool: {len(data)} bytes is too short") from None
        return cls(value != 0)


Message = Union[Twist, PointStamped, Bool]


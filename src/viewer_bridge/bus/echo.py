"""How published messages are printed by ``serve --echo`` and ``listen``: JSON lines or human text."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

import msgspec

from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist

__all__ = ["as_json_line", "as_record", "as_text_line", "echo_writer"]


def as_record(stream: str, message: Message) -> dict[str, Any]:
    """A JSON-able dict: ``{"stream": ..., "type": ..., <fields>}``."""
    record: dict[str, Any] = {"stream": stream, "type": message.lcm_name}
    if isinstance(message, Twist):
        record["linear"] = [message.linear.x, message.linear.y, message.linear.z]
        record["angular"] = [message.angular.x, message.angular.y, message.angular.z]
    elif isinstance(message, PointStamped):
        record.update(x=message.x, y=message.y, z=message.z, ts=message.ts, frame_id=message.frame_id)
    elif isinstance(message, Bool):
        record["data"] = message.data
    return record


def as_json_line(stream: str, message: Message) -> str:
    return msgspec.json.encode(as_record(stream, message)).decode("utf-8")


def as_text_line(stream: str, message: Message) -> str:
    if isinstance(message, PointStamped):
        return f"[CLICK] {message.x:.3f},{message.y:.3f},{message.z:.3f} frame={message.frame_id}"
    if isinstance(message, Twist):
        lx, ly, lz = message.linear
        ax, ay, az = message.angular
        tag = "STOP" if message.is_zero() else "TWIST"
        return f"[{tag}] linear=({lx:.3f},{ly:.3f},{lz:.3f}) angular=({ax:.3f},{ay:.3f},{az:.3f})"
    if isinstance(message, Bool):
        return f"[STOP_MOVEMENT] {str(message.data).lower()}"
    return f"[{stream}] {message!r}"  # pragma: no cover - every message type is handled above


def echo_writer(fmt: str, stream: IO[str] | None = None) -> Callable[[str, Message], None]:
    """A lane's delivery function that prints each message as ``fmt`` ("text" or "json") on ``stream``.

    It runs on the echo lane's own thread (see :mod:`viewer_bridge.bus.lanes`):
    a stdout that nobody reads blocks only that thread, and the lane drops the
    oldest lines (counted, reported once) instead of holding up the bridge.
    """
    line = as_json_line if fmt == "json" else as_text_line

    def write(name: str, message: Message) -> None:
        out = stream if stream is not None else sys.stdout
        out.write(line(name, message) + "\n")
        out.flush()

    return write

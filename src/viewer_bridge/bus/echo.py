"""How published messages are printed by ``serve --echo`` and ``listen``: JSON lines or human text."""

from __future__ import annotations

from typing import Any

import msgspec

from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist

__all__ = ["as_json_line", "as_record", "as_text_line"]


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

"""Goal sanity limits for clicks, sans I/O: a pick hundreds of metres away is a mis-click, not a goal.

A click in the viewer becomes a navigation goal downstream. A ray that hits
the sky box or far geometry yields a point no robot should set off for, so
the bridge can refuse clicks outside a horizontal radius and a height band
around the frame's origin (``max_goal_distance``, ``max_goal_height``),
telling the operator why instead of publishing the goal.
"""

from __future__ import annotations

import math

__all__ = ["goal_out_of_range"]


def goal_out_of_range(
    x: float, y: float, z: float, frame_id: str, max_distance: float | None, max_height: float | None
) -> tuple[str | None, str] | None:
    """``None`` if the point is within the limits, else ``(field, detail)`` naming the value and the setting."""
    if max_distance is not None:
        distance = math.hypot(x, y)
        if distance > max_distance:
            return None, (
                f"click at ({x:g}, {y:g}, {z:g}) is {distance:.1f} m from the origin of {frame_id!r} "
                f"horizontally, beyond max_goal_distance = {max_distance:g} m; it was not published"
            )
    if max_height is not None and abs(z) > max_height:
        return "z", (
            f"click at ({x:g}, {y:g}, {z:g}) is {abs(z):.1f} m {'above' if z > 0 else 'below'} the origin of "
            f"{frame_id!r}, beyond max_goal_height = {max_height:g} m; it was not published"
        )
    return None

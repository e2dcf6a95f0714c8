"""A DimOS module that records what reaches its inputs, for the blueprint test.

It runs in its own DimOS worker process, so every message it records has
crossed DimOS's transport. ``received()`` and ``server_url()`` are RPCs.
"""

from __future__ import annotations

import threading
from typing import Any

from dimos.core.core import rpc
from dimos.core.module import Module
from dimos.core.stream import In
from dimos.msgs.geometry_msgs.PointStamped import PointStamped
from dimos.msgs.geometry_msgs.Twist import Twist
from dimos.visualization.rerun.spec import RerunWebSocketServerSpec


def describe(stream: str, message: Any) -> dict[str, Any]:
    """A message as JSON: its stream, its class (to prove it is DimOS's own) and its values."""
    kind = f"{type(message).__module__}.{type(message).__qualname__}"
    if isinstance(message, Twist):
        lin, ang = message.linear, message.angular
        return {"stream": stream, "class": kind, "linear": [lin.x, lin.y, lin.z], "angular": [ang.x, ang.y, ang.z]}
    return {
        "stream": stream,
        "class": kind,
        "point": [message.x, message.y, message.z],
        "ts": message.ts,
        "frame_id": message.frame_id,
    }


class Recorder(Module):
    # The server's tele_cmd_vel arrives here through a blueprint remapping.
    twist_command: In[Twist]
    clicked_point: In[PointStamped]
    # Resolved by the coordinator to whichever module provides websocket_url().
    server: RerunWebSocketServerSpec

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._received: list[dict[str, Any]] = []

    @rpc
    def start(self) -> None:
        super().start()
        self.twist_command.subscribe(lambda msg: self._record("twist_command", msg))
        self.clicked_point.subscribe(lambda msg: self._record("clicked_point", msg))

    def _record(self, stream: str, message: Any) -> None:
        with self._lock:
            self._received.append(describe(stream, message))

    @rpc
    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    @rpc
    def server_url(self) -> str:
        """The server's websocket_url(), asked over RPC from this worker, as DimOS's Rerun bridge asks it."""
        return str(self.server.websocket_url())

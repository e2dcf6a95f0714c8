"""viewer-bridge: drive a robot from a remote 3D viewer, safely.

A drop-in for DimOS's ``RerunWebSocketServer``::

    from viewer_bridge import RerunWebSocketServer
    server = RerunWebSocketServer(port=3030)
    server.tele_cmd_vel.subscribe(print)
    server.start()
"""

from __future__ import annotations

from viewer_bridge.bus.streams import Stream
from viewer_bridge.config import BridgeConfig, ConfigError, load_config
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3
from viewer_bridge.core.protocol import ProtocolError
from viewer_bridge.server import AsyncRerunWebSocketServer, BindError, RerunWebSocketServer
from viewer_bridge.version import __version__

__all__ = [
    "AsyncRerunWebSocketServer",
    "BindError",
    "Bool",
    "BridgeConfig",
    "ConfigError",
    "PointStamped",
    "ProtocolError",
    "RerunWebSocketServer",
    "Stream",
    "Twist",
    "Vector3",
    "__version__",
    "load_config",
]

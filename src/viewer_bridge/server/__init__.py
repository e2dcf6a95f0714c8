"""The network shell: the asyncio WebSocket/HTTP server around the core, and the thread wrapper.

:mod:`~viewer_bridge.server.pump` feeds frames from picows into the core and
carries out what the core decides; :mod:`~viewer_bridge.server.threaded` runs
that server on a thread of its own for synchronous programs (DimOS's shape);
:mod:`~viewer_bridge.server.web` serves the browser page and
:mod:`~viewer_bridge.server.metrics` the Prometheus exposition.
"""

from viewer_bridge.server.pump import AsyncRerunWebSocketServer, BindError
from viewer_bridge.server.threaded import RerunWebSocketServer

__all__ = ["AsyncRerunWebSocketServer", "BindError", "RerunWebSocketServer"]

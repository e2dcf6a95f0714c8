"""The checks of DimOS's own tests for its RerunWebSocketServer, against any module of that shape.

    python module_checks.py MODULE [SETTING=VALUE ...]

MODULE is where ``RerunWebSocketServer`` is imported from: DimOS's
``dimos.visualization.rerun.websocket_server`` or ``viewer_bridge.dimos``; that
import is the only difference between runs. SETTING=VALUE pairs (JSON values)
go to the module's constructor. DimOS's tests
(``dimos/visualization/rerun/test_websocket_server.py`` in the DimOS
repository) start the module on its own, subscribe to its outputs in-process,
and send what dimos-viewer sends over a real WebSocket: a click becomes a
PointStamped, a twist a Twist, a stop a zero Twist, invalid JSON is survived,
and in a mixed session only the click makes a point. This script does the same
in its own code and prints, per check, one JSON line with what the outputs
carried; tests/test_dimos.py holds the expectations (DimOS's, and the
documented differences).

Each check ends with a fence: a click at a marker position on the same
connection. The server handles one connection's messages in order and
publishes synchronously, so once the fence's point is seen, everything sent
before it has been published.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from websockets.sync.client import ClientConnection, connect

FENCE = -0.4242  # an unlikely x, well inside any goal limit
DEADLINE = 10.0


def class_name(message: Any) -> str:
    return f"{type(message).__module__}.{type(message).__qualname__}"


class Outputs:
    """What the module's two outputs carried, as JSON-ready values."""

    def __init__(self, module: Any) -> None:
        self.lock = threading.Lock()
        self.points: list[dict[str, Any]] = []
        self.twists: list[dict[str, Any]] = []
        self.fenced = threading.Event()
        self._undo = [
            module.clicked_point.subscribe(self._point),
            module.tele_cmd_vel.subscribe(self._twist),
        ]

    def _point(self, msg: Any) -> None:
        if msg.x == FENCE:
            self.fenced.set()
            return
        with self.lock:
            self.points.append({"xyz": [msg.x, msg.y, msg.z], "ts": msg.ts, "frame_id": msg.frame_id,
                                "class": class_name(msg)})

    def _twist(self, msg: Any) -> None:
        with self.lock:
            self.twists.append({"linear": [msg.linear.x, msg.linear.y, msg.linear.z],
                                "angular": [msg.angular.x, msg.angular.y, msg.angular.z],
                                "is_zero": bool(msg.is_zero()), "class": class_name(msg)})

    def fence(self, ws: ClientConnection) -> None:
        ws.send(click(FENCE, 0.0, 0.0, "fence", 1000))
        if not self.fenced.wait(DEADLINE):
            raise TimeoutError(f"the fence click did not come out within {DEADLINE} s")
        for undo in self._undo:
            undo()

    def result(self) -> dict[str, Any]:
        with self.lock:
            return {"points": list(self.points), "twists": list(self.twists)}


def click(x: float, y: float, z: float, entity_path: str, timestamp_ms: int) -> str:
    return json.dumps({"type": "click", "x": x, "y": y, "z": z, "entity_path": entity_path,
                       "timestamp_ms": timestamp_ms})


def twist(lx: float, az: float) -> str:
    return json.dumps({"type": "twist", "linear_x": lx, "linear_y": 0.0, "linear_z": 0.0,
                       "angular_x": 0.0, "angular_y": 0.0, "angular_z": az})


STOP = json.dumps({"type": "stop"})


@contextmanager
def running(server_class: Any, settings: dict[str, Any]) -> Iterator[Any]:
    module = server_class(port=0, **settings)
    module.start()
    try:
        yield module
    finally:
        module.stop()


def session(module: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{module.bound_port}/ws", open_timeout=DEADLINE)


def check_click(module: Any) -> dict[str, Any]:
    outputs = Outputs(module)
    with session(module) as ws:
        ws.send(click(1.5, 2.5, 0.0, "/robot/base", 5000))
        outputs.fence(ws)
    return outputs.result()


def check_twist(module: Any) -> dict[str, Any]:
    outputs = Outputs(module)
    with session(module) as ws:
        ws.send(twist(0.5, 0.8))
        outputs.fence(ws)
    return outputs.result()


def check_stop(module: Any) -> dict[str, Any]:
    outputs = Outputs(module)
    with session(module) as ws:
        ws.send(STOP)
        outputs.fence(ws)
    return outputs.result()


def check_invalid_json(module: Any) -> dict[str, Any]:
    with session(module) as ws:
        ws.send("this is not json {{")
        ws.send(json.dumps({"type": "heartbeat", "timestamp_ms": 0}))
        # The same connection still works after the bad frame...
        outputs = Outputs(module)
        outputs.fence(ws)
    # ...and so does the server for the next client.
    outputs = Outputs(module)
    with session(module) as ws:
        ws.send(click(3.0, 4.0, 5.0, "/world", 2000))
        outputs.fence(ws)
    return outputs.result()


def check_mixed(module: Any) -> dict[str, Any]:
    outputs = Outputs(module)
    with session(module) as ws:
        ws.send(click(7.0, 8.0, 9.0, "/map", 1100))
        ws.send(twist(0.3, 0.2))
        ws.send(STOP)
        outputs.fence(ws)
    return outputs.result()


CHECKS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "click": check_click,
    "twist": check_twist,
    "stop": check_stop,
    "invalid_json": check_invalid_json,
    "mixed": check_mixed,
}


def main() -> None:
    sys.stdout.flush()
    out: TextIO = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # DimOS logs to stdout; the results get the pipe to themselves
    server_class = importlib.import_module(sys.argv[1]).RerunWebSocketServer
    settings = {}
    for pair in sys.argv[2:]:
        name, _, value = pair.partition("=")
        settings[name] = json.loads(value)
    for name, check in CHECKS.items():
        started = time.monotonic()
        with running(server_class, settings) as module:
            try:
                result: dict[str, Any] = {"check": name, **check(module)}
            except Exception as exc:
                result = {"check": name, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.monotonic() - started, 3)
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()

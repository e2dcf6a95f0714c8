"""Target: viewer-bridge's RerunWebSocketServer.

Runs in the project venv: ``.venv/bin/python -m bench.targets.bridge_server``.
Extra constructor arguments come from ``--kwarg NAME=JSON`` (how a variant
such as the LCM transport is benchmarked without another target file).
"""

from __future__ import annotations

from typing import Any

from bench.control import Recorder
from bench.targets._harness import HOST, main


class BridgeTarget:
    def __init__(self) -> None:
        self._cls: Any = None
        self._server: Any = None

    def load(self) -> None:
        from viewer_bridge import RerunWebSocketServer

        self._cls = RerunWebSocketServer

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._server = self._cls(port=0, host=HOST, **kwargs)
        hit = recorder.hit

        def on_twist(twist: Any) -> None:
            # The bridge may publish a zero Twist on its own (a driving client
            # disconnected, a deadman timeout); the load only sends non-zero
            # twists, so only those are counted.
            if not twist.is_zero():
                hit()

        self._server.tele_cmd_vel.subscribe(on_twist)
        self._server.clicked_point.subscribe(hit)

    def start(self) -> int:
        self._server.start()
        return int(self._server.bound_port)

    def stop(self) -> None:
        self._server.stop()


if __name__ == "__main__":
    main(BridgeTarget())

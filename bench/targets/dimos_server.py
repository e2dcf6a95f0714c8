"""Target: DimOS 0.0.15's RerunWebSocketServer, the baseline.

Runs in .bench/dimos-venv (see bench/setup_dimos.sh), from the repo root:
``.bench/dimos-venv/bin/python -m bench.targets.dimos_server``.

The server is a DimOS Module used standalone: ``RerunWebSocketServer(host=,
port=0)`` builds its asyncio loop thread and an RPC session, ``start()``
returns once the listener is bound (``bound_port``), ``stop()`` closes it
and the loop. Its ``tele_cmd_vel`` / ``clicked_point`` are ``Out`` streams
whose ``subscribe(cb)`` calls ``cb`` synchronously on the loop thread.
"""

from __future__ import annotations

from typing import Any

from bench.control import Recorder
from bench.targets._harness import HOST, main


class DimosTarget:
    def __init__(self) -> None:
        self._cls: Any = None
        self._server: Any = None

    def load(self) -> None:
        # Installed only in .bench/dimos-venv, not where mypy runs.
        from dimos.visualization.rerun.websocket_server import (  # type: ignore[import-not-found, unused-ignore]
            RerunWebSocketServer,
        )

        self._cls = RerunWebSocketServer

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._server = self._cls(host=HOST, port=0, **kwargs)
        # DimOS only publishes a zero Twist when told "stop", which the load
        # never sends, so every publish is one of ours: count them all.
        self._server.tele_cmd_vel.subscribe(recorder.hit)
        self._server.clicked_point.subscribe(recorder.hit)

    def start(self) -> int:
        self._server.start()
        return int(self._server.bound_port)

    def stop(self) -> None:
        self._server.stop()


if __name__ == "__main__":
    main(DimosTarget())

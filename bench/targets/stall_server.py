"""Target: viewer-bridge with an in-process subscriber that blocks, for the stall scenarios.

``--kwarg server=asyncio`` runs :class:`~viewer_bridge.AsyncRerunWebSocketServer`
on a loop thread of its own, where in-process subscribers are called inline
on the event loop, so the block holds the loop; ``server=threaded`` runs
:class:`~viewer_bridge.RerunWebSocketServer`, where they run on a thread of
their own. Either way, the subscriber to ``tele_cmd_vel`` sleeps
``block_seconds`` when a twist's ``linear_x / angular_z`` is at least ``block_from``:
the measuring process sends such a twist as the last of a drive and watches
for the deadman's zero on the bus. Every other ``--kwarg`` goes to the
server's constructor (``transports``, ``lcm_url``, ``deadman_timeout``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from bench.control import Recorder
from bench.targets._harness import HOST, main


class StallTarget:
    def __init__(self) -> None:
        self._mod: Any = None
        self._server: Any = None
        self._kind = "threaded"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def load(self) -> None:
        import viewer_bridge

        self._mod = viewer_bridge

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._kind = str(kwargs.pop("server", "threaded"))
        block_from = float(kwargs.pop("block_from", 0.75))
        block_seconds = float(kwargs.pop("block_seconds", 5.0))
        if self._kind == "asyncio":
            self._server = self._mod.AsyncRerunWebSocketServer(port=0, host=HOST, **kwargs)
        elif self._kind == "threaded":
            self._server = self._mod.RerunWebSocketServer(port=0, host=HOST, **kwargs)
        else:
            raise ValueError(f"server must be asyncio or threaded, got {self._kind!r}")

        def blocking(twist: Any) -> None:
            recorder.hit()
            # The ratio, as the measuring process sends it: a slow-link speed factor scales both axes.
            if twist.angular.z and twist.linear.x / twist.angular.z >= block_from:
                time.sleep(block_seconds)

        self._server.tele_cmd_vel.subscribe(blocking)

    def start(self) -> int:
        if self._kind == "threaded":
            self._server.start()
            return int(self._server.bound_port)
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="stall-loop", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._server.start(), loop).result(30)
        return int(self._server.bound_port)

    def stop(self) -> None:
        if self._kind == "threaded":
            self._server.stop()
            return
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


if __name__ == "__main__":
    main(StallTarget())

"""Target: the floor, a picows server that only counts text frames.

No JSON parsing, no message objects, no subscribers: what is left is the cost
of the event loop, the WebSocket framing and one Python call per frame. No
real server can beat it on this machine, so it bounds what optimisation of
viewer-bridge could still gain.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from bench.control import Recorder
from bench.targets._harness import HOST, main


class FloorTarget:
    def __init__(self) -> None:
        self._picows: Any = None
        self._recorder: Recorder | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    def load(self) -> None:
        import picows

        self._picows = picows

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._recorder = recorder

    def _listener_factory(self) -> Any:
        picows = self._picows
        text, close = picows.WSMsgType.TEXT, picows.WSMsgType.CLOSE
        assert self._recorder is not None, "construct() first"
        hit = self._recorder.hit

        class Counter(picows.WSListener):  # type: ignore[misc, name-defined]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                kind = frame.msg_type
                if kind is text:
                    hit()
                elif kind is close:
                    transport.send_close(frame.get_close_code())
                    transport.disconnect()

        def factory(_request: Any) -> Any:
            return Counter()

        return factory

    def start(self) -> int:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="floor-loop", daemon=True)
        self._thread.start()

        async def serve() -> asyncio.Server:
            server: asyncio.Server = await self._picows.ws_create_server(
                self._listener_factory(), HOST, 0, enable_auto_pong=True
            )
            return server

        fut: concurrent.futures.Future[asyncio.Server] = asyncio.run_coroutine_threadsafe(serve(), loop)
        self._server = fut.result(timeout=10.0)
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or server is None or thread is None:
            return

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        loop.close()


if __name__ == "__main__":
    main(FloorTarget())

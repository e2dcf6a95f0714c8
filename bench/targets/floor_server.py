"""Target: the floor, a picows server that only counts text frames.

No JSON parsing, no message objects, no subscribers: what is left is the cost
of the event loop, the WebSocket framing and one Python call per frame. No
real server can beat it on this machine, so it bounds what optimisation of
viewer-bridge could still gain.

Two constructor arguments add, one at a time, the least that viewer-bridge
must do beside that (``--variant 'floor-parse:floor:parse=true'``):
``parse`` decodes each frame with the bridge's own ``parse_message`` (msgspec
into a typed event), and ``handoff`` then delivers the event to the counting
subscriber on a thread of its own through a ``queue.SimpleQueue``, as issue 9
wants subscribers kept off the event loop. Neither checks, limits, arbitrates
or publishes anything: they bound a bridge with the isolation but none of
the rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
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
        self._parse = False
        self._handoff = False

    def load(self) -> None:
        import picows

        self._picows = picows

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        self._recorder = recorder
        unknown = set(kwargs) - {"parse", "handoff"}
        if unknown:
            raise ValueError(f"the floor takes parse= and handoff= only, not {sorted(unknown)}")
        self._parse = bool(kwargs.get("parse", False))
        self._handoff = bool(kwargs.get("handoff", False))
        if self._handoff and not self._parse:
            raise ValueError("handoff=true needs parse=true: it hands over the parsed event")

    def _listener_factory(self) -> Any:
        picows = self._picows
        text, close = picows.WSMsgType.TEXT, picows.WSMsgType.CLOSE
        assert self._recorder is not None, "construct() first"
        hit = self._recorder.hit

        parse, handoff = self._parse, self._handoff
        parse_message: Any = None
        if parse:
            from viewer_bridge.core.protocol import parse_message
        put: Any = None
        if handoff:
            handed: queue.SimpleQueue[object] = queue.SimpleQueue()
            put = handed.put

            def subscriber() -> None:
                while True:
                    handed.get()
                    hit()

            threading.Thread(target=subscriber, name="floor-subscriber", daemon=True).start()

        class Counter(picows.WSListener):  # type: ignore[misc, name-defined]
            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                kind = frame.msg_type
                if kind is text:
                    if parse:
                        event = parse_message(frame.get_payload_as_bytes())
                        if handoff:
                            put(event)
                            return
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

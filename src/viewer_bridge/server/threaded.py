"""The bridge for synchronous programs: the asyncio server on a thread of its own.

:class:`RerunWebSocketServer` has the shape of DimOS's class of that name:
``start()`` returns once the port is listening (or raises why it is not),
``stop()`` is idempotent and safe from any thread at any time, and the
streams are attributes you can subscribe to before starting. Subscribers run
on the server thread.

Start and stop are serialised by one lock, so a ``stop()`` racing a
``start()`` waits for the start to finish and then stops: it can neither be
lost nor hang on a loop that never came up.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from concurrent.futures import Future
from typing import Any, Final

from viewer_bridge.bus.mux import MuxNode
from viewer_bridge.bus.streams import Stream
from viewer_bridge.config import BridgeConfig
from viewer_bridge.core.messages import Bool, PointStamped, Twist
from viewer_bridge.server.pump import AsyncRerunWebSocketServer

__all__ = ["RerunWebSocketServer"]

log = logging.getLogger(__name__)

# Bounds on how long the caller's thread waits for the server thread. Start
# and stop each take milliseconds; these only matter if something is wedged.
_START_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 10.0

_running: weakref.WeakSet[RerunWebSocketServer] = weakref.WeakSet()


@atexit.register
def _stop_all_at_exit() -> None:
    # A program that forgets stop() still sends its zero twist on the way out.
    for server in list(_running):
        server.stop()


class RerunWebSocketServer:
    """The viewer bridge, run on a background thread.

    Keyword arguments are :class:`~viewer_bridge.config.BridgeConfig` fields
    (``port=0`` picks a free port). Use as a context manager to start and stop.
    """

    def __init__(self, config: BridgeConfig | None = None, /, **settings: Any) -> None:
        self._server = AsyncRerunWebSocketServer(config, **settings)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # Streams and state, delegated to the asyncio server.
    @property
    def clicked_point(self) -> Stream[PointStamped]:
        return self._server.clicked_point

    @property
    def tele_cmd_vel(self) -> Stream[Twist]:
        return self._server.tele_cmd_vel

    @property
    def stop_movement(self) -> Stream[Bool]:
        return self._server.stop_movement

    @property
    def mux(self) -> MuxNode | None:
        """The cmd_vel mux when ``mux`` is configured: subscribe to ``mux.cmd_vel``, feed ``mux.feed_nav``."""
        return self._server.mux

    @property
    def config(self) -> BridgeConfig:
        return self._server.config

    @property
    def server(self) -> AsyncRerunWebSocketServer:
        """The underlying asyncio server (for its stats, safety state and topics)."""
        return self._server

    @property
    def bound_port(self) -> int | None:
        return self._server.bound_port

    @property
    def is_running(self) -> bool:
        return self._server.is_running

    def websocket_url(self, host: str | None = None) -> str:
        return self._server.websocket_url(host)

    def http_url(self, path: str = "/", host: str | None = None) -> str:
        return self._server.http_url(path, host)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start listening; returns once connections are accepted. No-op if running."""
        with self._lock:
            if self._thread is not None:
                return
            loop = asyncio.new_event_loop()
            ready: Future[None] = Future()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="viewer-bridge", daemon=True
            )
            thread.start()
            try:
                ready.result(timeout=_START_TIMEOUT)
            except BaseException:
                # The loop has already been stopped and closed by _run.
                thread.join(timeout=_STOP_TIMEOUT)
                raise
            self._loop, self._thread = loop, thread
            _running.add(self)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def stop(self) -> None:
        """Stop: close clients, publish a zero twist if someone was driving, end the thread.

        Idempotent; safe before start, during start (it waits for start), and
        from a subscriber running on the server thread (then it returns at once
        and the thread stops right after).
        """
        if self._thread is not None and threading.current_thread() is self._thread:
            self._stop_from_server_thread()
            return
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            self._loop, self._thread = None, None
            _running.discard(self)
            try:
                asyncio.run_coroutine_threadsafe(self._server.stop(), loop).result(timeout=_STOP_TIMEOUT)
            except Exception:
                log.exception("stopping the bridge failed")
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=_STOP_TIMEOUT)

    def _stop_from_server_thread(self) -> None:
        # Blocking here would wait on ourselves: schedule the stop and return.
        loop = self._loop
        assert loop is not None
        self._loop, self._thread = None, None
        _running.discard(self)
        task = loop.create_task(self._server.stop())
        task.add_done_callback(lambda _: loop.stop())

    def __enter__(self) -> RerunWebSocketServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"RerunWebSocketServer({self.websocket_url()!r}, {state})"

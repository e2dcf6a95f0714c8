"""The bridge for synchronous programs: the asyncio server on a thread of its own.

:class:`RerunWebSocketServer` has the shape of DimOS's class of that name:
``start()`` returns once the port is listening (or raises why it is not),
``stop()`` is idempotent and safe from any thread at any time, and the
streams are attributes you can subscribe to before starting. Subscribers run
on a thread of their own, in order: a slow one delays the others, never the
network, the buses or the watchdog.

Its life is an explicit :class:`~viewer_bridge.server.pump.ServerState`
guarded by one condition variable:

* ``start()`` from several threads starts once; a ``start()`` during a
  ``stop()`` waits for the stop to finish, then starts.
* ``stop()`` from any other thread asks the server thread to stop and waits
  for it (bounded). ``stop()`` from one of the bridge's own threads (a
  subscriber, which is where DimOS-style code calls it) only asks and
  returns at once: waiting there would wait on itself. A ``stop()`` while a
  stop is already under way waits for that one (or, on the bridge's own
  threads, returns).
* The server thread itself marks the server stopped when its loop ends,
  however the stop was asked for.
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
from viewer_bridge.server.fleet import RobotLine
from viewer_bridge.server.pump import AsyncRerunWebSocketServer, BridgeSnapshot, ServerState

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
        self._server = AsyncRerunWebSocketServer(config, subscribers="thread", **settings)
        self._cond = threading.Condition()
        self._state = ServerState.STOPPED
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
    def estop(self) -> Stream[Bool]:
        """``Bool(True)`` when the e-stop latches, ``Bool(False)`` when it is cleared."""
        return self._server.estop

    @property
    def mux(self) -> MuxNode | None:
        """The cmd_vel mux when ``mux`` is configured: subscribe to ``mux.cmd_vel``, feed ``mux.feed_nav``."""
        return self._server.mux

    @property
    def robots(self) -> dict[str, RobotLine]:
        """A fleet station's robots by name (each has the four streams); empty without a ``robots`` table."""
        return self._server.robots

    @property
    def config(self) -> BridgeConfig:
        return self._server.config

    @property
    def server(self) -> AsyncRerunWebSocketServer:
        """The underlying asyncio server (for its stats, safety state and topics)."""
        return self._server

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def bound_port(self) -> int | None:
        return self._server.bound_port

    @property
    def is_running(self) -> bool:
        return self._state is ServerState.RUNNING

    def snapshot(self) -> BridgeSnapshot:
        """The bridge's state and counters now (driver, zeros by cause, frames, rejects, ...)."""
        return self._server.snapshot()

    def wait_delivered(self, timeout: float = 5.0) -> bool:
        """Wait until every message the bridge has published so far has reached the subscribers.

        Subscribers run on a thread of their own, a moment after the bridge
        handles a message; this waits for that thread to catch up (after, for
        example, a client's ``sync()`` showed the bridge has handled
        everything the client sent). Returns False after ``timeout`` (a
        subscriber is stuck, or it was called from a subscriber), and True at
        once when the bridge is not running.
        """
        loop = self._loop
        if loop is None or self._state is not ServerState.RUNNING:
            return True
        if self._on_own_thread():
            return False  # a subscriber waiting for subscribers would wait for itself
        future = asyncio.run_coroutine_threadsafe(self._server.wait_delivered(timeout), loop)
        try:
            return future.result(timeout + 1.0)
        except TimeoutError:
            return False

    def websocket_url(self, host: str | None = None) -> str:
        return self._server.websocket_url(host)

    def http_url(self, path: str = "/", host: str | None = None) -> str:
        return self._server.http_url(path, host)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Start listening; returns once connections are accepted. No-op if running."""
        with self._cond:
            if self._on_own_thread():
                raise RuntimeError("start() cannot be called from the bridge's own threads (a subscriber)")
            while self._state in (ServerState.STARTING, ServerState.STOPPING):
                if not self._cond.wait(_STOP_TIMEOUT):
                    raise TimeoutError(f"the bridge is still {self._state.value} after {_STOP_TIMEOUT:g} s")
            if self._state is ServerState.RUNNING:
                return
            self._state = ServerState.STARTING
        loop = asyncio.new_event_loop()
        ready: Future[None] = Future()
        thread = threading.Thread(target=self._run, args=(loop, ready), name="viewer-bridge", daemon=True)
        with self._cond:
            self._loop, self._thread = loop, thread
        thread.start()
        try:
            ready.result(timeout=_START_TIMEOUT)
        except BaseException:
            # _run has stopped and closed the loop, and marked the server stopped.
            thread.join(timeout=_STOP_TIMEOUT)
            raise
        with self._cond:
            if self._state is ServerState.STARTING:
                self._state = ServerState.RUNNING
                _running.add(self)
            self._cond.notify_all()

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
                # The worker threads start() and stop() used (bus probes, file reads) end with the loop.
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                with self._cond:
                    self._state = ServerState.STOPPED
                    self._loop = self._thread = None
                    _running.discard(self)
                    self._cond.notify_all()

    async def _shutdown(self) -> None:
        try:
            await self._server.stop()
        except Exception:
            log.exception("stopping the bridge failed")
        finally:
            asyncio.get_running_loop().stop()

    def stop(self) -> None:
        """Stop: close clients, publish a zero twist if someone was driving, end the thread.

        Idempotent and safe from any thread at any time; from a subscriber it
        returns at once and the bridge stops right after.
        """
        with self._cond:
            own = self._on_own_thread()
            while self._state is ServerState.STARTING and not own:
                self._cond.wait(_STOP_TIMEOUT)
            if self._state is ServerState.STOPPED:
                return
            if self._state is ServerState.RUNNING:
                self._state = ServerState.STOPPING
                loop = self._loop
                assert loop is not None
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            if own:
                return
            if not self._cond.wait_for(lambda: self._state is ServerState.STOPPED, _STOP_TIMEOUT):
                log.error("the bridge did not stop within %g s", _STOP_TIMEOUT)

    def _on_own_thread(self) -> bool:
        current = threading.current_thread()
        return current is self._thread or self._server.owns_thread(current)

    def __enter__(self) -> RerunWebSocketServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RerunWebSocketServer({self.websocket_url()!r}, {self._state.value})"

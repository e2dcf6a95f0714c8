"""Shared test fixtures: live bridges on ephemeral ports, WebSocket clients, and deadline waits."""

from __future__ import annotations

import contextlib
import http.server
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest
from websockets.sync.client import ClientConnection, connect

from viewer_bridge import RerunWebSocketServer
from viewer_bridge.core.messages import Bool, PointStamped, Twist

# A fleet station whose go2-1 is driven on the station's own streams and whose go2-2 has an agent that never
# comes, taking a single connection: a second client's stop goes over HTTP, to a robot the station does not see.
UNSEEN_ROBOT_STATION: Final[dict[str, Any]] = {
    "robots": {"go2-1": {"agent": False}, "go2-2": {}},
    "max_connections": 1,
    "zenoh_mode": "peer",
    "zenoh_multicast_scouting": False,
}
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip locally when a dependency is missing, but fail in CI, where nothing may be skipped silently."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a test dependency is missing: {why}")
    pytest.skip(why)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed (make test installs it)")
    assert path is not None
    return path


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 5.0,
    interval: float = 0.002,
    what: str | Callable[[], str] = "",
    pause: Callable[[float], object] = time.sleep,
) -> Any:
    """Poll ``predicate`` until it returns something truthy (and return it), or fail after ``timeout`` seconds.

    ``what`` names the condition in the failure (a callable is evaluated then,
    with fresh state); ``pause`` waits between polls (a browser test passes one
    that keeps Playwright's events flowing).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else (what or predicate)
            raise AssertionError(f"timed out after {timeout}s waiting for {described}")
        pause(interval)


# Variables that change what the code under test does: none may leak in from the shell running the tests.
_OUR_VARIABLES: Final = ("VIEWER_BRIDGE_", "DIMOS_VIEWER_WS_URL")
_SIGNALS: Final = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@pytest.fixture(autouse=True)
def isolated_global_state() -> Iterator[None]:
    """No logging handler or level, environment variable, signal handler or working directory survives a test.

    ``viewer-bridge serve`` run in-process installs a root handler on stderr;
    left behind, it would write the next test's bridge logs into output that
    test captures, and the suite's result would depend on its order. The
    suite passes in a random order too (``make test-random``).
    """
    manager = logging.root.manager
    loggers = [logging.root] + [lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    saved_loggers = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    saved_disable = manager.disable
    saved_env = dict(os.environ)
    saved_signals = {signum: signal.getsignal(signum) for signum in _SIGNALS}
    saved_cwd = os.getcwd()
    for key in [k for k in os.environ if k.startswith(_OUR_VARIABLES)]:
        del os.environ[key]
    try:
        yield
    finally:
        for lg, level, handlers, propagate, disabled in saved_loggers:
            lg.setLevel(level)
            lg.handlers[:] = handlers
            lg.propagate, lg.disabled = propagate, disabled
        # Loggers first made during the test keep no handler or level of their own.
        known = {id(lg) for lg in loggers}
        for lg in list(manager.loggerDict.values()):
            if isinstance(lg, logging.Logger) and id(lg) not in known:
                lg.setLevel(logging.NOTSET)
                lg.handlers.clear()
        manager.disable = saved_disable
        if os.environ != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            if signal.getsignal(signum) is not handler and handler is not None:
                signal.signal(signum, handler)
        if os.getcwd() != saved_cwd:
            os.chdir(saved_cwd)


@pytest.fixture(autouse=True)
def no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test must leave no bridge, transport or client thread of its own running behind it.

    Threads that existed before it (a module-scoped bridge shared by several
    tests) are that fixture's to stop, and so is a bridge a test marked
    ``hands_over_bridge`` starts for the tests after it. Tests marked
    ``all_threads`` (the bus tests, which open LCM and Zenoh handles of their
    own) must leave no thread at all behind, not only the bridge's.
    """
    before = set(threading.enumerate())
    yield
    if request.node.get_closest_marker("hands_over_bridge"):
        return
    every = request.node.get_closest_marker("all_threads") is not None

    def leftovers() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t not in before and (every or t.name.startswith("viewer-bridge"))
        ]

    try:
        wait_until(lambda: not leftovers(), timeout=10.0 if every else 5.0, interval=0.01)
    except AssertionError:
        pytest.fail(f"threads left running after the test: {leftovers()}")


class Recorder:
    """Collects every message published on a bridge's streams, in order, with arrival times.

    Subscribers run on the bridge's own thread a moment after it handles a
    message, so reading a list first waits for that thread to catch up
    (``wait_delivered``): after a client's barrier (``sync()``, a close
    handshake) every message before it is in the lists. ``of(stream,
    settle=False)`` reads without waiting (for tests that block a subscriber).
    """

    def __init__(self, server: RerunWebSocketServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self._items: list[tuple[str, Any, float]] = []
        for name in ("tele_cmd_vel", "clicked_point", "stop_movement", "estop"):
            getattr(server, name).subscribe(lambda msg, name=name: self._add(name, msg))

    def _add(self, stream: str, message: Any) -> None:
        with self._lock:
            self._items.append((stream, message, time.monotonic()))

    @property
    def items(self) -> list[tuple[str, Any, float]]:
        """``(stream, message, arrival time)`` in arrival order."""
        self._server.wait_delivered(timeout=10.0)
        with self._lock:
            return list(self._items)

    def of(self, stream: str, settle: bool = True) -> list[Any]:
        if settle:
            self._server.wait_delivered(timeout=10.0)
        with self._lock:
            return [m for s, m, _ in self._items if s == stream]

    @property
    def twists(self) -> list[Twist]:
        return self.of("tele_cmd_vel")

    @property
    def points(self) -> list[PointStamped]:
        return self.of("clicked_point")

    @property
    def stops(self) -> list[Bool]:
        return self.of("stop_movement")

    def wait_twists(self, n: int, timeout: float = 5.0) -> list[Twist]:
        wait_until(lambda: len(self.twists) >= n, timeout, what=f"{n} twists (have {self.twists})")
        return self.twists

    def wait_points(self, n: int, timeout: float = 5.0) -> list[PointStamped]:
        wait_until(lambda: len(self.points) >= n, timeout, what=f"{n} points (have {self.points})")
        return self.points

    def streams(self) -> list[str]:
        self._server.wait_delivered(timeout=10.0)
        with self._lock:
            return [s for s, _, _ in self._items]


BridgeFactory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


@pytest.fixture
def bridge_factory() -> Iterator[BridgeFactory]:
    """Start bridges on free ports; every one is stopped at the end of the test."""
    started: list[RerunWebSocketServer] = []

    def make(**settings: Any) -> tuple[RerunWebSocketServer, Recorder]:
        settings.setdefault("port", 0)
        # The link limits scale commands by each client's measured round trip; on a loaded test machine
        # that round trip varies, and tests that assert exact commands would vary with it. The link
        # tests turn them on.
        settings.setdefault("link_limits", False)
        server = RerunWebSocketServer(**settings)
        recorder = Recorder(server)
        server.start()
        started.append(server)
        return server, recorder

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def bridge(bridge_factory: BridgeFactory) -> tuple[RerunWebSocketServer, Recorder]:
    return bridge_factory()


def twist(**axes: float) -> str:
    return json.dumps({"type": "twist", **axes})


def client(server: RerunWebSocketServer, **kwargs: Any) -> ClientConnection:
    return connect(server.websocket_url(), open_timeout=5, **kwargs)


def recv_json(ws: ClientConnection, timeout: float = 5.0, status: bool = False) -> dict[str, Any]:
    """The next frame from the bridge, skipping status frames (sent on connect and on changes) unless ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        data = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        result: dict[str, Any] = json.loads(data)
        if status or result.get("type") != "status":
            return result


def until_closed(ws: ClientConnection, timeout: float = 5.0) -> None:
    """Read (and drop) frames until the bridge closes the connection; raises its ConnectionClosed."""
    deadline = time.monotonic() + timeout
    while True:
        ws.recv(timeout=max(0.0, deadline - time.monotonic()))


class CannedSite(http.server.BaseHTTPRequestHandler):
    """Another web server than the bridge (a proxy, another site): answers every request with ``answer``."""

    answer: tuple[int, bytes] = (200, b"<!doctype html><title>another site</title>")

    def _reply(self) -> None:
        status, body = self.answer
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def canned_site(handler: type[CannedSite] = CannedSite) -> Iterator[str]:
    """Serve ``handler`` on an ephemeral loopback port; yields its base URL (``http://127.0.0.1:PORT``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="canned-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

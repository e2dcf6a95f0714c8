"""Helpers for tests that put real messages on a real LCM bus or Zenoh network.

The subscribers here are deliberately *independent* of viewer_bridge's
transport code: plain ``lcm.LCM`` and plain ``zenoh`` sessions, decoded in
the tests with the ``dimos_lcm`` classes, so a bug in our transports cannot
hide behind the same bug in the checker.

Isolation: every test gets its own LCM multicast group and port (two test
runs on one machine never see each other's messages) and its own Zenoh TCP
ports on 127.0.0.1 with multicast scouting off.

Import it as ``tests.bus.transports.bus_support``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import random
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from tests.conftest import require


def need(ok: bool, reason: str) -> None:
    """Skip when ``ok`` is false, except in CI, where a missing capability is a failure."""
    require(ok, reason)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique_lcm_url(ttl: int = 0) -> str:
    """An LCM URL on a multicast group and port of its own (not DimOS's 239.255.76.67:7667)."""
    group = f"239.255.{random.randint(1, 254)}.{random.randint(1, 254)}"
    return f"udpm://{group}:{free_port(socket.SOCK_DGRAM)}?ttl={ttl}"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{os.getpid()}_{random.randrange(1 << 30):x}"


@functools.cache
def lcm_works() -> tuple[bool, str]:
    """Whether LCM can deliver to itself here (a multicast route exists and multicast loops back)."""
    try:
        from viewer_bridge.bus.transports import TransportError
        from viewer_bridge.bus.transports.lcm import LcmTransport
    except ImportError as exc:
        return False, f"lcm is not importable: {exc}"
    transport = LcmTransport(unique_lcm_url())
    try:
        transport.start()
    except TransportError as exc:
        return False, f"LCM cannot work on this host (run scripts/lcm-multicast.sh as root): {exc}"
    finally:
        transport.close()
    return True, ""


def require_lcm() -> None:
    try:
        import dimos_lcm  # noqa: F401
        import lcm  # noqa: F401
    except ImportError as exc:
        need(False, f"lcm/dimos-lcm not installed: {exc}")
    ok, why = lcm_works()
    need(ok, why)


def require_zenoh() -> None:
    try:
        import zenoh  # noqa: F401
    except ImportError as exc:
        need(False, f"eclipse-zenoh not installed: {exc}")


class Collector:
    """A thread-safe inbox of ``(name, payload)`` pairs with deadline-bounded waits."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()

    def put(self, name: str, data: bytes) -> None:
        self.inbox.put((name, bytes(data)))

    def get(self, timeout: float = 5.0, what: str = "a message") -> tuple[str, bytes]:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {what} arrived within {timeout} s") from None

    def get_on(self, name: str, timeout: float = 5.0) -> bytes:
        """The next payload on ``name``, skipping others (deadline over the whole wait)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"nothing arrived on {name} within {timeout} s")
            got, data = self.get(remaining, f"a message on {name}")
            if got == name:
                return data

    def drain(self) -> list[tuple[str, bytes]]:
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self.inbox.get_nowait())
        return items

    def assert_quiet(self, within: float) -> None:
        """Assert that nothing arrives for ``within`` seconds (a bounded wait for an absence)."""
        with contextlib.suppress(queue.Empty):
            name, _ = self.inbox.get(timeout=within)
            raise AssertionError(f"unexpected message on {name}")


class PlainLcm(Collector):
    """A plain ``lcm.LCM`` subscriber (regex ``pattern``) with its own receive thread."""

    def __init__(self, url: str, pattern: str = ".*") -> None:
        super().__init__()
        import lcm

        self.lc = lcm.LCM(url)
        self.lc.subscribe(pattern, self.put)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="test-plain-lcm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.lc.fileno()
        while True:
            readable, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            self.lc.handle_timeout(0)

    def publish(self, channel: str, data: bytes) -> None:
        self.lc.publish(channel, data)

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.lc = None

    def __enter__(self) -> PlainLcm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def zenoh_config(listen: list[str] | None = None, connect: list[str] | None = None, mode: str = "peer") -> Any:
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", json.dumps(mode))
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("listen/endpoints", json.dumps(listen or []))
    if connect:
        config.insert_json5("connect/endpoints", json.dumps(connect))
    return config


class PlainZenoh(Collector):
    """A plain zenoh session subscribed to ``key`` (a key expression)."""

    def __init__(self, key: str, listen: list[str] | None = None, connect: list[str] | None = None) -> None:
        super().__init__()
        import zenoh

        self.session = zenoh.open(zenoh_config(listen, connect))
        self.subscriber = self.session.declare_subscriber(
            key, lambda sample: self.put(str(sample.key_expr), sample.payload.to_bytes())
        )

    def publish(self, key: str, data: bytes) -> None:
        self.session.put(key, data)

    def close(self) -> None:
        self.subscriber.undeclare()
        self.session.close()

    def __enter__(self) -> PlainZenoh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def running_bridge(**settings: Any) -> Iterator[Any]:
    from viewer_bridge import RerunWebSocketServer

    server = RerunWebSocketServer(port=0, **settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Driver:
    """A WebSocket client that sends viewer messages to a bridge."""

    def __init__(self, url: str) -> None:
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(url, open_timeout=5))

    def send(self, **message: Any) -> None:
        self.ws.send(json.dumps(message))

    def twist(self, linear_x: float = 0.0, angular_z: float = 0.0, **more: float) -> None:
        self.send(type="twist", linear_x=linear_x, angular_z=angular_z, **more)

    def stop(self) -> None:
        self.send(type="stop")

    def click(self, x: float, y: float, z: float, entity_path: str = "/world/map", timestamp_ms: int = 0) -> None:
        self.send(type="click", x=x, y=y, z=z, entity_path=entity_path, timestamp_ms=timestamp_ms)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def warm_up_zenoh(driver: Driver, inbox: Collector, key: str, timeout: float = 10.0) -> None:
    """Resend a twist until the subscriber sees one: Zenoh drops puts made before the route exists.

    Ends the drive with a stop and drains everything, so the test starts clean.
    """
    deadline = time.monotonic() + timeout
    while True:
        driver.twist(linear_x=0.1)
        try:
            inbox.get_on(key, timeout=0.2)
            break
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"the Zenoh route to {key} never came up within {timeout} s") from None
    driver.stop()
    wait_for_zero(inbox, key)
    inbox.drain()


def wait_for_zero(inbox: Collector, name: str, timeout: float = 5.0) -> None:
    """Skip messages on ``name`` until the zero twist that ends a drive (twists still in flight come first)."""
    from viewer_bridge.core.messages import Twist

    deadline = time.monotonic() + timeout
    while not Twist.lcm_decode(inbox.get_on(name, timeout=max(0.0, deadline - time.monotonic()))).is_zero():
        pass


class LineReader:
    """Lines from a child process's pipe, via a thread, with deadline-bounded reads.

    (select() on a text pipe misses lines already pulled into Python's buffer
    by an earlier readline(); a reader thread has no such blind spot.)
    """

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, name="test-line-reader", daemon=True)
        self._thread.start()
        self.eof = False

    def _pump(self) -> None:
        for line in self._stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line; None at end of stream. Raises TimeoutError if none comes in time."""
        if self.eof:
            return None
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise TimeoutError(f"no line within {timeout} s") from None
        if line is None:
            self.eof = True
        return line

    def until(self, marker: str, timeout: float = 20.0) -> list[str]:
        """Lines up to and including the first containing ``marker``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self.get(deadline - time.monotonic())
            except TimeoutError:
                line = None
            if line is None:
                raise AssertionError(f"{marker!r} never appeared; got:\n" + "\n".join(seen))
            seen.append(line)
            if marker in line:
                return seen

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

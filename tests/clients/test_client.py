"""The Python clients against a real bridge on loopback: messages, error surfacing, auth, TLS, reconnect."""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.conftest import CannedSite, Recorder, canned_site, wait_until
from tests.security.conftest import get
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.clients.client import (
    AsyncViewerClient,
    Backoff,
    ConnectError,
    ConnectionState,
    NotConnected,
    ServerError,
    ViewerClient,
    _retry_after,
    redact_url,
)
from viewer_bridge.core.messages import PointStamped, Twist, Vector3

BridgeFactory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (pytest sees the wrapped signature, so fixtures work)."""

    @functools.wraps(test)
    def runner(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), timeout=30))

    return runner


def fast_backoff() -> Backoff:
    return Backoff(initial=0.02, maximum=0.2, jitter=0.0)


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``predicate`` on the event loop until it is true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        await asyncio.sleep(0.005)


@pytest.fixture
def no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    wait_until(
        lambda: not [t for t in threading.enumerate() if t not in before and t.name == "viewer-client"],
        what="client threads to end",
    )


# -- messages ------------------------------------------------------------------


@run_async
async def test_every_message_type_is_published(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        await client.click(1.5, -2.0, 0.25, entity_path="/world/map", timestamp_ms=1_700_000_000_123)
        await client.twist(linear_x=0.5, linear_y=-0.25, angular_z=0.8)
        await client.heartbeat()
        await client.stop()
        await client.sync()
    assert rec.points == [PointStamped(1.5, -2.0, 0.25, 1_700_000_000.123, "world")]
    assert rec.twists == [Twist(Vector3(0.5, -0.25, 0.0), Vector3(0.0, 0.0, 0.8)), Twist.zero()]


@run_async
async def test_click_defaults_its_timestamp_to_now(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        before = time.time()
        await client.click(1, 2, 3)
        await client.sync()
    # sync() means the bridge took the click; subscribers get it on their own thread, a moment later.
    (point,) = rec.wait_points(1)
    assert before - 0.002 <= point.ts <= time.time()


@run_async
async def test_non_finite_values_are_refused_before_sending(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        with pytest.raises(ValueError, match="angular_z"):
            await client.twist(angular_z=float("inf"))
        with pytest.raises(ValueError, match="x must be a finite number"):
            await client.click(float("nan"), 0, 0)
        await client.sync()
    assert rec.items == []


# -- error frames ----------------------------------------------------------------


@run_async
async def test_sync_raises_the_bridges_error_with_reason_and_field(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, _ = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        await client.send_raw({"type": "click", "x": 1, "y": 2, "z": None})
        with pytest.raises(ServerError) as caught:
            await client.sync()
        assert caught.value.reason == "click_not_3d"
        assert caught.value.field == "z"
        assert caught.value.frame["type"] == "error"
        await client.sync()  # reported once, then clear
        assert [e.reason for e in client.errors] == ["click_not_3d"]


@run_async
async def test_errors_arriving_before_one_barrier_come_together(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, _ = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        await client.send_raw("not json")
        await client.send_raw({"type": "warp"})
        await client.send_raw({"type": "twist", "linear_x": "fast"})
        with pytest.raises(ServerError) as caught:
            await client.sync()
    assert [caught.value.reason, *(e.reason for e in caught.value.more)] == [
        "invalid_json",
        "unknown_type",
        "invalid_field",
    ]


@run_async
async def test_sync_is_an_exact_barrier(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    # No grace period is involved, so the answer must be right every time.
    server, _ = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        for i in range(60):
            if i % 2:
                await client.send_raw({"type": "nope"})
                with pytest.raises(ServerError, match="unknown_type"):
                    await client.sync()
            else:
                await client.heartbeat()
                await client.sync()


@run_async
async def test_on_error_receives_errors_and_then_sync_does_not_raise(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, _ = bridge
    seen: list[ServerError] = []
    async with AsyncViewerClient(server.websocket_url(), on_error=seen.append) as client:
        await client.send_raw(b"\x00binary".decode())
        await client.send_raw('{"type": "twist", "linear_x": 1e400}')
        await client.sync()
    assert [e.reason for e in seen] == ["invalid_json", "non_finite"]


@run_async
async def test_a_second_driver_is_told_not_driver(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    async with AsyncViewerClient(server.websocket_url()) as first, AsyncViewerClient(server.websocket_url()) as second:
        await first.twist(linear_x=0.3)
        await first.sync()
        await second.twist(linear_x=-0.3)
        with pytest.raises(ServerError) as caught:
            await second.sync()
        assert caught.value.reason == "not_driver"
        await second.stop()  # anyone may stop
        await second.sync()
    assert rec.twists == [Twist(Vector3(0.3, 0, 0), Vector3()), Twist.zero()]


@run_async
async def test_close_confirms_and_raises_what_is_pending(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    client = AsyncViewerClient(server.websocket_url())
    await client.connect()
    await client.click(1, 2, 3)
    assert await client.close() is True
    assert client.state is ConnectionState.CLOSED
    assert len(rec.points) == 1  # handled before the close was answered
    assert await client.close() is False  # idempotent

    client = AsyncViewerClient(server.websocket_url())
    await client.connect()
    await client.send_raw({"type": "heartbeat", "timestamp_ms": -1})
    with pytest.raises(ServerError, match="timestamp_ms"):
        await client.close()


# -- connecting ------------------------------------------------------------------


@run_async
async def test_sending_without_a_connection_raises_not_connected(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, _ = bridge
    client = AsyncViewerClient(server.websocket_url())
    with pytest.raises(NotConnected, match="idle"):
        await client.stop()
    await client.connect()
    await client.close()
    with pytest.raises(NotConnected):
        await client.stop()
    with pytest.raises(NotConnected):
        await client.sync()
    with pytest.raises(RuntimeError):
        await client.connect()


@run_async
async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as held:  # bound, never listening: nothing can answer on this port
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        client = AsyncViewerClient(f"ws://127.0.0.1:{port}/ws")
        with pytest.raises(ConnectError, match="refused") as caught:
            await client.connect()
    assert caught.value.status is None
    assert client.state is ConnectionState.CLOSED


@run_async
async def test_wrong_path_is_a_404(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, _ = bridge
    with pytest.raises(ConnectError, match="HTTP 404") as caught:
        await AsyncViewerClient(server.websocket_url().replace("/ws", "/nope")).connect()
    assert caught.value.status == 404



class _MovedBridge(CannedSite):
    """A front that sends the upgrade elsewhere on itself, where it is refused: a proxy in front of a bridge."""

    protocol_version = "HTTP/1.1"  # websockets reads nothing older
    seen: list[tuple[str, str | None]] = []

    def _reply(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        if self.path.startswith("/moved/"):
            body = b'{"reason":"busy"}'
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
        else:
            body = b""
            self.send_response(302)
            self.send_header("Location", "/moved/ws?token=secret")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _reply


@run_async
async def test_a_refusal_after_a_redirect_names_where_it_came_from() -> None:
    _MovedBridge.seen = []
    with canned_site(_MovedBridge) as url:
        ws_url = url.replace("http:", "ws:") + "/ws"
        with pytest.raises(ConnectError) as caught:
            await AsyncViewerClient(ws_url, token="tok", open_timeout=5).connect()
    assert str(caught.value) == (
        f"the bridge at {ws_url.rsplit('/', 1)[0]}/moved/ws?token=*** (redirected from {ws_url}) refused the "
        "connection: HTTP 429: busy"
    )
    assert caught.value.status == 429
    assert _MovedBridge.seen == [("/ws", "Bearer tok"), ("/moved/ws?token=secret", "Bearer tok")]  # the same origin


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        AsyncViewerClient("http://127.0.0.1:3030/ws")
    with pytest.raises(ValueError, match="not a wss"):
        AsyncViewerClient("ws://127.0.0.1:3030/ws", cafile="ca.pem")


@pytest.mark.parametrize("how", ["bearer", "query"])
@run_async
async def test_token_by_header_or_query(bridge_factory: BridgeFactory, how: str) -> None:
    server, rec = bridge_factory(token="s3cret-0123456789abcdef")
    url = server.websocket_url()
    with pytest.raises(ConnectError, match="HTTP 401: missing or wrong token") as caught:
        await AsyncViewerClient(url).connect()
    assert caught.value.status == 401
    with pytest.raises(ConnectError, match="401"):
        await AsyncViewerClient(url, token="wrong").connect()
    token = "s3cret-0123456789abcdef"
    client = AsyncViewerClient(url, token=token) if how == "bearer" else AsyncViewerClient(url + f"?token={token}")
    async with client:
        await client.click(1, 1, 1)
        await client.sync()
    assert len(rec.points) == 1


def test_redact_url_hides_the_token() -> None:
    assert redact_url("ws://h:1/ws?token=abc&x=1") == "ws://h:1/ws?token=***&x=***"
    assert redact_url("wss://h/ws#token=abc") == "wss://h/ws#token=***"
    assert "abc" not in redact_url("ws://h:1/ws?abc")
    assert redact_url("ws://h:1/ws") == "ws://h:1/ws"


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return str(cert_file), str(key_file), str(ca_file)


@run_async
async def test_tls_with_a_ca_file_and_refused_without(
    bridge_factory: BridgeFactory, tls_files: tuple[str, str, str]
) -> None:
    cert, key, ca = tls_files
    server, rec = bridge_factory(tls_cert=cert, tls_key=key)
    url = server.websocket_url()
    assert url.startswith("wss://")
    with pytest.raises(ConnectError, match=r"TLS .* failed: CERTIFICATE_VERIFY_FAILED"):
        await AsyncViewerClient(url).connect()
    async with AsyncViewerClient(url, cafile=ca) as client:
        await client.twist(linear_x=0.1)
        await client.sync()
    async with AsyncViewerClient(url, verify=False) as client:
        await client.click(1, 2, 3)
        await client.sync()
    assert len(rec.twists) == 2 and len(rec.points) == 1


# -- reconnecting ----------------------------------------------------------------


@run_async
async def test_reconnects_with_backoff_after_the_bridge_restarts(bridge_factory: BridgeFactory) -> None:
    first, _ = bridge_factory()
    port = first.bound_port
    states: list[ConnectionState] = []
    client = AsyncViewerClient(first.websocket_url(), backoff=fast_backoff(), on_state=states.append)
    await client.connect()
    await asyncio.to_thread(first.stop)
    await eventually(lambda: client.state is not ConnectionState.CONNECTED)
    with pytest.raises(NotConnected):
        await client.twist(linear_x=1.0)  # never queued for later
    _, rec = await asyncio.to_thread(bridge_factory, port=port)
    await client.wait_connected(timeout=5)
    await client.click(4, 5, 6)
    await client.sync()
    await client.close()
    assert [p.x for p in rec.points] == [4.0]
    assert rec.twists == []
    assert states[:2] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    assert ConnectionState.DISCONNECTED in states and ConnectionState.CONNECTING in states
    assert states[-2:] == [ConnectionState.CONNECTED, ConnectionState.CLOSED]


@run_async
async def test_start_keeps_trying_until_the_bridge_is_up(bridge_factory: BridgeFactory) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    client = AsyncViewerClient(f"ws://127.0.0.1:{port}/ws", backoff=fast_backoff())
    client.start()
    await eventually(lambda: client.last_connect_error is not None)
    assert client.state is not ConnectionState.CONNECTED
    assert "refused" in str(client.last_connect_error)
    probe.close()  # free the port for the bridge
    await asyncio.to_thread(bridge_factory, port=port)
    await client.wait_connected(timeout=5)
    await client.stop()
    await client.close()
    assert client.state is ConnectionState.CLOSED


@run_async
async def test_close_while_waiting_to_reconnect() -> None:
    with socket.socket() as held:  # bound, never listening
        held.bind(("127.0.0.1", 0))
        client = AsyncViewerClient(f"ws://127.0.0.1:{held.getsockname()[1]}/ws", backoff=Backoff(30, 30))
        client.start()
        await eventually(lambda: client.state is ConnectionState.DISCONNECTED)
        assert await client.close() is False
    assert client.state is ConnectionState.CLOSED
    with pytest.raises(NotConnected):
        await client.wait_connected(1)


@run_async
async def test_without_reconnect_a_lost_connection_is_final(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory()
    client = AsyncViewerClient(server.websocket_url(), reconnect=False)
    await client.connect()
    await asyncio.to_thread(server.stop)
    await eventually(lambda: client.state is ConnectionState.CLOSED)
    assert await client.close() is False


def test_backoff_doubles_to_its_maximum_with_jitter_below() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    jittered = Backoff(initial=1.0, maximum=8.0, jitter=0.25, random=lambda: 1.0)
    assert [jittered.next_delay() for _ in range(3)] == [0.75, 1.5, 3.0]
    with pytest.raises(ValueError):
        Backoff(initial=0)


# -- the blocking client ---------------------------------------------------------


def test_blocking_client_round_trip(bridge: tuple[RerunWebSocketServer, Recorder], no_thread_leaks: None) -> None:
    server, rec = bridge
    with ViewerClient(server.websocket_url()) as client:
        assert client.connected
        client.twist(linear_x=0.2, angular_z=-0.4)
        client.click(7, 8, 9, entity_path="/world")
        client.heartbeat()
        client.send_raw({"type": "warp"})
        with pytest.raises(ServerError, match="unknown_type"):
            client.sync()
        client.stop()
        client.sync()
        assert [e.reason for e in client.errors] == ["unknown_type"]
    assert client.state is ConnectionState.CLOSED
    assert rec.twists == [Twist(Vector3(0.2, 0, 0), Vector3(0, 0, -0.4)), Twist.zero()]
    assert [(p.x, p.y, p.z) for p in rec.points] == [(7.0, 8.0, 9.0)]
    with pytest.raises(NotConnected):
        client.stop()


def test_blocking_client_callbacks_and_connect_errors(bridge_factory: BridgeFactory, no_thread_leaks: None) -> None:
    server, _ = bridge_factory(token="t-0123456789abcdef")
    client = ViewerClient(server.websocket_url())
    with pytest.raises(ConnectError, match="401"):
        client.connect()
    client.close()

    seen: list[Any] = []
    token = "t-0123456789abcdef"
    client = ViewerClient(server.websocket_url(), token=token, on_error=seen.append, on_state=seen.append)
    client.start()
    client.wait_connected(5)
    client.send_raw("[]")
    client.sync()
    assert client.close() is True
    assert seen[:2] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    assert [e.reason for e in seen if isinstance(e, ServerError)] == ["not_an_object"]
    assert seen[-1] is ConnectionState.CLOSED


@run_async
async def test_a_refusal_with_retry_after_is_waited_out_not_retried_at_once(bridge_factory: BridgeFactory) -> None:
    # One new connection a second from this address, and the test's own request spends it.
    server, _ = await asyncio.to_thread(bridge_factory, connect_rate=1.0, connect_burst=1)
    port = server.bound_port or 0
    assert (await asyncio.to_thread(get, port, "/healthz")).status == 200
    client = AsyncViewerClient(server.websocket_url(), backoff=fast_backoff())
    client.start()
    await client.wait_connected(timeout=10)
    await client.close()
    # Refused once (429, Retry-After: 1), it waited the second out: its 20 ms backoff alone would have
    # been refused again and again.
    assert server.snapshot().connect_throttled == 1
    error = client.last_connect_error
    assert error is not None and error.status == 429 and error.retry_after == 1.0
    assert "HTTP 429: too many new connections from 127.0.0.1 (connect_rate 1/s); retry in 1 s" in str(error)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 10 ", 10.0), ("0", 0.0), ("86400", 60.0), ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("-1", None),
     ("1.5", None), ("\u0661", None), ("", None), (None, None)],
)
def test_retry_after_is_read_as_whole_seconds_up_to_a_minute(header: str | None, seconds: float | None) -> None:
    assert _retry_after(header) == seconds

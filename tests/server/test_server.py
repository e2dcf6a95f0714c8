"""The bridge over real loopback sockets: every message type, bad frames, several clients, drops, routing."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import Recorder, client, recv_json, twist, wait_until
from viewer_bridge import PointStamped, RerunWebSocketServer, Twist, Vector3
from viewer_bridge.core.messages import Bool

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


def test_twist_click_stop_round_trip(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send(twist(linear_x=0.5, linear_y=0.0, linear_z=0.0, angular_x=0.0, angular_y=0.0, angular_z=0.8))
        ws.send(
            json.dumps(
                {"type": "click", "x": 1.5, "y": -2.25, "z": 0.125, "entity_path": "/world/map",
                 "timestamp_ms": 1764000000123}
            )
        )
        ws.send('{"type":"heartbeat","timestamp_ms":1764000000200}')
        ws.send('{"type":"stop"}')
        twists = rec.wait_twists(2)
    assert twists == [Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0.8)), Twist.zero()]
    assert rec.points == [PointStamped(1.5, -2.25, 0.125, 1764000000.123, "world")]
    assert rec.stops == [Bool(True)]
    # stop_movement comes before the twist that started the drive.
    assert rec.streams()[:2] == ["stop_movement", "tele_cmd_vel"]


def test_click_without_timestamp_uses_receive_time_and_configured_frame(bridge_factory: Factory) -> None:
    server, rec = bridge_factory(frame_id="map")
    before = time.time()
    with client(server) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        ws.send('{"type":"click","x":4,"y":5,"z":6,"timestamp_ms":0}')
        points = rec.wait_points(2)
    after = time.time()
    for point in points:
        assert before <= point.ts <= after
        assert point.frame_id == "map"
    assert [(p.x, p.y, p.z) for p in points] == [(1, 2, 3), (4, 5, 6)]


def test_2d_click_is_refused_with_a_reason_and_not_published(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send('{"type":"click","x":320,"y":240,"z":null,"entity_path":"/camera/image","timestamp_ms":1}')
        error = recv_json(ws)
        assert error["type"] == "error" and error["reason"] == "click_not_3d" and error["field"] == "z"
        ws.send('{"type":"click","x":1,"y":1,"z":1}')
        rec.wait_points(1)
    assert len(rec.points) == 1 and rec.points[0].x == 1
    assert server.snapshot().rejects["click_not_3d"] == 1


BAD_FRAMES = [
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "not_an_object"),
    ('{"x": 1}', "missing_type"),
    ('{"type": "fly"}', "unknown_type"),
    ('{"type": "click", "x": "abc", "y": 1, "z": 0}', "invalid_field"),
    ('{"type": "twist", "linear_x": NaN}', "non_finite"),
    ('{"type": "twist", "angular_z": Infinity}', "non_finite"),
    ('{"type": "twist", "linear_x": 1e999}', "non_finite"),
    ('{"type": "twist", "linear_x": true}', "invalid_field"),
]


def test_bad_frame_battery_each_answered_connection_survives(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        for raw, reason in BAD_FRAMES:
            ws.send(raw)
            error = recv_json(ws)
            assert error["type"] == "error", raw
            assert error["reason"] == reason, (raw, error)
            assert error["detail"]
        ws.send(b"\x01\x02binary")
        assert recv_json(ws)["reason"] == "binary_frame"
        # The connection is still open and the next valid frame works.
        ws.send(twist(linear_x=0.25))
        rec.wait_twists(1)
    # Closing while driving ends the drive with one zero.
    assert rec.wait_twists(2) == [Twist(Vector3(0.25, 0, 0), Vector3()), Twist.zero()]
    assert rec.points == []
    stats = server.server.stats
    assert sum(stats.rejects.values()) == len(BAD_FRAMES) + 1


def test_fragmented_message_is_reassembled(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send(iter(['{"type":"click",', '"x":1,"y":2,', '"z":3}']))
        rec.wait_points(1)
    assert (rec.points[0].x, rec.points[0].y, rec.points[0].z) == (1, 2, 3)


def test_only_the_configured_path_upgrades(bridge_factory: Factory) -> None:
    server, _ = bridge_factory(path="/viewer")
    with pytest.raises(InvalidStatus) as caught:
        connect(server.websocket_url().replace("/viewer", "/ws"), open_timeout=5)
    assert caught.value.response.status_code == 404
    with connect(server.websocket_url(), open_timeout=5) as ws:
        ws.send('{"type":"heartbeat"}')
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(server.http_url("/nothing-here"), timeout=5)
    assert http_error.value.code == 404
    assert b"/viewer" in http_error.value.read()


def test_reconnect_after_close(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    for i in range(3):
        with client(server) as ws:
            ws.send(json.dumps({"type": "click", "x": i, "y": 0, "z": 0}))
            rec.wait_points(i + 1)
    assert [p.x for p in rec.points] == [0, 1, 2]
    wait_until(lambda: server.snapshot().clients == 0, what="all connections closed")


def test_two_clients_each_in_order_none_lost(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    n = 400

    def send_all(tag: float) -> None:
        with client(server) as ws:
            for i in range(n):
                ws.send(json.dumps({"type": "click", "x": tag, "y": i, "z": 0}))

    threads = [threading.Thread(target=send_all, args=(tag,)) for tag in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    rec.wait_points(2 * n, timeout=10)
    for tag in (1.0, 2.0):
        assert [p.y for p in rec.points if p.x == tag] == list(range(n))


def test_drop_without_close_frame_while_driving_publishes_zero(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        # Abort the TCP connection: no close frame, as when the viewer exits.
        ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.socket.shutdown(socket.SHUT_RDWR)
        ws.socket.close()
        twists = rec.wait_twists(2)
    assert twists[-1] == Twist.zero()
    assert server.snapshot().zeros.get("disconnect", 0) == 1


def test_ping_timeout_drops_a_silent_peer_and_stops_it(bridge_factory: Factory) -> None:
    server, rec = bridge_factory(ping_interval=0.2, ping_timeout=0.2, deadman_timeout=30.0)
    # A peer that completes the handshake, drives, then never answers anything
    # (a frozen process or a dead network path).
    sock = socket.create_connection(("127.0.0.1", server.bound_port), timeout=5)
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert b"101" in sock.recv(4096).split(b"\r\n")[0]
    payload = twist(linear_x=0.3).encode()
    mask = b"\x00\x00\x00\x00"
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)
    rec.wait_twists(1)
    twists = rec.wait_twists(2, timeout=5)
    assert twists[-1] == Twist.zero()
    assert server.snapshot().zeros.get("disconnect", 0) == 1
    sock.close()


def test_a_raising_subscriber_does_not_affect_others(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    calls: list[PointStamped] = []

    def broken(_: PointStamped) -> None:
        raise RuntimeError("subscriber bug")

    server.clicked_point.subscribe(broken)
    server.clicked_point.subscribe(calls.append)
    with client(server) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        ws.send('{"type":"click","x":4,"y":5,"z":6}')
        wait_until(lambda: len(calls) == 2)
        ws.send('{"type":"heartbeat"}')
    assert [p.x for p in rec.points] == [1, 4]
    assert server.clicked_point.errors == 2


def test_unsubscribe(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    seen: list[PointStamped] = []
    unsubscribe = server.clicked_point.subscribe(seen.append)
    again = server.clicked_point.subscribe(seen.append)
    with client(server) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        rec.wait_points(1)
        unsubscribe()
        unsubscribe()
        ws.send('{"type":"click","x":4,"y":5,"z":6}')
        rec.wait_points(2)
        again()
        ws.send('{"type":"click","x":7,"y":8,"z":9}')
        rec.wait_points(3)
    assert [p.x for p in seen] == [1, 1, 4]


def test_a_slow_subscriber_delays_only_the_subscribers_after_it(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, rec = bridge
    release = threading.Event()
    entered = threading.Event()
    behind: list[float] = []

    def slow(point: PointStamped) -> None:
        if point.x == 1:
            entered.set()
            release.wait(10)

    server.clicked_point.subscribe(slow)
    server.clicked_point.subscribe(lambda point: behind.append(point.x))
    with client(server) as a, client(server) as b:
        a.send('{"type":"click","x":1,"y":0,"z":0}')
        assert entered.wait(5)
        # While the subscriber holds its thread, the bridge itself keeps handling frames...
        b.send('{"type":"click","x":2,"y":0,"z":0}')
        b.send(twist(linear_x=0.5))
        b.send('{"type":"stop"}')
        wait_until(lambda: server.snapshot().frames["stop"] == 1, what="the bridge to handle b's frames")
        assert server.snapshot().published["tele_cmd_vel"] == 2
        # ...and only the subscribers after the slow one wait for it.
        # (the recorder subscribed before the slow one, so it has the first click only)
        assert behind == [] and [p.x for p in rec.of("clicked_point", settle=False)] == [1]
        release.set()
        wait_until(lambda: behind == [1, 2], what="the subscribers after the slow one, in order")
    assert [p.x for p in rec.points] == [1, 2]


def test_http_status_endpoints(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send(twist(angular_z=0.8))
        rec.wait_twists(1)
        health = json.loads(urllib.request.urlopen(server.http_url("/healthz"), timeout=5).read())
        assert health["up"] is True and health["clients"] == 1 and health["driver"] is not None
        assert health["last_command_age_s"] is not None and health["last_command_age_s"] >= 0
        status = json.loads(urllib.request.urlopen(server.http_url("/status"), timeout=5).read())
        assert status["driver"] == "#0001" and status["estop"] is None
        (me,) = status["clients"]
        assert me["driver"] is True and me["frames"] >= 1 and me["name"] == "#0001"
        assert me["address"].startswith("127.0.0.1:")
        ws.send('{"type":"stop"}')
        rec.wait_twists(2)
    metrics = urllib.request.urlopen(server.http_url("/metrics"), timeout=5).read().decode()
    assert 'viewer_bridge_frames_total{type="twist"} 1.0' in metrics
    assert 'viewer_bridge_published_total{stream="tele_cmd_vel",transport="inprocess"} 2.0' in metrics

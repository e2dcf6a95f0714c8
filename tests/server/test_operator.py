"""Operator control over real sockets: every stop acts, the lasting stop, the e-stop, status frames, the link."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BridgeFactory, client, recv_json, twist, wait_until
from viewer_bridge import Bool, RerunWebSocketServer, Twist, Vector3

FWD = Twist(Vector3(0.5, 0, 0), Vector3())
STOP = '{"type":"stop"}'


def post(url: str, body: bytes = b"", token: str | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def status_frames(ws: Any, want: Any, timeout: float = 5.0) -> dict[str, Any]:
    """Read status frames until one satisfies ``want`` (errors are skipped); return it."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no status frame matched; saw {seen}")
        frame = recv_json(ws, timeout=remaining, status=True)
        if frame["type"] == "status":
            seen.append(frame)
            if want(frame):
                return frame


def test_a_stop_while_nobody_drives_still_publishes_one_zero(bridge: Any) -> None:
    server, rec = bridge
    with client(server) as ws:
        ws.send(STOP)
        ws.send(STOP)
        rec.wait_twists(2)
    assert rec.twists == [Twist.zero(), Twist.zero()]  # one per explicit stop, no more


def test_someone_elses_stop_lasts_until_the_driver_lets_go(bridge: Any) -> None:
    server, rec = bridge
    with client(server) as driver, client(server) as other:
        driver.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        other.send(STOP)
        rec.wait_twists(2)
        driver.send(twist(linear_x=0.5))  # the key is still held
        error = recv_json(driver)
        assert error["reason"] == "stopped_by_other"
        assert error["detail"].startswith("#0002 stopped you; let go")
        driver.send(twist())  # key up
        driver.send(twist(linear_x=0.5))  # pressed again: drives
        rec.wait_twists(3)
    assert rec.twists == [FWD, Twist.zero(), FWD, Twist.zero()][: len(rec.twists)]
    assert server.snapshot().rejects["stopped_by_other"] == 1


def test_the_estop_latches_refuses_driving_and_goals_and_lasts_past_its_sender(bridge: Any) -> None:
    server, rec = bridge
    with client(server) as driver:
        driver.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        with client(server) as panel:
            panel.send('{"type":"estop","reason":"person in the aisle"}')
            rec.wait_twists(2)
        # The panel is gone; the latch is not.
        assert rec.of("estop") == [Bool(True)]
        driver.send(twist(linear_x=0.5))
        error = recv_json(driver)
        assert error["reason"] == "estopped"
        assert "e-stop latched by #0002 at" in error["detail"] and "(person in the aisle)" in error["detail"]
        driver.send('{"type":"click","x":1,"y":2,"z":3}')
        assert recv_json(driver)["reason"] == "estopped"
        driver.send(STOP)  # a stop still acts
        rec.wait_twists(3)
        health = json.load(urllib.request.urlopen(server.http_url("/healthz"), timeout=5))
        assert health["up"] is True and health["estop"]["by"] == "#0002"
        assert health["estop"]["reason"] == "person in the aisle"
        status = json.load(urllib.request.urlopen(server.http_url("/status"), timeout=5))
        assert status["estop"] == health["estop"] and status["driver"] is None
        driver.send('{"type":"estop_clear"}')
        wait_until(lambda: rec.of("estop") == [Bool(True), Bool(False)], what="the clear on the estop stream")
        driver.send(twist(linear_x=0.5))  # its own stop above was its release
        rec.wait_twists(4)
    assert rec.twists == [FWD, Twist.zero(), Twist.zero(), FWD, Twist.zero()][: len(rec.twists)]
    assert rec.points == []


def test_estop_over_http(bridge_factory: BridgeFactory) -> None:
    token = "a-long-enough-token-for-tests"
    server, rec = bridge_factory(token=token)
    status, body = post(server.http_url("/estop"), b'{"reason":"drill"}')
    assert status == 401
    status, body = post(server.http_url("/estop"), b'{"reason":"drill"}', token)
    assert status == 200 and body["estop"]["reason"] == "drill" and body["estop"]["by"] == "http:127.0.0.1"
    rec.wait_twists(1)
    assert rec.twists == [Twist.zero()] and rec.of("estop") == [Bool(True)]
    status, body = post(server.http_url("/estop"), b"not json", token)  # latched already: nothing changes
    assert status == 200 and body["estop"]["reason"] == "drill"
    with urllib.request.urlopen(server.http_url(f"/healthz?token={token}"), timeout=5) as response:
        assert json.load(response)["estop"]["reason"] == "drill"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.http_url(f"/estop?token={token}"), timeout=5)
    assert caught.value.code == 405
    status, body = post(server.http_url("/estop/clear"), b"", token)
    assert status == 200 and body == {"estop": None}
    wait_until(lambda: rec.of("estop") == [Bool(True), Bool(False)])


def test_a_stop_over_http_is_a_stop_frame_for_a_sender_without_a_websocket(bridge_factory: BridgeFactory) -> None:
    token = "a-long-enough-token-for-tests"
    server, rec = bridge_factory(token=token, deadman_timeout=30)
    assert post(server.http_url("/stop"))[0] == 401
    with client(server, additional_headers={"Authorization": f"Bearer {token}"}) as driver:
        driver.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        status, body = post(server.http_url("/stop"), b"", token)
        assert (status, body) == (200, {"stopped": True, "driver": "#0001"})
        rec.wait_twists(2)
        driver.send(twist(linear_x=0.5))  # the key is still held: someone else's stop lasts until it lets go
        error = recv_json(driver)
        assert error["reason"] == "stopped_by_other" and error["detail"].startswith("http:127.0.0.1 stopped you")
    assert post(server.http_url("/stop"), b"", token) == (200, {"stopped": True, "driver": None})
    rec.wait_twists(3)  # nobody drives: the second stop is one zero all the same
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(server.http_url(f"/stop?token={token}"), timeout=5)
    assert caught.value.code == 405 and caught.value.headers["Allow"] == "POST"
    assert rec.twists == [FWD, Twist.zero(), Twist.zero()]  # the driver's disconnect ended nothing: it was stopped
    # robot= is for a fleet station; here, as on the upgrade, it is ignored: a stop is never refused for it.
    assert post(server.http_url("/stop?robot=elsewhere"), b"", token) == (200, {"stopped": True, "driver": None})
    rec.wait_twists(4)
    assert server.snapshot().zeros["stop"] == 3


def test_the_estop_survives_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state" / "estop.json"
    first = RerunWebSocketServer(port=0, estop_state_file=str(state))
    with first:
        with client(first) as ws:
            ws.send('{"type":"estop","reason":"overnight"}')
            wait_until(lambda: first.snapshot().zeros.get("estop") == 1)
        wait_until(lambda: state.exists() and json.loads(state.read_text())["latched"], what="the state on disk")
    second = RerunWebSocketServer(port=0, estop_state_file=str(state))
    latched: list[Any] = []
    second.estop.subscribe(latched.append)
    zeros: list[Twist] = []
    second.tele_cmd_vel.subscribe(zeros.append)
    with second:
        # It starts latched, says so on the estop stream, and sends one zero.
        wait_until(lambda: latched == [Bool(True)] and zeros == [Twist.zero()], what="the restored latch")
        with client(second) as ws:
            ws.send(twist(linear_x=0.5))
            error = recv_json(ws)
            assert error["reason"] == "estopped" and "(overnight)" in error["detail"]
            ws.send('{"type":"estop_clear"}')
            wait_until(lambda: not json.loads(state.read_text())["latched"], what="the clear on disk")
    third = RerunWebSocketServer(port=0, estop_state_file=str(state))
    with third:
        assert third.snapshot().driver is None and third.server.safety.estop is None


def test_a_damaged_state_file_starts_latched(tmp_path: Path) -> None:
    state = tmp_path / "estop.json"
    state.write_text("{ half a wri")
    with RerunWebSocketServer(port=0, estop_state_file=str(state)) as server, client(server) as ws:
        ws.send(twist(linear_x=0.5))
        error = recv_json(ws)
        assert error["reason"] == "estopped" and "state file unreadable" in error["detail"]


def test_status_frames_on_connect_and_on_change(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(link_limits=True)
    with client(server) as watcher:
        first = status_frames(watcher, lambda s: True)
        assert first["you"] == "#0001" and first["driver"] is None and first["estop"] is None
        with client(server) as driver:
            driver.send(twist(linear_x=0.5))
            driving = status_frames(watcher, lambda s: s["driver"] == "#0002")
            assert driving["you_drive"] is False and driving["command"]["linear_x"] == 0.5
            mine = status_frames(driver, lambda s: s["you_drive"])
            assert mine["you"] == "#0002" and 0 < mine["deadman_remaining_s"] <= 1.0
            watcher.send('{"type":"estop","reason":"test"}')
            latched = status_frames(driver, lambda s: s["estop"] is not None)
            assert latched["estop"]["by"] == "#0001" and latched["estop"]["reason"] == "test"
            assert latched["driver"] is None and latched["stopped_by"] == "#0001"
            # The round trip is measured while a client drives (the frame above may carry it already:
            # a later one comes only when the rounded value changes).
            measured = latched if latched["rtt_ms"] is not None else status_frames(
                driver, lambda s: s["rtt_ms"] is not None
            )
            assert measured["rtt_ms"] >= 0 and 0 < measured["speed_factor"] <= 1.0
    assert server.server.status.frames_sent >= 5


def test_a_stale_command_is_refused(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(link_limits=True)
    now_ms = time.time() * 1000
    with client(server) as ws:
        ws.send(json.dumps({"type": "twist", "linear_x": 0.5, "timestamp_ms": now_ms}))
        rec.wait_twists(1)
        # Sent "two seconds ago" relative to the link's best so far: it sat in a queue.
        ws.send(json.dumps({"type": "twist", "linear_x": 0.6, "timestamp_ms": time.time() * 1000 - 2000}))
        error = recv_json(ws)
        assert error["reason"] == "stale" and error["field"] == "timestamp_ms"
        # A zero twist is never refused for age: letting go always counts.
        ws.send(json.dumps({"type": "twist", "timestamp_ms": time.time() * 1000 - 5000}))
        rec.wait_twists(2)
    assert rec.twists == [FWD, Twist.zero()]


def test_link_limits_off_accepts_old_commands(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(link_limits=False)
    with client(server) as ws:
        ws.send(json.dumps({"type": "twist", "linear_x": 0.5, "timestamp_ms": time.time() * 1000}))
        ws.send(json.dumps({"type": "twist", "linear_x": 0.5, "timestamp_ms": time.time() * 1000 - 5000}))
        rec.wait_twists(2)

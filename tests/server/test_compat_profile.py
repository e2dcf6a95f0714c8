"""The DimOS 0.0.15 compatibility settings over real sockets: stop_movement, click_frame."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.conftest import Recorder, client, recv_json, twist, wait_until
from viewer_bridge import ConfigError, PointStamped, RerunWebSocketServer, Twist, Vector3, load_config

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]

TELE = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0.8))
NAV = Twist(Vector3(0.3, 0, 0), Vector3(0, 0, 0.1))
STOP = '{"type":"stop"}'


def _click(x: float, entity_path: str | None) -> str:
    message = {"type": "click", "x": x, "y": 0.0, "z": 0.0, "timestamp_ms": 1000}
    if entity_path is not None:
        message["entity_path"] = entity_path
    return json.dumps(message)


def test_the_dimos_profile_behaves_like_dimos_0_0_15(bridge_factory: Factory) -> None:
    server, rec = bridge_factory(stop_movement="off", click_frame="entity_path")
    with client(server) as ws:
        ws.send(STOP)  # nobody drives: one zero all the same
        ws.send(twist(linear_x=0.5, angular_z=0.8))
        ws.send(STOP)
        ws.send(_click(1.0, "/world/map"))
        ws.send(_click(2.0, ""))  # no entity: the frame_id setting
        ws.send(_click(3.0, None))
        rec.wait_points(3)
        twists = rec.wait_twists(3)
    assert twists == [Twist.zero(), TELE, Twist.zero()]
    assert rec.points == [
        PointStamped(1.0, 0.0, 0.0, 1.0, "/world/map"),
        PointStamped(2.0, 0.0, 0.0, 1.0, "world"),
        PointStamped(3.0, 0.0, 0.0, 1.0, "world"),
    ]
    assert rec.stops == []


def test_the_standalone_defaults_are_unchanged(bridge_factory: Factory) -> None:
    server, rec = bridge_factory()
    assert (server.config.stop_movement, server.config.click_frame) == ("publish", "frame_id")
    with client(server) as ws:
        ws.send(STOP)
        ws.send(twist(linear_x=0.5, angular_z=0.8))
        ws.send(STOP)
        ws.send(_click(1.0, "/world/map"))
        rec.wait_points(1)
    assert rec.twists == [Twist.zero(), TELE, Twist.zero()]  # every explicit stop acts, driving or not
    assert rec.points[0].frame_id == "world"
    assert len(rec.stops) == 1


def test_stop_movement_off_also_silences_the_mux_takeover(bridge_factory: Factory) -> None:
    # A drive outlasting the cooldown is announced by the mux when stop_movement is "publish"
    # (tests/bus/test_mux.py); with "off" nothing is announced, by the bridge or the mux.
    server, rec = bridge_factory(stop_movement="off", mux="nav_cmd_vel", mux_cooldown=0.05, deadman_timeout=30.0)
    mux = server.mux
    assert mux is not None
    outputs: list[Twist] = []
    mux.cmd_vel.subscribe(outputs.append)
    with client(server) as ws:
        ws.send(twist(linear_x=0.5, angular_z=0.8))
        wait_until(lambda: TELE in outputs, what="teleop on cmd_vel")

        def navigation_is_back() -> bool:
            mux.feed_nav(NAV)
            return NAV in outputs

        wait_until(navigation_is_back, interval=0.02, what="navigation after the cooldown")
        ws.send(twist(linear_x=0.6))  # the same drive takes cmd_vel back: a takeover
        wait_until(lambda: outputs[-1] == Twist(Vector3(0.6, 0, 0)), what="the second teleop command")
        assert mux.takeovers == 2
        ws.send(STOP)
        rec.wait_twists(3)
    assert rec.stops == []


def test_bad_profile_values_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="stop_movement"):
        RerunWebSocketServer(stop_movement="never")
    with pytest.raises(ConfigError, match="click_frame"):
        RerunWebSocketServer(click_frame="entity")
    monkeypatch.setenv("VIEWER_BRIDGE_CLICK_FRAME", "entity_path")
    assert load_config().click_frame == "entity_path"


def test_goal_limits_refuse_far_clicks_with_a_reason_over_a_socket(bridge_factory: Factory) -> None:
    server, rec = bridge_factory(max_goal_distance=500.0, max_goal_height=50.0)
    with client(server) as ws:
        ws.send(_click(600.0, "/world/map"))
        far = recv_json(ws)
        ws.send(json.dumps({"type": "click", "x": 1.0, "y": 2.0, "z": -75.0, "timestamp_ms": 1000}))
        deep = recv_json(ws)
        ws.send(_click(499.0, "/world/map"))  # inside: published, and the connection is fine
        rec.wait_points(1)
    assert far == {
        "type": "error",
        "reason": "goal_out_of_range",
        "detail": "click at (600, 0, 0) is 600.0 m from the origin of 'world' horizontally, "
        "beyond max_goal_distance = 500 m; it was not published",
    }
    assert deep["reason"] == "goal_out_of_range" and deep["field"] == "z" and "75.0 m below" in deep["detail"]
    assert [p.x for p in rec.points] == [499.0]
    assert server.server.stats.rejects["goal_out_of_range"] == 2


def test_goal_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"max_goal_distance: expected a finite number > 0, or None, got -1"):
        RerunWebSocketServer(max_goal_distance=-1)
    with pytest.raises(ConfigError, match="max_goal_height"):
        RerunWebSocketServer(max_goal_height=float("nan"))

"""Named tokens with roles: drive, stop, view. The name is shown everywhere, the secret nowhere."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import BridgeFactory, recv_json, twist, wait_until
from tests.security.conftest import ChildBridge
from viewer_bridge import RerunWebSocketServer, Twist, Vector3

LAPTOP = "laptop-secret-0123456789abcdef"
DESK = "desk-secret-0123456789abcdef"
OFFICER = "officer-secret-0123456789abcdef"
WALL = "wall-secret-0123456789abcdef"
TOKENS = {
    "field-laptop": {"role": "drive", "secret": LAPTOP},
    "ops-desk": {"role": "drive", "secret": DESK},
    "safety-officer": {"role": "stop", "secret": OFFICER},
    "wall-display": {"role": "view", "secret": WALL},
}
SECRETS = (LAPTOP, DESK, OFFICER, WALL)


def as_(server: RerunWebSocketServer, secret: str) -> ClientConnection:
    return connect(f"{server.websocket_url()}?token={secret}", open_timeout=5)


def test_view_and_stop_tokens_cannot_move_the_robot(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(tokens=TOKENS, deadman_timeout=30)
    with as_(server, WALL) as wall, as_(server, OFFICER) as officer, as_(server, LAPTOP) as laptop:
        for message in (twist(linear_x=1.0), '{"type":"click","x":1,"y":2,"z":3}', '{"type":"stop"}'):
            wall.send(message)
            error = recv_json(wall)
            assert error["reason"] == "forbidden" and "'wall-display' has role 'view'" in error["detail"], error
        wall.send(twist())  # a zero twist is refused too (told once a second per kind: counted, not told again)
        wall.send('{"type":"heartbeat"}')  # liveness is for everyone
        wait_until(lambda: server.snapshot().rejects["forbidden"] == 4, what="the zero twist's refusal")
        officer.send(twist(linear_x=1.0))
        error = recv_json(officer)
        assert error["reason"] == "forbidden" and "may send stop" in error["detail"]
        laptop.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        # The officer may not drive, but may stop whoever does.
        officer.send('{"type":"stop"}')
        rec.wait_twists(2)
    assert rec.twists == [Twist(Vector3(0.5, 0, 0), Vector3()), Twist.zero()]
    assert rec.points == []
    assert server.snapshot().rejects["forbidden"] == 5


def test_not_driver_names_who_is_driving(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(tokens=TOKENS, deadman_timeout=30)
    with as_(server, LAPTOP) as laptop, as_(server, DESK) as desk:
        laptop.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        desk.send(twist(linear_x=-0.5))
        error = recv_json(desk)
    assert error["reason"] == "not_driver"
    assert error["detail"].startswith("field-laptop is driving")
    assert not any(secret in json.dumps(error) for secret in SECRETS)


def test_names_in_status_metrics_and_logs_never_secrets(
    bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, rec = bridge_factory(tokens=TOKENS)
    with as_(server, LAPTOP) as laptop, as_(server, WALL) as wall:
        laptop.send('{"type":"click","x":1,"y":2,"z":3}')
        rec.wait_points(1)
        wall.send(twist(linear_x=1.0))
        recv_json(wall)
        request = urllib.request.Request(server.http_url("/status"), headers={"Authorization": f"Bearer {WALL}"})
        status = urllib.request.urlopen(request, timeout=5).read().decode()
        metrics = urllib.request.urlopen(server.http_url(f"/metrics?token={OFFICER}"), timeout=5).read().decode()
    clients = json.loads(status)["clients"]
    assert sorted((c["token"], c["role"]) for c in clients) == [("field-laptop", "drive"), ("wall-display", "view")]
    assert 'viewer_bridge_token_connections{role="drive",token="field-laptop"} 1.0' in metrics
    assert 'viewer_bridge_token_connections{role="view",token="wall-display"} 1.0' in metrics
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("viewer_bridge"))
    assert "(field-laptop) connected" in logs and "(wall-display): rejected forbidden" in logs
    for text in (status, metrics, logs):
        assert not any(secret in text for secret in SECRETS)


def test_the_shared_token_and_named_tokens_work_side_by_side(bridge_factory: BridgeFactory) -> None:
    shared = "shared-secret-0123456789abcdef"
    server, rec = bridge_factory(token=shared, tokens={"wall-display": {"role": "view", "secret": WALL}})
    with as_(server, shared) as ws:
        ws.send(twist(linear_x=0.5))
        rec.wait_twists(1)
    with as_(server, WALL) as ws:
        ws.send(twist(linear_x=0.5))
        assert recv_json(ws)["reason"] == "forbidden"


def test_a_tokens_file_of_name_role_secret_lines(bridge_factory: BridgeFactory, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# who may do what\nfield-laptop drive {LAPTOP}\n\nwall-display   view   {WALL}  \n")
    server, rec = bridge_factory(tokens_file=str(path))
    with as_(server, WALL) as ws:
        ws.send(twist(linear_x=0.5))
        assert recv_json(ws)["reason"] == "forbidden"
    with as_(server, LAPTOP) as ws:
        ws.send(twist(linear_x=0.5))
        rec.wait_twists(1)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"laptop boss {LAPTOP}\n", "line 1: role 'boss' of token 'laptop' is not one of drive, stop, view"),
        (f"a drive {LAPTOP}\na view {WALL}\n", "token name 'a' is used twice"),
        (f"a drive {LAPTOP}\nb view {LAPTOP}\n", "token 'b' has the same secret as another token"),
        ("a drive short-secret\n", "token 'a' is 12 characters long; use at least 16"),
        (f"a drive {LAPTOP} extra\n", "line 1: expected 'name role secret' (4 fields found)"),
        (f"bad/name drive {LAPTOP}\n", "token name 'bad/name' must be"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line_not_the_secret(
    tmp_path: Path, content: str, expected: str
) -> None:
    from viewer_bridge.config import ConfigError

    path = tmp_path / "tokens"
    path.write_text(content)
    server = RerunWebSocketServer(port=0, tokens_file=str(path))
    with pytest.raises(ConfigError) as caught:
        server.start()
    assert expected in str(caught.value)
    assert LAPTOP not in str(caught.value) and "short-secret" not in str(caught.value)


def test_secrets_are_never_taken_from_argv_or_the_environment(tmp_path: Path) -> None:
    help_text = subprocess.run([sys.executable, "-m", "viewer_bridge", "serve", "--help"], capture_output=True,
                               text=True, timeout=30).stdout
    assert "--tokens-file" in help_text and "--tokens " not in help_text and "--tokens\n" not in help_text
    result = subprocess.run([sys.executable, "-m", "viewer_bridge", "serve", "--tokens", f"a drive {LAPTOP}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr
    result = subprocess.run([sys.executable, "-m", "viewer_bridge", "serve", "--port", "0"], capture_output=True,
                            text=True, timeout=30, env={"VIEWER_BRIDGE_TOKENS": "x", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "VIEWER_BRIDGE_TOKENS_FILE" in result.stderr


def test_a_toml_tokens_table(child_bridge: type[ChildBridge], tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        f'[tokens.field-laptop]\nrole = "drive"\nsecret = "{LAPTOP}"\n\n'
        f'[tokens.wall-display]\nrole = "view"\nsecret = "{WALL}"\n'
    )
    bridge = child_bridge("--config", str(config))
    assert "?token=<your token>" in bridge.text  # the banner knows tokens are needed
    with connect(f"ws://127.0.0.1:{bridge.port}/ws?token={WALL}", open_timeout=5) as ws:
        ws.send(twist(linear_x=0.5))
        assert recv_json(ws)["reason"] == "forbidden"
    with pytest.raises(Exception, match="401"):
        connect(f"ws://127.0.0.1:{bridge.port}/ws?token=not-{WALL}", open_timeout=5)
    bridge.stop()
    assert "wall-display" in bridge.text and WALL not in bridge.text


def test_the_estop_by_role_over_websocket_and_http(bridge_factory: BridgeFactory) -> None:
    from tests.server.test_operator import post

    server, rec = bridge_factory(tokens=TOKENS)
    with as_(server, WALL) as wall:
        wall.send('{"type":"estop","reason":"from the wall"}')
        assert recv_json(wall)["reason"] == "forbidden"
    status, body = post(server.http_url("/estop"), b'{"reason":"wall"}', WALL)
    assert status == 403 and "may not estop" in body["reason"]
    assert rec.of("estop") == []
    # The safety officer's panel may latch it, and is named as the one who did.
    with as_(server, OFFICER) as officer:
        officer.send('{"type":"estop","reason":"person in the aisle"}')
        wait_until(lambda: rec.of("estop") != [], what="the latch")
    with as_(server, LAPTOP) as laptop:
        laptop.send(twist(linear_x=0.5))
        error = recv_json(laptop)
        assert error["reason"] == "estopped" and "latched by safety-officer" in error["detail"]
    # Releasing lets the robot move again: the officer's stop role may not, over either door.
    with as_(server, OFFICER) as officer:
        officer.send('{"type":"estop_clear"}')
        error = recv_json(officer)
        assert error["reason"] == "forbidden" and "estop_clear" in error["detail"]
    status, body = post(server.http_url("/estop/clear"), b"", OFFICER)
    assert status == 403 and "may not estop/clear" in body["reason"]
    with as_(server, LAPTOP) as laptop:
        laptop.send(twist(linear_x=0.5))
        assert recv_json(laptop)["reason"] == "estopped"  # still latched after both refusals
    status, body = post(server.http_url("/estop/clear"), b"", DESK)
    assert status == 200 and body == {"estop": None}
    status, body = post(server.http_url("/estop"), b"", DESK)
    assert status == 200 and body["estop"]["by"] == "http:ops-desk"


def test_a_stop_over_http_by_role(bridge_factory: BridgeFactory) -> None:
    from tests.server.test_operator import post

    server, rec = bridge_factory(tokens=TOKENS, deadman_timeout=30)
    with as_(server, LAPTOP) as laptop:
        laptop.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        status, body = post(server.http_url("/stop"), b"", WALL)
        assert status == 403 and "'wall-display' has role 'view', which may not stop" in body["reason"]
        assert post(server.http_url("/stop"), b"", OFFICER) == (200, {"stopped": True, "driver": "field-laptop"})
        rec.wait_twists(2)
        laptop.send(twist(linear_x=0.5))
        error = recv_json(laptop)
        assert error["reason"] == "stopped_by_other" and error["detail"].startswith("http:safety-officer stopped you")
    assert rec.twists == [Twist(Vector3(0.5, 0, 0), Vector3()), Twist.zero()]

"""``viewer-bridge send`` against a real bridge: what gets published, exit codes and the bridge's reasons."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from tests.bus.transports.bus_support import require_zenoh
from tests.conftest import UNSEEN_ROBOT_STATION, Recorder
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.cli import main
from viewer_bridge.clients.client import ViewerClient
from viewer_bridge.core.messages import Twist, Vector3

BridgeFactory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIMOS_VIEWER_WS_URL", raising=False)
    monkeypatch.delenv("VIEWER_BRIDGE_TOKEN", raising=False)


def stops(server: RerunWebSocketServer, cause: str) -> int:
    """Zero twists the bridge published for ``cause`` ("stop" = an explicit stop, "disconnect", "deadman")."""
    return server.snapshot().zeros.get(cause, 0)


def send(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["send", *argv])
    return code, capsys.readouterr().err


def test_click_is_published_and_reported(
    bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, rec = bridge
    before = time.time()
    code, err = send(capsys, "click", "1", "-2.5", "0", "--entity-path", "/world/map", "--url", server.websocket_url())
    assert code == 0, err
    assert "click (1, -2.5, 0): accepted" in err
    (point,) = rec.points
    assert (point.x, point.y, point.z, point.frame_id) == (1.0, -2.5, 0.0, "world")
    assert before - 0.002 <= point.ts <= time.time()


def test_connection_options_may_come_before_the_message(
    bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, rec = bridge
    code, err = send(capsys, "--url", server.websocket_url(), "-q", "click", "3", "4", "5", "--timestamp-ms", "1000")
    assert (code, err) == (0, "")
    assert [(p.x, p.ts) for p in rec.points] == [(3.0, 1.0)]


def test_a_twist_alone_is_a_pulse_ended_by_the_bridges_disconnect_stop(
    bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, rec = bridge
    code, err = send(capsys, "twist", "--linear-x", "0.5", "--angular-z", "-0.3", "--url", server.websocket_url())
    assert code == 0, err
    rec.wait_twists(2)
    assert rec.twists == [Twist(Vector3(0.5, 0, 0), Vector3(0, 0, -0.3)), Twist.zero()]
    assert stops(server, "disconnect") == 1


def test_twist_for_a_duration_is_resent_then_stopped(
    bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, rec = bridge
    started = time.monotonic()
    code, err = send(
        capsys, "twist", "--linear-y", "0.2", "--duration", "0.5", "--rate", "20", "--url", server.websocket_url()
    )
    assert code == 0, err
    assert time.monotonic() - started >= 0.5
    *moving, last = rec.wait_twists(2)
    assert last == Twist.zero()
    assert 8 <= len(moving) <= 12  # 20 Hz for 0.5 s, both ends included
    assert all(t == Twist(Vector3(0, 0.2, 0), Vector3()) for t in moving)
    assert stops(server, "stop") == 1  # the explicit stop, not the deadman


def test_stop_and_heartbeat(bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]) -> None:
    server, rec = bridge
    with ViewerClient(server.websocket_url()) as driver:
        driver.twist(linear_x=1.0)
        driver.sync()
        assert send(capsys, "stop", "--url", server.websocket_url())[0] == 0
        assert send(capsys, "heartbeat", "--url", server.websocket_url())[0] == 0
    assert rec.twists == [Twist(Vector3(1.0, 0, 0), Vector3()), Twist.zero()]


def test_a_refusal_exits_1_with_the_bridges_reason(
    bridge: tuple[RerunWebSocketServer, Recorder], capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = bridge
    url = server.websocket_url()
    with ViewerClient(url) as driver:
        driver.twist(linear_x=1.0)
        driver.sync()
        code, err = send(capsys, "twist", "--linear-x", "-1", "--url", url)
        assert code == 1
        assert err.startswith("viewer-bridge send: rejected: not_driver: #0001 is driving")
    code, err = send(capsys, "heartbeat", "--timestamp-ms", "99999999999999", "--url", url)
    assert code == 1
    assert "rejected: invalid_field:" in err and "[field timestamp_ms]" in err


def test_the_real_command_exits_non_zero_with_the_reason(bridge_factory: BridgeFactory) -> None:
    # The driver must still hold the lease when the command's interpreter has started: a long deadman.
    server, _ = bridge_factory(deadman_timeout=60.0)
    with ViewerClient(server.websocket_url()) as driver:
        driver.twist(angular_z=0.5)
        driver.sync()
        result = subprocess.run(
            [sys.executable, "-m", "viewer_bridge", "send", "twist", "--linear-x", "0.5"],
            env={**os.environ, "DIMOS_VIEWER_WS_URL": server.websocket_url()},
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert "rejected: not_driver" in result.stderr


def test_no_bridge_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:  # bound, never listening
        held.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{held.getsockname()[1]}/ws"
        code, err = send(capsys, "stop", "--url", url)
    assert code == 3
    assert "cannot connect to" in err and "refused" in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["send", "click", "1", "nan", "0"])
    assert caught.value.code == 2
    assert "must be finite" in capsys.readouterr().err
    code, err = send(capsys, "stop", "--url", "http://example.invalid/")
    assert code == 2 and "not a WebSocket URL" in err
    code, err = send(capsys, "stop", "--url", "ws://[::1/ws")
    assert code == 2 and "not a valid WebSocket URL (Invalid IPv6 URL): 'ws://[::1/ws'" in err
    code, err = send(capsys, "stop", "--url", "ws://127.0.0.1:99999/ws?token=s3cret-0123456789")
    assert code == 2 and "(Port out of range 0-65535): 'ws://127.0.0.1:99999/ws?...'" in err and "s3cret" not in err
    code, err = send(capsys, "stop", "--token-file", "/nonexistent/token")
    assert code == 2 and "cannot read token_file" in err


def test_token_by_flag_file_or_environment(
    bridge_factory: BridgeFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server, rec = bridge_factory(token="s3cret-0123456789abcdef")
    url = server.websocket_url()
    code, err = send(capsys, "click", "1", "1", "1", "--url", url)
    assert code == 3 and "HTTP 401: missing or wrong token" in err
    assert send(capsys, "click", "1", "1", "1", "--url", url, "--token", "s3cret-0123456789abcdef")[0] == 0
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-0123456789abcdef\n")
    assert send(capsys, "click", "2", "2", "2", "--url", url, "--token-file", str(token_file))[0] == 0
    monkeypatch.setenv("VIEWER_BRIDGE_TOKEN", "s3cret-0123456789abcdef")
    monkeypatch.setenv("DIMOS_VIEWER_WS_URL", url)
    assert send(capsys, "click", "3", "3", "3")[0] == 0
    assert [p.x for p in rec.points] == [1.0, 2.0, 3.0]


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    """A folder with a bridge's ``cert.pem`` and ``key.pem`` for 127.0.0.1, and ``ca.pem``, the CA that issued them."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return tmp_path


def test_wss_with_a_ca_file(bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str], tls_dir: Path) -> None:
    server, rec = bridge_factory(tls_cert=str(tls_dir / "cert.pem"), tls_key=str(tls_dir / "key.pem"))
    url = server.websocket_url()
    code, err = send(capsys, "stop", "--url", url)
    assert code == 3 and "CERTIFICATE_VERIFY_FAILED" in err
    assert send(capsys, "click", "1", "2", "3", "--url", url, "--cafile", str(tls_dir / "ca.pem"))[0] == 0
    assert send(capsys, "click", "4", "5", "6", "--url", url, "--no-verify")[0] == 0
    assert [p.x for p in rec.points] == [1.0, 4.0]


def test_the_wrong_scheme_is_pointed_out(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str], tls_dir: Path
) -> None:
    tls, _ = bridge_factory(tls_cert=str(tls_dir / "cert.pem"), tls_key=str(tls_dir / "key.pem"))
    plain_url = tls.websocket_url().replace("wss://", "ws://")
    code, err = send(capsys, "stop", "--url", plain_url)
    assert code == 3
    assert err == (
        f"viewer-bridge send: WebSocket handshake with {plain_url} failed: did not receive a valid HTTP response; "
        f"if the bridge serves TLS, use {tls.websocket_url()}\n"
    )
    plain, _ = bridge_factory()
    tls_url = plain.websocket_url().replace("ws://", "wss://")
    code, err = send(capsys, "stop", "--url", tls_url, "--timeout", "1")
    assert code == 3
    assert err == (
        f"viewer-bridge send: no answer from {tls_url} within 1 s; "
        f"if the bridge does not serve TLS, use {plain.websocket_url()}\n"
    )


# -- a fleet station: --robot -------------------------------------------------------------------------

FLEET = {"go2-1": {"agent": False}, "go2-2": {"agent": False}}


def test_robot_chooses_the_robot_at_a_fleet_station(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server, _ = bridge_factory(robots=FLEET)
    got: dict[str, list[Twist]] = {name: [] for name in FLEET}
    for name, robot in server.robots.items():
        robot.tele_cmd_vel.subscribe(got[name].append)
    code, err = send(capsys, "twist", "--linear-x", "0.3", "--robot", "go2-2", "--url", server.websocket_url())
    assert code == 0, err
    assert server.wait_delivered()
    assert got["go2-2"][0] == Twist(Vector3(0.3, 0, 0), Vector3()) and got["go2-1"] == []


def test_robot_unknown_or_missing_is_named(bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str]) -> None:
    server, _ = bridge_factory(robots=FLEET)
    code, err = send(capsys, "stop", "--robot", "go2-9", "--url", server.websocket_url())
    assert code == 3
    assert "unknown_robot: no robot named 'go2-9' here; robots: go2-1, go2-2" in err
    code, err = send(capsys, "twist", "--linear-x", "0.3", "--url", server.websocket_url())
    assert code == 1
    assert "unknown_robot" in err and "?robot=NAME" in err
    code, err = send(capsys, "stop", "--robot", "a/b", "--url", server.websocket_url())
    assert code == 2 and "invalid robot name 'a/b'" in err


def test_a_stop_refused_its_websocket_by_the_connection_budget_goes_over_http(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "s3cret-0123456789abcdef"
    server, rec = bridge_factory(connect_rate=0.01, connect_burst=1, token=token, deadman_timeout=60.0)
    url = server.websocket_url()
    with ViewerClient(url, token=token) as driver:  # spends this address's one connection for ~100 s
        driver.twist(linear_x=1.0)
        driver.sync()
        code, err = send(capsys, "click", "1", "1", "1", "--url", url, "--token", token)
        assert code == 3 and "HTTP 429: too many new connections from 127.0.0.1" in err  # only stopping falls back
        code, err = send(capsys, "stop", "--url", url, "--token", token)
        assert code == 0, err
        assert "HTTP 429" in err and "sending the stop as POST /stop instead" in err
        assert "stop over HTTP (driver was #0001): accepted" in err
        assert rec.twists == [Twist(Vector3(1.0, 0, 0), Vector3()), Twist.zero()]
        code, err = send(capsys, "estop", "--reason", "drill", "--url", url, "--token", token)
        assert code == 0 and "estop over HTTP (e-stop LATCHED by http:127.0.0.1 at " in err and ": drill)" in err
        code, err = send(capsys, "estop-clear", "--url", url, "--token", token)
        assert code == 0 and "estop-clear over HTTP (e-stop released): accepted" in err, err
        code, err = send(capsys, "stop", "--url", url, "--token", "not-" + token)
        assert code == 1 and "rejected: POST http://127.0.0.1:" in err
        assert "/stop: HTTP 401: missing or wrong token" in err
    assert stops(server, "stop") == 1 and server.snapshot().connect_throttled == 5


def test_a_stop_refused_its_websocket_by_a_full_bridge_goes_over_http(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    server, rec = bridge_factory(max_connections=1, deadman_timeout=60.0)
    url = server.websocket_url()
    with ViewerClient(url) as driver:  # the one connection the bridge takes
        driver.twist(linear_x=1.0)
        driver.sync()
        code, err = send(capsys, "stop", "--url", url)
        assert code == 0, err
        assert "HTTP 503: connection limit reached (1)" in err and "sending the stop as POST /stop instead" in err
    assert rec.twists == [Twist(Vector3(1.0, 0, 0), Vector3()), Twist.zero()] and stops(server, "stop") == 1


def test_a_stop_over_http_to_a_robot_the_station_does_not_see_warns_even_when_quiet(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    require_zenoh()
    # go2-2's agent never comes: the stop is published at the station, but nothing says the robot heard it.
    server, _ = bridge_factory(**UNSEEN_ROBOT_STATION)
    url = server.websocket_url()
    with ViewerClient(url):  # the one connection the station takes
        code, err = send(capsys, "stop", "--url", url, "--quiet")
        assert code == 0, err
        assert "viewer-bridge send: warning: go2-2 is offline (the station does not see its agent): the stop was " \
            "published at the station but may not reach it" in err, err
        code, err = send(capsys, "estop", "--robot", "go2-1", "--url", url)
        assert code == 0 and "estop over HTTP" in err and "offline" not in err, err


def test_the_http_fallback_speaks_tls_with_the_same_ca_file(
    bridge_factory: BridgeFactory, capsys: pytest.CaptureFixture[str], tls_dir: Path
) -> None:
    server, rec = bridge_factory(
        tls_cert=str(tls_dir / "cert.pem"), tls_key=str(tls_dir / "key.pem"), max_connections=1, deadman_timeout=60.0
    )
    url = server.websocket_url()
    assert url.startswith("wss://")
    with ViewerClient(url, cafile=str(tls_dir / "ca.pem")) as driver:  # the one connection the bridge takes
        driver.twist(linear_x=1.0)
        driver.sync()
        code, err = send(capsys, "stop", "--url", url, "--cafile", str(tls_dir / "ca.pem"))
        assert code == 0 and "sending the stop as POST /stop instead" in err, err
        code, err = send(capsys, "estop", "--url", url)  # no CA file: TLS fails before any 503, nothing falls back
        assert code == 3 and "CERTIFICATE_VERIFY_FAILED" in err, err
    assert rec.twists == [Twist(Vector3(1.0, 0, 0), Vector3()), Twist.zero()] and rec.of("estop") == []

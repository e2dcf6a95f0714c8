"""``viewer-bridge listen``: the real command against a real LCM bus, and the listener over Zenoh."""

from __future__ import annotations

import io
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.transports.bus_support import (
    Driver,
    PlainLcm,
    free_port,
    require_lcm,
    require_zenoh,
    running_bridge,
    unique_lcm_url,
    unique_name,
)
from viewer_bridge.cli import main
from viewer_bridge.listen import BusListener, RateMeter, Received, format_line, run_listen
from viewer_bridge.messages import Bool, PointStamped, Twist, Vector3
from viewer_bridge.streams import Topic

REPO = Path(__file__).resolve().parents[1]


def test_rate_meter() -> None:
    meter = RateMeter(window=2.0)
    assert meter.tick(10.0) is None
    assert meter.tick(10.1) == pytest.approx(10.0)
    assert meter.tick(10.2) == pytest.approx(10.0)
    assert meter.tick(10.4) == pytest.approx(3 / 0.4)
    # Old arrivals leave the window: after a pause the rate reflects only recent ones.
    assert meter.tick(13.0) is None
    assert meter.tick(13.5) == pytest.approx(2.0)
    assert meter.count == 6


def test_text_and_json_lines() -> None:
    topic = Topic("robot1/cmd_vel", "robot1/cmd_vel", Twist)
    item = Received("lcm", "/robot1/cmd_vel#geometry_msgs.Twist", topic, Twist(Vector3(0.5, 0, 0)), 0.0)
    line = format_line(item, 29.97, as_json=False)
    assert line.startswith("lcm   /robot1/cmd_vel#geometry_msgs.Twist    30.0Hz  [TWIST] linear=(0.500,")
    assert "    -   " in format_line(item, None, as_json=False)
    record = json.loads(format_line(item, 29.97, as_json=True))
    assert record == {
        "transport": "lcm",
        "topic": "robot1/cmd_vel",
        "channel": "/robot1/cmd_vel#geometry_msgs.Twist",
        "rate_hz": 29.97,
        "type": "geometry_msgs.Twist",
        "linear": [0.5, 0.0, 0.0],
        "angular": [0.0, 0.0, 0.0],
    }


def _listen(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "viewer_bridge", "listen", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _wait_line(stream: io.TextIOBase | None, marker: str, timeout: float = 20.0) -> str:
    assert stream is not None
    deadline = time.monotonic() + timeout
    seen = []
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = stream.readline()
            if not line:
                break
            seen.append(line)
            if marker in line:
                return line
    raise AssertionError(f"{marker!r} never appeared; got {seen}")


def test_listen_command_decodes_everything_under_a_namespace_from_lcm() -> None:
    require_lcm()
    ns = unique_name("ns")
    url = unique_lcm_url()
    proc = _listen("--transport", "lcm", "--lcm-url", url, "--namespace", ns, "--json", "--count", "5")
    try:
        _wait_line(proc.stderr, "listening on lcm")  # printed once subscribed
        with (
            PlainLcm(url, "$^") as other,
            running_bridge(transports=["lcm"], lcm_url=url, namespace=ns) as bridge,
            Driver(bridge.websocket_url()) as viewer,
        ):
            # Noise the listener must not print: another namespace, and a type the bridge does not use.
            other.publish("/elsewhere/cmd_vel#geometry_msgs.Twist", Twist(Vector3(9, 9, 9)).lcm_encode())
            other.publish(f"/{ns}/camera#sensor_msgs.Image", b"\x00" * 32)
            # From a third-party publisher, remapped-looking names included.
            other.publish(
                f"/{ns}/nav/goal#geometry_msgs.PointStamped", PointStamped(1.5, -2, 0.25, 12.5, "map").lcm_encode()
            )
            # From the bridge: stop_movement, then the twist, twice.
            viewer.twist(linear_x=0.5, angular_z=0.8)
            viewer.twist(linear_x=0.5, angular_z=0.8)
            viewer.stop()
            out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["topic"] for r in records] == [
        f"{ns}/nav/goal",
        f"{ns}/stop_movement",
        f"{ns}/tele_cmd_vel",
        f"{ns}/tele_cmd_vel",
        f"{ns}/tele_cmd_vel",
    ]
    goal, flag, first, second, zero = records
    assert goal == {
        "transport": "lcm",
        "topic": f"{ns}/nav/goal",
        "channel": f"/{ns}/nav/goal#geometry_msgs.PointStamped",
        "rate_hz": None,
        "type": "geometry_msgs.PointStamped",
        "x": 1.5,
        "y": -2.0,
        "z": 0.25,
        "ts": 12.5,
        "frame_id": "map",
    }
    assert flag["data"] is True and flag["type"] == "std_msgs.Bool"
    assert first["linear"] == [0.5, 0.0, 0.0] and first["angular"] == [0.0, 0.0, 0.8]
    assert first["rate_hz"] is None and second["rate_hz"] > 0  # the rate needs two arrivals
    assert zero["linear"] == [0.0, 0.0, 0.0] and zero["angular"] == [0.0, 0.0, 0.0]


def test_listen_text_output_and_ctrl_c() -> None:
    require_lcm()
    ns = unique_name("ns")
    url = unique_lcm_url()
    proc = _listen("--transport", "lcm", "--lcm-url", url, "--namespace", ns)
    try:
        _wait_line(proc.stderr, "listening on lcm")
        with PlainLcm(url, "$^") as other:
            other.publish(f"/{ns}/stop_movement#std_msgs.Bool", Bool(True).lcm_encode())
            line = _wait_line(proc.stdout, "STOP_MOVEMENT")
        assert line.split() == ["lcm", f"/{ns}/stop_movement#std_msgs.Bool", "-", "[STOP_MOVEMENT]", "true"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert f"lcm /{ns}/stop_movement#std_msgs.Bool: 1 messages" in err


def test_listen_reports_an_unusable_bus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "--transport", "lcm", "--lcm-url", "udpm://10.9.9.9:7667"]) == 1
    assert "not a multicast address" in capsys.readouterr().err


def test_listener_over_zenoh() -> None:
    require_zenoh()
    from viewer_bridge.transports.zenoh import ZenohTransport

    ns = unique_name("ns")
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    with (
        running_bridge(
            transports=["zenoh"], zenoh_listen=[endpoint], zenoh_multicast_scouting=False, namespace=ns,
            remap={"tele_cmd_vel": "cmd_vel"},
        ) as bridge,
        BusListener([ZenohTransport(connect=[endpoint], multicast_scouting=False)], namespace=ns) as listener,
        Driver(bridge.websocket_url()) as viewer,
    ):  # fmt: skip
        # Drive until the listener's subscription has reached the bridge's session.
        deadline = time.monotonic() + 10
        while (item := listener.get(0.1)) is None:
            assert time.monotonic() < deadline, "the listener never heard the bridge"
            viewer.twist(linear_x=0.25)
        assert item.transport == "zenoh"
        assert item.topic.name in (f"{ns}/stop_movement", f"{ns}/cmd_vel")
        viewer.click(1.0, 2.0, 3.0, timestamp_ms=1_700_000_000_000)
        deadline = time.monotonic() + 10
        while not item.topic.name.endswith("clicked_point"):
            got = listener.get(max(0.0, deadline - time.monotonic()))
            assert got is not None, "the click never reached the listener"
            item = got
        click = json.loads(format_line(item, None, as_json=True))
        assert click["channel"] == f"dimos/{ns}/clicked_point/geometry_msgs.PointStamped"
        assert (click["x"], click["y"], click["z"], click["ts"]) == (1.0, 2.0, 3.0, 1_700_000_000.0)
        # run_listen prints what comes and stops on its count.
        out = io.StringIO()
        viewer.twist(linear_x=0.75)
        seen = run_listen(listener, out, as_json=True, count=1, duration=10)
        assert json.loads(out.getvalue())["topic"] in (f"{ns}/cmd_vel", f"{ns}/stop_movement")
        assert sum(seen.values()) == 1

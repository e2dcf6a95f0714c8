"""``viewer-bridge listen``: the real command against a real LCM bus, and the listener over Zenoh."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    LineReader,
    PlainLcm,
    free_port,
    require_lcm,
    require_zenoh,
    running_bridge,
    unique_lcm_url,
    unique_name,
)
from tests.conftest import wait_until
from viewer_bridge.bus.listen import BusListener, RateMeter, Received, format_line, run_listen
from viewer_bridge.cli import main
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3
from viewer_bridge.core.topics import Topic

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


class Listen:
    """``viewer-bridge listen ARGS`` as a child process, its output read by threads."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "viewer_bridge", "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=REPO,
        )
        self.stdout = LineReader(self.proc.stdout)
        self.stderr = LineReader(self.proc.stderr)

    def finish(self, timeout: float = 20.0) -> tuple[list[str], list[str]]:
        """Wait for the exit (killing it after ``timeout``); the rest of stdout and stderr."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        out = list(iter(lambda: self.stdout.get(10), None))
        err = list(iter(lambda: self.stderr.get(10), None))
        for reader, stream in ((self.stdout, self.proc.stdout), (self.stderr, self.proc.stderr)):
            reader.join()
            assert stream is not None
            stream.close()
        return out, err


def test_listen_command_decodes_everything_under_a_namespace_from_lcm() -> None:
    require_lcm()
    ns = unique_name("ns")
    url = unique_lcm_url()
    listen = Listen("--transport", "lcm", "--lcm-url", url, "--namespace", ns, "--json", "--count", "5")
    try:
        listen.stderr.until("listening on lcm")  # printed once subscribed
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
            # From the bridge: stop_movement, then the twist, twice. The bridge's command lane sends
            # only the newest of the twists it has not sent yet, so the second waits for the first.
            def on_bus() -> int:
                return bridge.snapshot().deliveries.get(("tele_cmd_vel", "lcm"), (0, 0))[0]

            for n in (1, 2):
                viewer.twist(linear_x=0.5, angular_z=0.8)
                wait_until(lambda n=n: on_bus() == n, what=f"twist {n} on the bus")  # type: ignore[misc]
            viewer.stop()
    finally:
        out, err = listen.finish()
    assert listen.proc.returncode == 0, err
    records = [json.loads(line) for line in out]
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
    listen = Listen("--transport", "lcm", "--lcm-url", url, "--namespace", ns)
    try:
        listen.stderr.until("listening on lcm")
        with PlainLcm(url, "$^") as other:
            other.publish(f"/{ns}/stop_movement#std_msgs.Bool", Bool(True).lcm_encode())
            line = listen.stdout.until("STOP_MOVEMENT")[-1]
        assert line.split() == ["lcm", f"/{ns}/stop_movement#std_msgs.Bool", "-", "[STOP_MOVEMENT]", "true"]
        listen.proc.send_signal(signal.SIGINT)
    finally:
        _, err = listen.finish()
    assert listen.proc.returncode == 0
    assert f"  lcm /{ns}/stop_movement#std_msgs.Bool: 1 message" in err


def test_listen_reports_an_unusable_bus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["listen", "--transport", "lcm", "--lcm-url", "udpm://10.9.9.9:7667"]) == 1
    assert "not a multicast address" in capsys.readouterr().err


def test_listener_over_zenoh() -> None:
    require_zenoh()
    from viewer_bridge.bus.transports.zenoh import ZenohTransport

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

"""Several transports at once, remapping and namespaces, the start banner, and start-up errors via the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    LineReader,
    PlainLcm,
    PlainZenoh,
    free_port,
    require_lcm,
    require_zenoh,
    running_bridge,
    unique_lcm_url,
    unique_name,
    wait_for_zero,
    warm_up_zenoh,
)
from viewer_bridge.cli import banner, main
from viewer_bridge.config import ConfigError, load_config
from viewer_bridge.core.messages import Twist, Vector3

REPO = Path(__file__).resolve().parents[2]


def test_lcm_and_zenoh_at_once_with_remap_and_namespace() -> None:
    require_lcm()
    require_zenoh()
    ns = unique_name("ns")
    url = unique_lcm_url()
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    lcm_channel = f"/{ns}/cmd_vel#geometry_msgs.Twist"
    zenoh_key = f"dimos/{ns}/cmd_vel/geometry_msgs.Twist"
    with (
        PlainLcm(url, ".*#.*") as lcm_bus,
        running_bridge(
            transports=["lcm", "zenoh"],
            lcm_url=url,
            zenoh_listen=[endpoint],
            zenoh_multicast_scouting=False,
            remap={"tele_cmd_vel": "cmd_vel"},
            namespace=ns,
        ) as bridge,
        PlainZenoh(f"dimos/{ns}/**", connect=[endpoint]) as zenoh_bus,
        Driver(bridge.websocket_url()) as viewer,
    ):
        warm_up_zenoh(viewer, zenoh_bus, zenoh_key)
        wait_for_zero(lcm_bus, lcm_channel)  # LCM saw the warm-up drive too
        lcm_bus.drain()
        viewer.twist(linear_x=0.5, angular_z=-0.8)
        expected = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, -0.8)).lcm_encode()
        assert lcm_bus.get_on(lcm_channel) == expected
        assert zenoh_bus.get_on(zenoh_key) == expected
        lines = banner(bridge.server, token_set=False)
        assert (
            f"  tele_cmd_vel (geometry_msgs.Twist) -> in-process tele_cmd_vel, lcm {lcm_channel}, zenoh {zenoh_key}"
            in lines
        )
        assert (
            f"  clicked_point (geometry_msgs.PointStamped) -> in-process clicked_point, "
            f"lcm /{ns}/clicked_point#geometry_msgs.PointStamped, "
            f"zenoh dimos/{ns}/clicked_point/geometry_msgs.PointStamped" in lines
        )
        assert (
            f"  stop_movement (std_msgs.Bool) -> in-process stop_movement, "
            f"lcm /{ns}/stop_movement#std_msgs.Bool, zenoh dimos/{ns}/stop_movement/std_msgs.Bool" in lines
        )


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (
            {"remap": {"clicked_point": "tele_cmd_vel"}},
            "on topic 'tele_cmd_vel', already used by stream 'clicked_point'",
        ),
        ({"remap": {"tele_cmd_vel": "stop_movement"}}, "already used by stream"),
        ({"remap": {"cmd_vel": "x"}}, "unknown stream 'cmd_vel'"),
        ({"remap": {"tele_cmd_vel": "bad name!"}}, "invalid topic name"),
        ({"namespace": "robot 1"}, "invalid namespace"),
        ({"mux": "nav_cmd_vel", "mux_output": "nav_cmd_vel"}, "same topic"),
        ({"mux": "tele_cmd_vel"}, "the bridge's own output"),
        ({"mux": "nav_cmd_vel", "remap": {"tele_cmd_vel": "cmd_vel"}}, "both command it"),
        ({"mux": "nav_cmd_vel", "mux_cooldown": -1.0}, "mux_cooldown"),
    ],
)
def test_topic_clashes_are_errors_at_start(settings: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(overrides=settings, environ={})


def test_remap_and_namespace_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        'namespace = "robot1"\ntransports = ["lcm", "zenoh"]\nmux = "nav_cmd_vel"\n'
        '[remap]\ntele_cmd_vel = "teleop/cmd_vel"\n'
    )
    config = load_config(path, environ={})
    assert config.remap == {"tele_cmd_vel": "teleop/cmd_vel"} and config.transports == ["lcm", "zenoh"]
    from viewer_bridge.core.topics import TopicMap

    topic = TopicMap(config.remap, config.namespace)["tele_cmd_vel"]
    assert topic.lcm_channel == "/robot1/teleop/cmd_vel#geometry_msgs.Twist"
    assert topic.zenoh_key == "dimos/robot1/teleop/cmd_vel/geometry_msgs.Twist"


def test_cli_refuses_a_clashing_remap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--remap", "clicked_point=tele_cmd_vel"]) == 2
    assert "already used by stream 'clicked_point'" in capsys.readouterr().err


def test_cli_refuses_an_unusable_bus_with_a_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--transport", "lcm", "--lcm-url", "udpm://10.9.9.9:7667?ttl=0"]) == 1
    err = capsys.readouterr().err
    assert "not a multicast address" in err


def _serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LCM_DEFAULT_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "viewer_bridge", "serve", "--port", "0", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_cli_banner_lists_every_stream_on_every_transport() -> None:
    require_lcm()
    require_zenoh()
    ns = unique_name("ns")
    url = unique_lcm_url()
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    proc = _serve(
        "--transport", "lcm", "--transport", "zenoh", "--lcm-url", url,
        "--zenoh-listen", endpoint, "--no-zenoh-multicast-scouting",
        "--remap", "tele_cmd_vel=cmd_vel", "--namespace", ns, "--mux", "nav_cmd_vel", "--mux-output", "base_cmd_vel",
    )  # fmt: skip
    stderr = LineReader(proc.stderr)
    try:
        text = "\n".join(stderr.until("out: "))
        assert (
            f"tele_cmd_vel (geometry_msgs.Twist) -> in-process tele_cmd_vel, lcm /{ns}/cmd_vel#geometry_msgs.Twist, "
            f"zenoh dimos/{ns}/cmd_vel/geometry_msgs.Twist" in text
        )
        assert f"lcm /{ns}/clicked_point#geometry_msgs.PointStamped" in text
        assert f"zenoh dimos/{ns}/stop_movement/std_msgs.Bool" in text
        assert f"navigation in: in-process nav_cmd_vel, lcm /{ns}/nav_cmd_vel#geometry_msgs.Twist" in text
        assert (
            f"base_cmd_vel out: in-process base_cmd_vel, lcm /{ns}/base_cmd_vel#geometry_msgs.Twist, "
            f"zenoh dimos/{ns}/base_cmd_vel/geometry_msgs.Twist" in text
        )
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.join()
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == 0

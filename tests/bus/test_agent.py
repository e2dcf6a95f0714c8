"""The robot agent over real Zenoh and a real LCM bus: orders in, DimOS messages out, and its own deadman.

The station here is a hand-driven Zenoh session speaking the fleet wire
(tests/bus/fleet_support.py); a plain ``lcm`` subscriber checks what reaches
the robot's bus. Every session has multicast scouting off and explicit
endpoints on free ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bus.fleet_support import FWD, HandStation, Router
from tests.bus.transports.bus_support import (
    PlainLcm,
    free_port,
    require_lcm,
    require_zenoh,
    unique_lcm_url,
    zenoh_config,
)
from tests.conftest import wait_until
from viewer_bridge.bus.agent import RobotAgent
from viewer_bridge.core.fleet import ALL_AGENTS, Kind
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3

REPO = Path(__file__).resolve().parents[2]
TELE = "/tele_cmd_vel#geometry_msgs.Twist"
# What the agent publishes (not the LCM transport's own start-up probe, nor LCM's self-test).
ROBOT_TOPICS = "/.*(tele_cmd_vel|cmd_vel|clicked_point|stop_movement|estop)#.*"
TURN = Twist(Vector3(0, 0, 0), Vector3(0, 0, 0.8))


@pytest.fixture(autouse=True)
def _deps() -> None:
    require_zenoh()
    require_lcm()


def _endpoint() -> str:
    return f"tcp/127.0.0.1:{free_port()}"


class Robot:
    """An agent listening on its own endpoint, and a plain LCM subscriber on its bus."""

    def __init__(self, name: str = "go2-1", **settings: object) -> None:
        self.endpoint = _endpoint()
        self.url = unique_lcm_url()
        self.bus = PlainLcm(self.url, pattern=ROBOT_TOPICS)
        self.agent = RobotAgent(
            name,
            lcm_url=self.url,
            zenoh_listen=[self.endpoint],
            zenoh_multicast_scouting=False,
            **settings,  # type: ignore[arg-type]
        )
        self.agent.start()

    def twists(self, channel: str = TELE) -> list[Twist]:
        return [Twist.lcm_decode(data) for name, data in self.bus.drain() if name == channel]

    def next_twist(self, channel: str = TELE, timeout: float = 5.0) -> Twist:
        return Twist.lcm_decode(self.bus.get_on(channel, timeout))

    def close(self) -> None:
        self.agent.stop()
        self.bus.close()


@pytest.fixture
def robot() -> Iterator[Robot]:
    r = Robot(link_timeout=0.3)
    yield r
    r.close()


def _connected(station: HandStation, robot: Robot) -> None:
    """Wait until the station's orders reach the agent (Zenoh routes declarations asynchronously)."""
    wait_until(lambda: station.session.info.peers_zid(), timeout=10, what="the station to connect")
    received: list[object] = []
    sub = station.session.liveliness().declare_subscriber(ALL_AGENTS, received.append, history=True)
    try:
        wait_until(lambda: received, timeout=10, what="the agent's liveliness token")
    finally:
        sub.undeclare()
    # Orders are best effort: repeat the first until it gets through, then release it.
    def arrived() -> bool:
        station.twist(robot.agent.robot, drive=0)
        try:
            robot.bus.get_on(TELE, timeout=0.2)
            return True
        except AssertionError:
            return False

    wait_until(arrived, timeout=10, what="an order to reach the robot's bus")
    station.send(robot.agent.robot, Kind.RELEASE, drive=0)
    # Everything up to the warm-up drive's zero is off the bus.
    while not robot.next_twist().is_zero():
        pass


def test_orders_reach_the_robots_bus_and_a_lapse_gives_exactly_one_zero(robot: Robot) -> None:
    with HandStation("control", [robot.endpoint]) as station:
        station.watch_state("go2-1")
        _connected(station, robot)
        station.twist("go2-1", FWD, client="alice", drive=1)
        assert robot.next_twist() == FWD
        station.twist("go2-1", TURN, client="alice", drive=1)
        assert robot.next_twist() == TURN
        state = station.state_where(lambda s: s.holder is not None and s.holder.drive == 1)
        assert (state.holder.station, state.holder.client, state.holder.drive) == ("control", "alice", 1)  # type: ignore[union-attr]
        assert state.link_timeout == 0.3
        # Silence: the agent's own deadman.
        assert robot.next_twist(timeout=5) == Twist.zero()
        wait_until(lambda: robot.agent.snapshot().zeros.get("lapsed") == 1, what="the lapse to be counted")
        robot.bus.assert_quiet(0.5)
        assert robot.agent.snapshot().watchdog_zeros == 1
        station.state_where(lambda s: s.holder is None)
        # A late order of that drive is refused, and moves nothing.
        station.twist("go2-1", FWD, client="alice", drive=1)
        reply = station.reply()
        assert (reply.reason, reply.client, reply.drive, reply.robot) == ("lapsed", "alice", 1, "go2-1")
        robot.bus.assert_quiet(0.3)


def test_stop_movement_and_clicks_and_the_estop_on_dimos_channels(robot: Robot) -> None:
    from dimos_lcm.std_msgs import Bool as LcmBool

    with HandStation("control", [robot.endpoint]) as station:
        _connected(station, robot)
        station.twist("go2-1", FWD, drive=1)
        name, data = robot.bus.get(what="stop_movement")
        assert name == "/stop_movement#std_msgs.Bool" and LcmBool.lcm_decode(data).data is True
        assert robot.next_twist() == FWD
        point = PointStamped(1.5, -2.0, 0.25, 1_700_000_000.25, "world")
        station.send("go2-1", Kind.CLICK, point=point)
        got = PointStamped.lcm_decode(robot.bus.get_on("/clicked_point#geometry_msgs.PointStamped"))
        assert (got.x, got.y, got.z, got.frame_id) == (1.5, -2.0, 0.25, "world")
        station.send("go2-1", Kind.ESTOP, client="bob", reason="wall")
        assert LcmBool.lcm_decode(robot.bus.get_on("/estop#std_msgs.Bool")).data is True
        assert robot.next_twist() == Twist.zero()
        station.twist("go2-1", FWD, drive=2)
        reply = station.reply()
        assert (reply.reason, reply.who) == ("estopped", "bob at control")
        station.send("go2-1", Kind.ESTOP_CLEAR)
        assert LcmBool.lcm_decode(robot.bus.get_on("/estop#std_msgs.Bool")).data is False
    # In-process streams carried the same.
    assert robot.agent.snapshot().estop is None


def test_a_second_station_is_refused_naming_the_driver_and_its_stop_wins(robot: Robot) -> None:
    with HandStation("control", [robot.endpoint]) as a, HandStation("field", [robot.endpoint]) as b:
        _connected(a, robot)
        _connected(b, robot)
        a.twist("go2-1", FWD, client="alice", drive=1)
        assert robot.next_twist() == FWD
        b.twist("go2-1", TURN, client="bob", drive=1)
        reply = b.reply()
        assert (reply.reason, reply.who, reply.client) == ("not_driver", "alice at control", "bob")
        b.send("go2-1", Kind.STOP, client="bob")
        assert robot.next_twist() == Twist.zero()
        a.twist("go2-1", FWD, client="alice", drive=1)
        reply = a.reply()
        assert (reply.reason, reply.who) == ("stopped_by_other", "bob at field")
        robot.bus.assert_quiet(0.3)


def test_the_driving_station_leaving_gives_one_zero_at_once() -> None:
    robot = Robot(link_timeout=30.0)  # long: the zero must come from the station's token going away
    try:
        station = HandStation("control", [robot.endpoint])
        _connected(station, robot)
        station.twist("go2-1", FWD, drive=1)
        assert robot.next_twist() == FWD
        station.close()
        assert robot.next_twist(timeout=10) == Twist.zero()
        # Its only peer was that station: the link going and the token going both end the drive,
        # whichever the agent hears of first, and the other finds nothing left to stop.
        zeros = robot.agent.snapshot().zeros
        assert zeros.get("station_gone", 0) + zeros.get("link_lost", 0) == 1, zeros
        robot.bus.assert_quiet(0.3)
    finally:
        robot.close()


def test_losing_the_router_gives_exactly_one_zero() -> None:
    router_endpoint = _endpoint()
    url = unique_lcm_url()
    with Router([router_endpoint]) as router, PlainLcm(url) as bus:
        agent = RobotAgent(
            "go2-1", lcm_url=url, link_timeout=30.0, zenoh_mode="client", zenoh_connect=[router_endpoint],
            zenoh_multicast_scouting=False,
        )
        agent.start()
        try:
            with HandStation("control", [router_endpoint], mode="client") as station:
                wait_until(lambda: agent.snapshot().linked, timeout=10, what="the agent to reach the router")

                def drives() -> bool:
                    station.twist("go2-1", FWD, drive=1)
                    return agent.snapshot().holder is not None

                wait_until(drives, timeout=10, what="the station's twist to reach the agent")
                bus.drain()
                router.close()
                wait_until(lambda: not agent.snapshot().linked, timeout=30, what="the agent to notice")
                agent.wait_delivered()
                # The router's end takes the station's token with it too: whichever the agent hears of
                # first ends the drive, and the other finds nothing left to stop.
                zeros = agent.snapshot().zeros
                assert zeros.get("link_lost", 0) + zeros.get("station_gone", 0) == 1, zeros
                seen = [Twist.lcm_decode(bus.get_on(TELE))]
                while not seen[-1].is_zero():
                    seen.append(Twist.lcm_decode(bus.get_on(TELE)))
                bus.assert_quiet(0.3)
                assert all(t == FWD for t in seen[:-1])
        finally:
            agent.stop()


def test_undecodable_orders_are_counted_and_change_nothing(robot: Robot) -> None:
    with HandStation("control", [robot.endpoint]) as station:
        _connected(station, robot)
        station.session.put("viewer_bridge/fleet/go2-1/cmd", b"\x00garbage")
        wait_until(lambda: robot.agent.snapshot().bad_orders == 1, what="the bad order to be counted")
        station.twist("go2-1", FWD, drive=1)
        assert robot.next_twist() == FWD


def test_namespace_and_remap_name_the_robots_topics() -> None:
    robot = Robot(namespace="go2_1", remap={"tele_cmd_vel": "cmd_vel"})
    try:
        with HandStation("control", [robot.endpoint]) as station:
            received: list[object] = []
            robot.agent.tele_cmd_vel.subscribe(received.append)
            wait_until(lambda: station.session.info.peers_zid(), timeout=10, what="the station to connect")

            def arrived() -> bool:
                station.twist("go2-1", FWD, drive=1)
                try:
                    robot.bus.get_on("/go2_1/cmd_vel#geometry_msgs.Twist", timeout=0.2)
                    return True
                except AssertionError:
                    return False

            wait_until(arrived, timeout=10, what="a twist on /go2_1/cmd_vel")
            robot.agent.wait_delivered()
            assert FWD in received
    finally:
        robot.close()


def test_stop_publishes_a_last_zero_when_driving() -> None:
    robot = Robot(link_timeout=30.0)
    try:
        with HandStation("control", [robot.endpoint]) as station:
            _connected(station, robot)
            station.twist("go2-1", FWD, drive=1)
            assert robot.next_twist() == FWD
            robot.agent.stop()
            assert robot.next_twist() == Twist.zero()
            assert robot.agent.snapshot().zeros.get("shutdown") == 1
    finally:
        robot.close()


def test_the_agent_is_a_stream_source_for_a_program_that_embeds_it(robot: Robot) -> None:
    seen: list[object] = []
    robot.agent.stop_movement.subscribe(seen.append)
    with HandStation("control", [robot.endpoint]) as station:
        _connected(station, robot)
        seen.clear()
        station.twist("go2-1", FWD, drive=1)
        robot.next_twist()
        robot.agent.wait_delivered()
        assert seen == [Bool(True)]


# -- the command line ---------------------------------------------------------------------------------


def _agent_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "viewer_bridge", "agent", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def test_cli_bad_robot_name_is_a_usage_error() -> None:
    proc = _agent_cli("--robot", "a/b")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "invalid robot name 'a/b'" in err and "Traceback" not in err


def test_cli_without_a_router_in_client_mode_fails_with_the_fix() -> None:
    proc = _agent_cli("--robot", "go2-1", "--transport", "lcm", "--lcm-url", unique_lcm_url(),
                      "--zenoh-mode", "client", "--zenoh-connect", _endpoint(), "--no-zenoh-multicast-scouting")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "client mode needs a reachable zenohd router" in err and "Traceback" not in err


def test_cli_runs_declares_the_robot_and_stops_on_sigterm() -> None:
    import zenoh

    endpoint = _endpoint()
    proc = _agent_cli("--robot", "go2-7", "--lcm-url", unique_lcm_url(), "--zenoh-listen", endpoint,
                      "--no-zenoh-multicast-scouting", "--link-timeout", "0.4")
    session = zenoh.open(zenoh_config(None, [endpoint]))
    try:
        seen: list[str] = []
        sub = session.liveliness().declare_subscriber(ALL_AGENTS, lambda s: seen.append(str(s.key_expr)),
                                                      history=True)
        wait_until(lambda: seen, timeout=30, what="the agent's token")
        assert seen == ["viewer_bridge/fleet/go2-7/agent"]
        sub.undeclare()
    finally:
        session.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "viewer-bridge agent for robot go2-7: link timeout 0.4 s" in err
    assert "tele_cmd_vel (geometry_msgs.Twist) -> lcm /tele_cmd_vel#geometry_msgs.Twist" in err

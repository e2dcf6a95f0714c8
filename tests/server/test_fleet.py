"""A fleet station over real Zenoh: a router, the station bridge, two robot agents, each with its own LCM bus.

Everything runs in this process on loopback (the network-namespace version,
with cut links and killed processes, is tests/fleet/test_fleet_netns.py):
a Zenoh session in router mode, a :class:`RerunWebSocketServer` with a
``robots`` table as a Zenoh client, and one :class:`RobotAgent` per robot,
each publishing on an LCM group of its own watched by a plain ``lcm``
subscriber. Clients are plain WebSocket connections.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.bus.fleet_support import HandStation, Router
from tests.bus.transports.bus_support import (
    PlainLcm,
    free_port,
    require_lcm,
    require_zenoh,
    unique_lcm_url,
)
from tests.conftest import recv_json, twist, wait_until
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.bus.agent import RobotAgent
from viewer_bridge.core.fleet import Kind, reply_key, state_key
from viewer_bridge.core.messages import PointStamped, Twist, Vector3

TELE = "/tele_cmd_vel#geometry_msgs.Twist"
# What the agent publishes (not the LCM transport's own start-up probe, nor LCM's self-test).
ROBOT_TOPICS = "/.*(tele_cmd_vel|cmd_vel|clicked_point|stop_movement|estop)#.*"
CLICK = "/clicked_point#geometry_msgs.PointStamped"
FWD = {"linear_x": 0.5}
# Zenoh sessions and LCM handles of the tests' own: no thread of any kind may outlive a test.
pytestmark = pytest.mark.all_threads


@pytest.fixture(autouse=True)
def _deps() -> None:
    require_zenoh()
    require_lcm()


class Robot:
    def __init__(self, name: str, router: str, **settings: Any) -> None:
        self.name = name
        self.url = unique_lcm_url()
        self.bus = PlainLcm(self.url, pattern=ROBOT_TOPICS)
        self.agent = RobotAgent(
            name, lcm_url=self.url, zenoh_mode="client", zenoh_connect=[router], zenoh_multicast_scouting=False,
            **settings,
        )  # fmt: skip
        self.agent.start()

    def next_twist(self, timeout: float = 10.0) -> Twist:
        return Twist.lcm_decode(self.bus.get_on(TELE, timeout))

    def twists_until_zero(self, timeout: float = 10.0) -> list[Twist]:
        seen = [self.next_twist(timeout)]
        while not seen[-1].is_zero():
            seen.append(self.next_twist(timeout))
        return seen

    def close(self) -> None:
        self.agent.stop()
        self.bus.close()


class Fleet:
    """A router, a station, and robots; ``client(robot)`` opens a WebSocket to the station."""

    def __init__(self, robots: dict[str, dict[str, Any]], link_timeout: float = 0.5, **settings: Any) -> None:
        self.endpoint = f"tcp/127.0.0.1:{free_port()}"
        self.router = Router([self.endpoint])
        self.robots: dict[str, Robot] = {}
        self.stations: list[RerunWebSocketServer] = []
        self._clients = contextlib.ExitStack()
        self.link_timeout = link_timeout
        self.station = self.add_station(robots, **settings)

    def add_station(self, robots: dict[str, dict[str, Any]], **settings: Any) -> RerunWebSocketServer:
        station = RerunWebSocketServer(
            port=0, robots=robots, zenoh_mode="client", zenoh_connect=[self.endpoint],
            zenoh_multicast_scouting=False, **settings,
        )  # fmt: skip
        station.start()
        self.stations.append(station)
        return station

    def add_robot(self, name: str, **settings: Any) -> Robot:
        robot = self.robots[name] = Robot(name, self.endpoint, link_timeout=self.link_timeout, **settings)
        return robot

    def online(self, name: str, station: RerunWebSocketServer | None = None) -> None:
        station = station or self.station
        wait_until(lambda: station.snapshot().robots[name].online, timeout=20, what=f"{name} online at the station")

    def client(self, robot: str | None = None, station: RerunWebSocketServer | None = None) -> ClientConnection:
        station = station or self.station
        url = station.websocket_url() + (f"?robot={robot}" if robot else "")
        return self._clients.enter_context(connect(url, open_timeout=10))

    def close(self) -> None:
        self._clients.close()
        for station in self.stations:
            station.stop()
        for robot in self.robots.values():
            robot.close()
        self.router.close()


ROBOTS: dict[str, dict[str, Any]] = {
    "go2-1": {"namespace": "go2_1", "entity_prefix": "/world/robots/go2-1", "max_linear_x": 0.8},
    "go2-2": {"namespace": "go2_2", "entity_prefix": "/world/robots/go2-2"},
}


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    f = Fleet(ROBOTS)
    try:
        for name in ROBOTS:
            f.add_robot(name)
            f.online(name)
        yield f
    finally:
        f.close()


def _drive_until_heard(ws: ClientConnection, robot: Robot, **axes: float) -> Twist:
    """Send twists until the robot's bus has one (orders are best effort, and Zenoh routes need a moment)."""
    got: list[Twist] = []

    def heard() -> bool:
        ws.send(twist(**axes))
        try:
            got.append(robot.next_twist(timeout=0.2))
            return True
        except AssertionError:
            return False

    wait_until(heard, timeout=15, what=f"a twist on {robot.name}'s bus")
    return got[0]


def _post(fleet: Fleet, target: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """POST to the station: the status and the JSON answer."""
    request = urllib.request.Request(fleet.station.http_url(target), data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _error(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    frame = recv_json(ws, timeout)
    assert frame["type"] == "error", frame
    return frame


def test_two_clients_drive_two_robots_at_once_each_bus_sees_only_its_own(fleet: Fleet) -> None:
    r1, r2 = fleet.robots["go2-1"], fleet.robots["go2-2"]
    a, b = fleet.client("go2-1"), fleet.client("go2-2")
    # go2-1's own limit clamps it; go2-2 has none.
    assert _drive_until_heard(a, r1, linear_x=1.0) == Twist(Vector3(0.8, 0, 0), Vector3())
    assert _drive_until_heard(b, r2, angular_z=0.5) == Twist(Vector3(), Vector3(0, 0, 0.5))
    snap = fleet.station.snapshot().robots
    assert snap["go2-1"].driver is not None and snap["go2-2"].driver is not None
    assert snap["go2-1"].driver != snap["go2-2"].driver
    a.send(json.dumps({"type": "stop"}))
    b.send(json.dumps({"type": "stop"}))
    assert all(t.linear.x == 0.8 for t in r1.twists_until_zero()[:-1])
    assert all(t.angular.z == 0.5 for t in r2.twists_until_zero()[:-1])
    r1.bus.assert_quiet(0.3)
    r2.bus.assert_quiet(0.3)


def test_a_click_under_robot_2s_entity_prefix_reaches_only_robot_2_and_chooses_it(fleet: Fleet) -> None:
    r1, r2 = fleet.robots["go2-1"], fleet.robots["go2-2"]
    ws = fleet.client()  # no ?robot=
    click = {"type": "click", "x": 1.5, "y": -2.0, "z": 0.25, "entity_path": "/world/robots/go2-2/base",
             "timestamp_ms": 1_700_000_000_250}

    points: list[PointStamped] = []

    def arrived() -> bool:
        ws.send(json.dumps(click))
        try:
            points.append(PointStamped.lcm_decode(r2.bus.get_on(CLICK, timeout=0.3)))
            return True
        except AssertionError:
            return False

    wait_until(arrived, timeout=15, what="the click on go2-2's bus")
    assert (points[0].x, points[0].y, points[0].z, points[0].frame_id) == (1.5, -2.0, 0.25, "world")
    r1.bus.assert_quiet(0.3)
    # That click chose the robot: this client's twists now go to go2-2.
    assert _drive_until_heard(ws, r2, linear_x=0.3).linear.x == 0.3
    r1.bus.assert_quiet(0.3)


def test_no_robot_chosen_and_unknown_robots_are_told_the_names(fleet: Fleet) -> None:
    ws = fleet.client()
    ws.send(twist(**FWD))
    frame = _error(ws)
    assert frame["reason"] == "unknown_robot"
    assert "?robot=NAME" in frame["detail"] and "go2-1, go2-2" in frame["detail"]
    ws.send(json.dumps({"type": "click", "x": 1, "y": 2, "z": 0, "entity_path": "/world/map"}))
    assert _error(ws)["reason"] == "unknown_robot"
    with pytest.raises(Exception) as refused:
        connect(fleet.station.websocket_url() + "?robot=go2-9", open_timeout=10)
    response = refused.value.response  # type: ignore[attr-defined]
    assert response.status_code == 404
    body = json.loads(response.body)
    assert body["reason"].startswith("unknown_robot: no robot named 'go2-9' here; robots: go2-1, go2-2")


def test_an_offline_robot_refuses_commands_is_named_by_http_safety_answers_and_comes_back() -> None:
    f = Fleet(ROBOTS, deadman_timeout=30.0)  # the drive lasts until the agent goes
    try:
        ws = f.client("go2-1")
        ws.send(twist(**FWD))
        frame = _error(ws)
        assert frame["reason"] == "robot_offline" and "go2-1 is offline" in frame["detail"]
        # A stop or an e-stop over HTTP still acts at the station, and says whom it may not reach.
        assert _post(f, "/stop") == (200, {"stopped": True, "robots": {"go2-1": None, "go2-2": None},
                                           "offline": ["go2-1", "go2-2"]})
        status, body = _post(f, "/estop?robot=go2-2")
        assert status == 200 and body["offline"] == ["go2-2"] and body["estop"] is not None, body
        status, body = _post(f, "/estop/clear?robot=go2-2")
        assert status == 200 and body["offline"] == ["go2-2"] and body["estop"] is None, body
        robot = f.add_robot("go2-1")
        f.online("go2-1")
        assert _drive_until_heard(ws, robot, **FWD).linear.x == 0.5
        # The agent goes away while driving: the station ends the drive and tells the driver.
        robot.agent.stop()
        wait_until(lambda: not f.station.snapshot().robots["go2-1"].online, timeout=20, what="go2-1 offline")
        deadline_frame = _error(ws)
        assert deadline_frame["reason"] == "robot_offline"
        assert f.station.snapshot().robots["go2-1"].driver is None
        status, body = _post(f, "/stop?robot=go2-1")
        assert status == 200 and body["offline"] == ["go2-1"], body
    finally:
        f.close()


def test_the_station_refreshes_a_held_key_so_the_agents_link_timeout_does_not_fire() -> None:
    f = Fleet(ROBOTS, link_timeout=0.3, deadman_timeout=5.0, fleet_refresh_hz=20.0)
    try:
        robot = f.add_robot("go2-1")
        f.online("go2-1")
        ws = f.client("go2-1")
        _drive_until_heard(ws, robot, **FWD)
        # No new twist from the client for longer than the agent's link timeout: the refreshes keep it going.
        before = f.station.snapshot().robots["go2-1"].orders.get("twist", 0)
        wait_until(lambda: f.station.snapshot().robots["go2-1"].orders.get("twist", 0) >= before + 20, timeout=10,
                   what="20 refreshes (a second of holding)")
        assert robot.agent.snapshot().zeros == {}
        assert robot.agent.snapshot().holder is not None
        ws.send(json.dumps({"type": "stop"}))
        assert robot.twists_until_zero()[-1].is_zero()
        assert robot.agent.snapshot().zeros == {"stop": 1}
    finally:
        f.close()


def test_the_stations_deadman_ends_the_drive_with_exactly_one_zero_at_the_robot() -> None:
    f = Fleet(ROBOTS, link_timeout=0.3, deadman_timeout=0.6)
    try:
        robot = f.add_robot("go2-1")
        f.online("go2-1")
        ws = f.client("go2-1")
        _drive_until_heard(ws, robot, **FWD)
        seen = robot.twists_until_zero()
        assert all(t.linear.x == 0.5 for t in seen[:-1])
        wait_until(lambda: f.station.snapshot().robots["go2-1"].zeros.get("deadman") == 1, what="the deadman")
        robot.bus.assert_quiet(0.5)
        assert sum(robot.agent.snapshot().zeros.values()) == 1
    finally:
        f.close()


def test_a_second_station_gets_not_driver_naming_who_drives_and_its_stop_still_stops(fleet: Fleet) -> None:
    second = fleet.add_station(ROBOTS, station="field")
    fleet.online("go2-1", second)
    r1 = fleet.robots["go2-1"]
    a = fleet.client("go2-1")
    _drive_until_heard(a, r1, **FWD)
    wait_until(lambda: second.snapshot().robots["go2-1"].holder is not None, timeout=10,
               what="the second station to hear who drives")
    b = fleet.client("go2-1", second)
    b.send(twist(angular_z=0.5))
    frame = _error(b)
    station_name = fleet.station.server.fleet.station  # type: ignore[union-attr]
    assert frame["reason"] == "not_driver"
    assert frame["detail"].startswith(f"#0001 at {station_name} is driving go2-1")
    b.send(json.dumps({"type": "stop"}))
    r1.twists_until_zero()
    # The first station's driver is told, and must let go before driving again.
    a.send(twist(**FWD))
    frame = _error(a)
    assert frame["reason"] == "stopped_by_other" and "at field" in frame["detail"]
    r1.bus.assert_quiet(0.3)


def test_an_estop_at_one_station_holds_the_robot_for_every_station(fleet: Fleet) -> None:
    second = fleet.add_station(ROBOTS, station="field")
    fleet.online("go2-2", second)
    r2 = fleet.robots["go2-2"]
    a = fleet.client("go2-2")
    _drive_until_heard(a, r2, **FWD)
    a.send(json.dumps({"type": "estop", "reason": "test"}))
    r2.twists_until_zero()
    wait_until(lambda: second.snapshot().robots["go2-2"].estop is not None, timeout=10,
               what="the e-stop mirrored at the second station")
    b = fleet.client("go2-2", second)
    b.send(twist(**FWD))
    frame = _error(b)
    assert frame["reason"] == "estopped" and "test" in frame["detail"]
    # Cleared at the second station: cleared at the robot and the first station.
    b.send(json.dumps({"type": "estop_clear"}))
    wait_until(lambda: r2.agent.snapshot().estop is None, timeout=10, what="the robot's e-stop cleared")
    wait_until(lambda: fleet.station.snapshot().robots["go2-2"].estop is None, timeout=10,
               what="the first station to mirror the clear")
    # go2-1 was never latched.
    assert fleet.robots["go2-1"].agent.snapshot().estop is None


def test_status_and_metrics_are_per_robot(fleet: Fleet) -> None:
    r1 = fleet.robots["go2-1"]
    a = fleet.client("go2-1")
    _drive_until_heard(a, r1, **FWD)
    with urllib.request.urlopen(fleet.station.http_url("/status"), timeout=10) as response:
        status = json.loads(response.read())
    assert set(status["robots"]) == {"go2-1", "go2-2"}
    assert status["robots"]["go2-1"]["online"] is True
    assert status["robots"]["go2-1"]["driver"] == "#0001"
    assert status["robots"]["go2-2"]["driver"] is None
    assert status["clients"][0]["robot"] == "go2-1"
    with urllib.request.urlopen(fleet.station.http_url("/metrics"), timeout=10) as response:
        metrics = response.read().decode()
    assert 'viewer_bridge_robot_online{robot="go2-1"} 1.0' in metrics
    assert 'viewer_bridge_robot_driven{robot="go2-1"} 1.0' in metrics
    assert 'viewer_bridge_robot_driven{robot="go2-2"} 0.0' in metrics
    assert 'viewer_bridge_fleet_orders_total{kind="twist",robot="go2-1"}' in metrics
    with urllib.request.urlopen(fleet.station.http_url("/healthz"), timeout=10) as response:
        health = json.loads(response.read())
    assert health["fleet"]["robots"]["go2-1"]["online"] is True


def test_states_and_replies_that_do_not_decode_are_counted_and_change_nothing() -> None:
    f = Fleet(ROBOTS, station="desk")
    forger = HandStation("forger", [f.endpoint], mode="client")
    try:
        for name in ROBOTS:
            f.add_robot(name)
            f.online(name)
        forger.session.put(state_key("go2-1"), b"\x93not a state")
        forger.session.put(reply_key("go2-1", "desk"), b"\xc1 is no msgpack at all")

        def bad_messages() -> float:
            with urllib.request.urlopen(f.station.http_url("/metrics"), timeout=10) as response:
                text = response.read().decode()
            [line] = [line for line in text.splitlines() if line.startswith("viewer_bridge_fleet_bad_messages_total ")]
            return float(line.split()[1])

        wait_until(lambda: bad_messages() == 2, timeout=20, what="both forgeries counted")
        assert f.station.snapshot().robots["go2-1"].online
        robot = f.robots["go2-1"]
        assert _drive_until_heard(f.client("go2-1"), robot, **FWD).linear.x == 0.5
    finally:
        forger.close()
        f.close()


def test_post_estop_latches_every_robot(fleet: Fleet) -> None:
    request = urllib.request.Request(fleet.station.http_url("/estop"), data=b'{"reason":"all"}', method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert set(body["robots"]) == {"go2-1", "go2-2"} and all(body["robots"].values())
    for robot in fleet.robots.values():
        wait_until(lambda robot=robot: robot.agent.snapshot().estop is not None, timeout=10,  # type: ignore[misc]
                   what=f"{robot.name} latched")


def test_post_stop_stops_the_robot_named_or_every_robot(fleet: Fleet) -> None:
    r1, r2 = fleet.robots["go2-1"], fleet.robots["go2-2"]
    a, b = fleet.client("go2-1"), fleet.client("go2-2")
    _drive_until_heard(a, r1, **FWD)
    _drive_until_heard(b, r2, angular_z=0.5)

    def post(target: str) -> tuple[int, dict[str, Any]]:
        return _post(fleet, target)

    assert post("/stop?robot=go2-1") == (200, {"stopped": True, "robots": {"go2-1": "#0001"}, "offline": []})
    assert r1.twists_until_zero()[-1] == Twist.zero()
    b.send(twist(angular_z=0.5))  # go2-2 was not stopped: its driver still drives it
    assert r2.next_twist() == Twist(Vector3(), Vector3(0, 0, 0.5))
    status, body = post("/stop?robot=nope")
    assert status == 404 and body["reason"].startswith("unknown_robot: ")
    assert post("/stop") == (200, {"stopped": True, "robots": {"go2-1": None, "go2-2": "#0002"}, "offline": []})
    r2.twists_until_zero()
    a.send(twist(**FWD))  # both drivers were stopped by someone else: they must let go first
    assert _error(a)["reason"] == "stopped_by_other"
    b.send(twist(angular_z=0.5))
    frame = _error(b)
    assert frame["reason"] == "stopped_by_other" and "http:127.0.0.1 stopped you" in frame["detail"], frame


def test_post_estop_and_clear_act_on_the_robot_named_or_every_robot(fleet: Fleet) -> None:
    # As a client's estop / estop_clear: its robot's, or every robot's when it chose none.
    r1, r2 = fleet.robots["go2-1"], fleet.robots["go2-2"]
    status, body = _post(fleet, "/estop?robot=go2-1", b'{"reason":"one"}')
    assert status == 200 and body["estop"]["reason"] == "one", body
    assert body["robots"]["go2-1"]["reason"] == "one" and body["robots"]["go2-2"] is None, body
    wait_until(lambda: r1.agent.snapshot().estop is not None, timeout=10, what="go2-1 latched at the robot")
    _drive_until_heard(fleet.client("go2-2"), r2, **FWD)  # go2-2 was not latched: it drives
    assert r2.agent.snapshot().estop is None
    status, body = _post(fleet, "/estop/clear?robot=nope")
    assert status == 404 and body["reason"].startswith("unknown_robot: ")
    # Releasing go2-2 (never latched) leaves go2-1 latched: a release of one robot is not a release of all.
    status, body = _post(fleet, "/estop/clear?robot=go2-2")
    assert status == 200 and body["estop"] is None and body["robots"]["go2-1"]["reason"] == "one", body
    assert fleet.station.snapshot().robots["go2-1"].estop is not None
    status, body = _post(fleet, "/estop/clear?robot=go2-1")
    assert status == 200 and body["robots"] == {"go2-1": None, "go2-2": None}, body
    wait_until(lambda: r1.agent.snapshot().estop is None, timeout=10, what="go2-1 released at the robot")
    # None named: every robot, both ways.
    status, body = _post(fleet, "/estop", b'{"reason":"all"}')
    assert status == 200 and {name: latch["reason"] for name, latch in body["robots"].items()} == {
        "go2-1": "all", "go2-2": "all"
    }, body
    status, body = _post(fleet, "/estop/clear")
    assert status == 200 and body["robots"] == {"go2-1": None, "go2-2": None}, body


def test_a_stale_order_after_the_agents_lapse_is_refused_and_the_client_told(fleet: Fleet) -> None:
    # A hand-made order of an old drive, as a cut link's buffer would deliver it.
    r1 = fleet.robots["go2-1"]
    with HandStation("probe", [fleet.endpoint], mode="client") as probe:
        wait_until(lambda: probe.session.info.routers_zid(), timeout=10, what="the probe on the router")

        def taken() -> bool:
            probe.twist("go2-1", drive=1)
            return r1.agent.snapshot().holder is not None

        wait_until(taken, timeout=10, what="the probe's drive")
        wait_until(lambda: r1.agent.snapshot().zeros.get("lapsed") == 1, timeout=10, what="the lapse")
        probe.twist("go2-1", drive=1)
        assert probe.reply().reason == "lapsed"
        probe.send("go2-1", Kind.RELEASE, drive=1)


def test_without_robots_nothing_changes() -> None:
    server = RerunWebSocketServer(port=0)
    server.start()
    try:
        assert server.robots == {} and server.server.fleet is None
        assert server.snapshot().robots == {}
        with urllib.request.urlopen(server.http_url("/status"), timeout=10) as response:
            assert json.loads(response.read()) == {"driver": None, "estop": None, "clients": []}
        with connect(server.websocket_url() + "?robot=go2-1", open_timeout=10) as ws:
            ws.send(twist(**FWD))
            assert server.wait_delivered()
    finally:
        server.stop()


def test_listen_shows_the_fleet_robots_online_and_who_drives_which(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    from viewer_bridge.bus.listen import FleetWatcher
    from viewer_bridge.cli import main

    station_name = fleet.station.server.fleet.station  # type: ignore[union-attr]
    watcher = FleetWatcher({"mode": "client", "connect": [fleet.endpoint], "multicast_scouting": False})
    watcher.start()
    try:
        events: list[dict[str, Any]] = []

        def seen(event: dict[str, Any]) -> bool:
            while (item := watcher.get(0.05)) is not None:
                events.append(item)
            return event in events

        for name in ROBOTS:
            wait_until(lambda name=name: seen({"event": "robot", "robot": name, "online": True}), timeout=10,  # type: ignore[misc]
                       what=f"{name} online")
        wait_until(lambda: seen({"event": "station", "station": station_name, "online": True}), timeout=10,
                   what="the station")
        _drive_until_heard(fleet.client("go2-1"), fleet.robots["go2-1"], **FWD)
        wait_until(lambda: seen({"event": "state", "robot": "go2-1", "driven_by": f"#0001 at {station_name}",
                                 "estop_by": None, "linked": True, "link_timeout_s": 0.5}), timeout=10,
                   what="go2-1 driven by the station's client")
    finally:
        watcher.close()
    code = main(["listen", "--fleet", "--zenoh-mode", "client", "--zenoh-connect", fleet.endpoint,
                 "--no-zenoh-multicast-scouting", "--count", "3", "--duration", "20"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert {"robot   go2-1: online", "robot   go2-2: online", f"station {station_name}: online"} == set(out)


def test_without_a_router_agents_connect_to_the_station_as_peers() -> None:
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    station = RerunWebSocketServer(port=0, robots={"go2-1": {}}, zenoh_listen=[endpoint],
                                   zenoh_multicast_scouting=False)
    station.start()
    url = unique_lcm_url()
    agent = RobotAgent("go2-1", lcm_url=url, zenoh_connect=[endpoint], zenoh_multicast_scouting=False)
    try:
        with PlainLcm(url, pattern=ROBOT_TOPICS) as bus:
            agent.start()
            wait_until(lambda: station.snapshot().robots["go2-1"].online, timeout=20, what="go2-1 online")
            with connect(station.websocket_url() + "?robot=go2-1", open_timeout=10) as ws:

                def heard() -> bool:
                    ws.send(twist(**FWD))
                    try:
                        return Twist.lcm_decode(bus.get_on(TELE, 0.2)).linear.x == 0.5
                    except AssertionError:
                        return False

                wait_until(heard, timeout=15, what="the twist on go2-1's bus")
    finally:
        agent.stop()
        station.stop()

"""The fleet's acceptance tests, across hosts: network namespaces joined by veth pairs.

The topology::

    operator --- station --- router --- robot1   (agent + plain lcm listener)
                                    \\-- robot2   (agent + plain lcm listener)

Each box is a namespace: the operator's WebSocket clients, the station
(``viewer-bridge serve`` with a ``robots`` table, a Zenoh client), a Zenoh
router (a zenoh session in router mode: what ``zenohd`` is), and two robots,
each running ``viewer-bridge agent`` on its own LCM bus (loopback multicast
inside its namespace) and an independent plain ``lcm`` subscriber that
decodes with dimos-lcm. Links are cut with ``ip link set down`` at the
router's end; processes are killed with SIGKILL.

What is asserted is function: which messages reach each robot's bus, in
which order, how many zeros. How fast is the benchmark's business
(``bench/fleet.py``); the failure table in docs/fleet.md cites both.

Skipped where namespaces cannot be made, except in CI (CI=true), where that
is a failure.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bus.transports.bus_support import need, require_lcm, require_zenoh
from tests.conftest import wait_until
from tests.fleet.topology import PEER, LcmListener, Link, Proc, Topology

pytestmark = [pytest.mark.netns, pytest.mark.all_threads]

ROUTER_PORT = 7447
STATION_PORT = 3030
LINK_TIMEOUT = 0.5
# Robot 2's link is never cut or frozen here: it is the robot that must drive on undisturbed. Its link
# timeout is long because a Python process on a loaded 2-core machine can stall for more than 0.5 s,
# and robot 2's agent would then (correctly) end its drive mid-test with a zero, and the station's next
# order would start a new drive (stop_movement, then twists). Robot 1 keeps the short one: its lapse
# is what the cut-link and frozen-router tests check.
STEADY_LINK_TIMEOUT = 3.0
ZERO = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
TWIST = "tele_cmd_vel#geometry_msgs.Twist"
STATION_TOML = """\
station = "{station}"

[robots.go2-1]
namespace = "go2_1"
entity_prefix = "/world/robots/go2-1"

[robots.go2-2]
namespace = "go2_2"
entity_prefix = "/world/robots/go2-2"
"""


@dataclass
class Fleet:
    net: Topology
    tmp: Path
    router_link: dict[str, Link] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    agents: dict[str, Proc] = field(default_factory=dict)
    buses: dict[str, LcmListener] = field(default_factory=dict)
    stations: dict[str, Proc] = field(default_factory=dict)
    station_url: dict[str, str] = field(default_factory=dict)

    def router_address(self, host: str) -> str:
        return self.router_link[host].addr_a

    def start_router(self) -> None:
        endpoints = [f"--listen=tcp/{link.addr_a}:{ROUTER_PORT}" for link in self.router_link.values()]
        router = Proc.python(self.net.hosts["router"], "router", str(PEER), "router", *endpoints, "--lease", "1")
        self.procs.append(router)
        assert router.expect() == {"ready": True}

    def start_robot(self, name: str, host: str, link_timeout: float = LINK_TIMEOUT) -> None:
        ns = self.net.hosts[host]
        url = f"udpm://239.255.{random.randint(1, 254)}.{random.randint(1, 254)}:7667?ttl=0"
        self.buses[name] = bus = LcmListener(ns, url, f"{name}'s bus")
        self.procs.append(bus)
        agent = Proc.python(
            ns, f"agent {name}", "-m", "viewer_bridge", "agent", "--robot", name, "--transport", "lcm",
            "--lcm-url", url, "--zenoh-mode", "client",
            "--zenoh-connect", f"tcp/{self.router_address(host)}:{ROUTER_PORT}",
            "--no-zenoh-multicast-scouting", "--link-timeout", str(link_timeout), "--zenoh-lease", "1",
        )  # fmt: skip
        self.procs.append(agent)
        self.agents[name] = agent
        agent.stderr.until(f"viewer-bridge agent for robot {name}", timeout=60)

    def start_station(self, name: str, port: int = STATION_PORT) -> str:
        config = self.tmp / f"{name}.toml"
        config.write_text(STATION_TOML.format(station=name))
        station = Proc.python(
            self.net.hosts["station"], f"station {name}", "-m", "viewer_bridge", "serve", "--config", str(config),
            "--host", "0.0.0.0", "--port", str(port), "--insecure", "--zenoh-mode", "client",
            "--zenoh-connect", f"tcp/{self.router_address('station')}:{ROUTER_PORT}",
            "--no-zenoh-multicast-scouting", "--no-link-limits",
        )  # fmt: skip
        self.procs.append(station)
        self.stations[name] = station
        station.stderr.until("listening. Point dimos-viewer at", timeout=60)
        self.station_url[name] = f"ws://{self.net.links[0].addr_a}:{port}/ws"
        return self.station_url[name]

    def client(self, station: str, robot: str | None = None) -> Proc:
        url = self.station_url[station] + (f"?robot={robot}" if robot else "")
        client = Proc.python(self.net.hosts["operator"], f"client of {station} for {robot}", str(PEER), "client",
                             "--url", url)
        self.procs.append(client)
        assert client.expect() == {"ready": True}
        return client

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.close()
        self.net.close()


def status(client: Proc) -> dict[str, Any]:
    answer: dict[str, Any] = client.send("status")["status"]
    return answer


def online(client: Proc, robot: str, want: bool = True, timeout: float = 30.0) -> None:
    wait_until(lambda: status(client)["robots"][robot]["online"] is want, timeout=timeout, interval=0.2,
               what=f"{robot} {'online' if want else 'offline'} at the station")


def errors(client: Proc) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = client.send("errors")["errors"]
    return found


def wait_error(client: Proc, reason: str, timeout: float = 20.0) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next((e for e in errors(client) if e["reason"] == reason), None)

    error: dict[str, Any] = wait_until(found, timeout=timeout, interval=0.1, what=f"a {reason} error")
    return error


def moving_until_zero(bus: LcmListener) -> list[tuple[float, ...]]:
    """Twists on a robot's bus up to and including the first zero."""
    seen = [bus.next_twist()]
    while seen[-1] != ZERO:
        seen.append(bus.next_twist())
    return seen


def first_moving(bus: LcmListener) -> tuple[float, ...]:
    while (twist := bus.next_twist()) == ZERO:
        pass
    return twist


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    Topology.require()
    require_lcm()
    require_zenoh()
    net = Topology()
    f = Fleet(net, tmp_path)
    try:
        for name in ("operator", "station", "router"):
            net.host(name)
        for name in ("robot1", "robot2"):
            net.host(name, lcm=True)
        net.link("station", "operator")
        for host in ("station", "robot1", "robot2"):
            f.router_link[host] = net.link("router", host)
        f.start_router()
        f.start_robot("go2-1", "robot1")
        f.start_robot("go2-2", "robot2", link_timeout=STEADY_LINK_TIMEOUT)
        f.start_station("control")
        yield f
    finally:
        f.close()


def test_two_clients_drive_two_robots_each_bus_sees_only_its_own_and_a_click_goes_by_prefix(fleet: Fleet) -> None:
    one, two = fleet.client("control", "go2-1"), fleet.client("control", "go2-2")
    online(one, "go2-1")
    online(one, "go2-2")
    one.send("hold 0.3 0.0 20")
    two.send("hold 0.0 0.6 20")
    assert first_moving(fleet.buses["go2-1"]) == (0.3, 0.0, 0.0, 0.0, 0.0, 0.0)
    assert first_moving(fleet.buses["go2-2"]) == (0.0, 0.0, 0.0, 0.0, 0.0, 0.6)
    report = status(one)["robots"]
    assert report["go2-1"]["driver"] and report["go2-2"]["driver"]
    assert report["go2-1"]["driver"] != report["go2-2"]["driver"]
    one.send("release")
    two.send("release")
    # Each bus: only its own robot's twists, then one zero.
    assert set(moving_until_zero(fleet.buses["go2-1"])[:-1]) <= {(0.3, 0.0, 0.0, 0.0, 0.0, 0.0)}
    assert set(moving_until_zero(fleet.buses["go2-2"])[:-1]) <= {(0.0, 0.0, 0.0, 0.0, 0.0, 0.6)}
    fleet.buses["go2-1"].quiet(1.0)
    fleet.buses["go2-2"].quiet(0.5)
    # A click under go2-2's entity prefix, from a client that chose no robot, reaches only go2-2.
    clicker = fleet.client("control")
    clicker.send("click 1.5 -2.0 0.25 /world/robots/go2-2/base_link")
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped

    point = LcmPointStamped.lcm_decode(fleet.buses["go2-2"].next_on("clicked_point#geometry_msgs.PointStamped"))
    assert (point.point.x, point.point.y, point.point.z) == (1.5, -2.0, 0.25)
    fleet.buses["go2-1"].quiet(1.0)


def _axes(msg: Any) -> tuple[float, ...]:
    return (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z)


def test_cut_link_one_zero_offline_other_robot_unaffected_and_no_replay_when_back(fleet: Fleet) -> None:
    one, two = fleet.client("control", "go2-1"), fleet.client("control", "go2-2")
    online(one, "go2-1")
    online(one, "go2-2")
    one.send("hold 0.3 0.0 20")
    two.send("hold 0.0 0.6 20")
    bus1, bus2 = fleet.buses["go2-1"], fleet.buses["go2-2"]
    first_moving(bus1)
    first_moving(bus2)
    fleet.net.set_link(fleet.router_link["robot1"], up=False)
    # Robot 1's agent hears nothing more: its own deadman publishes exactly one zero.
    seen = moving_until_zero(bus1)
    assert set(seen[:-1]) <= {(0.3, 0.0, 0.0, 0.0, 0.0, 0.0)} and seen[-1] == ZERO
    # Robot 2 drives on: only its moving twist, no zero, while robot 1 goes offline at the station.
    online(one, "go2-1", want=False)
    error = wait_error(one, "robot_offline")
    assert "go2-1 is offline" in error["detail"]
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    drained = bus2.drain()
    assert drained

    def story() -> str:
        told = [
            str(_axes(LcmTwist.lcm_decode(bytes.fromhex(r["hex"])))) if r["name"].endswith(TWIST) else r["name"]
            for r in drained
        ]
        return f"{told}; robot 2's agent said: {fleet.agents['go2-2'].stderr_text()[-2000:]}"

    others = [r["name"] for r in drained if not r["name"].endswith(TWIST)]
    assert others == [], f"robot 2's bus carried more than its twists: {story()}"
    zeros = [r for r in drained if not any(_axes(LcmTwist.lcm_decode(bytes.fromhex(r["hex"]))))]
    assert zeros == [], f"robot 2 got {len(zeros)} zero twists of {len(drained)} while it drove on: {story()}"
    assert bus2.next_twist() == (0.0, 0.0, 0.0, 0.0, 0.0, 0.6)
    # Commands to the offline robot are refused; its operator lets go.
    one.send("release")
    bus1.quiet(0.5)  # the one zero was all
    fleet.net.set_link(fleet.router_link["robot1"], up=True)
    online(one, "go2-1", timeout=60)
    # Back online: nothing old is replayed onto its bus...
    bus1.quiet(2.0)
    # ...and it drives again when told to.
    one.send("hold 0.2 0.0 20")
    assert first_moving(bus1) == (0.2, 0.0, 0.0, 0.0, 0.0, 0.0)
    one.send("release")
    two.send("release")
    assert moving_until_zero(bus1)[-1] == ZERO


def test_kill_9_of_the_station_while_driving_gives_each_driven_robot_one_zero(fleet: Fleet) -> None:
    one, two = fleet.client("control", "go2-1"), fleet.client("control", "go2-2")
    online(one, "go2-1")
    online(one, "go2-2")
    one.send("hold 0.3 0.0 20")
    two.send("hold 0.0 0.6 20")
    first_moving(fleet.buses["go2-1"])
    first_moving(fleet.buses["go2-2"])
    fleet.stations["control"].kill()
    for name in ("go2-1", "go2-2"):
        seen = moving_until_zero(fleet.buses[name])
        assert seen[-1] == ZERO and ZERO not in seen[:-1]
    for name in ("go2-1", "go2-2"):
        fleet.buses[name].quiet(1.5)


def test_a_second_station_gets_not_driver_naming_who_drives_and_its_stop_stops_the_robot(fleet: Fleet) -> None:
    fleet.start_station("field", STATION_PORT + 1)
    one = fleet.client("control", "go2-1")
    other = fleet.client("field", "go2-1")
    online(one, "go2-1")
    online(other, "go2-1")
    one.send("hold 0.3 0.0 20")
    bus1 = fleet.buses["go2-1"]
    first_moving(bus1)
    wait_until(lambda: status(other)["robots"]["go2-1"]["driven_by"] == "#0001 at control", timeout=20,
               interval=0.2, what="the field station to hear who drives go2-1")
    other.send("twist 0.0 0.5")
    error = wait_error(other, "not_driver")
    assert error["detail"].startswith("#0001 at control is driving go2-1")
    other.send("stop")
    assert moving_until_zero(bus1)[-1] == ZERO
    error = wait_error(one, "stopped_by_other")
    assert "at field" in error["detail"]
    # The first station's operator still holds its key: refused until it lets go; nothing moves.
    bus1.quiet(1.0)
    one.send("release")


def test_the_real_dimos_viewer_with_robot_in_its_url_drives_robot_1(fleet: Fleet) -> None:
    from tests.interop.viewer_harness import DimosViewer, XvfbDisplay, find_viewer_binary, missing_tools

    missing = missing_tools()
    need(missing is None, missing or "")
    binary = find_viewer_binary()
    assert binary is not None
    # The viewer runs on the operator's host: a wrapper enters its namespace and execs the real binary.
    wrapper = fleet.tmp / "dimos-viewer-in-operator"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {fleet.net.hosts["operator"]} {binary} "$@"\n')
    wrapper.chmod(0o755)
    watcher = fleet.client("control", "go2-1")
    online(watcher, "go2-1")
    url = fleet.station_url["control"] + "?robot=go2-1"
    with XvfbDisplay() as display, DimosViewer(display, url, binary=str(wrapper)) as viewer:
        wait_until(lambda: len(status(watcher)["clients"]) == 2, timeout=60, interval=0.2,
                   what="the viewer connected to the station")
        viewer.engage_teleop()
        viewer.key_hold("w", 0.8)
        seen = moving_until_zero(fleet.buses["go2-1"])
    assert (0.5, 0.0, 0.0, 0.0, 0.0, 0.0) in seen and seen[-1] == ZERO
    fleet.buses["go2-2"].quiet(0.5)


def test_a_frozen_router_gives_one_zero_and_its_backlog_is_refused_when_it_thaws(fleet: Fleet) -> None:
    import signal

    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    router = fleet.procs[0]
    one = fleet.client("control", "go2-1")
    online(one, "go2-1")
    one.send("hold 0.3 0.0 20")
    bus1 = fleet.buses["go2-1"]
    first_moving(bus1)
    # The router stops forwarding (a hung process, a stalled link) but keeps every connection open:
    # orders pile up in its sockets, and the agent hears nothing. The operator's client falls silent
    # with the key still down, so the station keeps refreshing the drive into the backlog.
    router.proc.send_signal(signal.SIGSTOP)
    try:
        one.send("pause")
        seen = moving_until_zero(bus1)
        assert set(seen[:-1]) <= {(0.3, 0.0, 0.0, 0.0, 0.0, 0.0)} and seen[-1] == ZERO
    finally:
        router.proc.send_signal(signal.SIGCONT)
    # The backlog now reaches the agent: the lapsed drive's orders are refused, the station ends the
    # drive and tells its client; nothing old moves the robot.
    error = wait_error(one, "link_lapsed")
    assert "go2-1 stopped: no command reached it within its 0.5 s link timeout" in error["detail"]
    records = bus1.drain() + [r for r in [bus1.read(1.0)] if r is not None]
    twists = [LcmTwist.lcm_decode(bytes.fromhex(r["hex"])) for r in records
              if r["name"].endswith("tele_cmd_vel#geometry_msgs.Twist")]
    assert twists == [], [(t.linear.x, t.angular.z) for t in twists]
    one.send("release")

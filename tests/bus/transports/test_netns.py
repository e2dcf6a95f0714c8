"""Across hosts: the bridge in one network namespace, an independent subscriber in another, joined by a veth pair.

The namespaces and the veth pair are made by the test (as root, ``ip netns``)
and removed after it; their addresses exist only inside them, so no traffic
leaves this machine. LCM crosses with ttl=1 multicast (ttl=0, DimOS's
default, would stay on the sending host); Zenoh over TCP to a listen
endpoint. A namespace with no multicast route stands in for a host where
LCM cannot work, at start and mid-run.

Skipped where namespaces cannot be made, except in CI (CI=true), where that
is a failure.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bus.transports.bus_support import need
from tests.conftest import wait_until
from tests.netns_support import NetnsProc, can_make_namespaces, ip

pytestmark = pytest.mark.netns

PEER = Path(__file__).with_name("netns_peer.py")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Hosts:
    a: str
    b: str
    addr_a: str
    addr_b: str


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    ok, why = can_make_namespaces()
    need(ok, why)
    tag = f"{os.getpid() % 100000}{random.randrange(1000):03d}"
    a, b = f"vbA{tag}", f"vbB{tag}"
    veth_a, veth_b = f"vba{tag}", f"vbb{tag}"  # interface names: at most 15 characters
    # A private /24 that exists only inside the two namespaces.
    net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
    made: list[str] = []
    try:
        for ns in (a, b):
            result = ip("netns", "add", ns, check=False)
            need(result.returncode == 0, f"cannot make a network namespace: {result.stderr.strip()}")
            made.append(ns)
        ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
        ip("link", "set", veth_a, "netns", a)
        ip("link", "set", veth_b, "netns", b)
        for ns, dev, addr in ((a, veth_a, f"{net}.1"), (b, veth_b, f"{net}.2")):
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            # The multicast route LCM needs, over the link to the other host.
            ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        yield Hosts(a, b, f"{net}.1", f"{net}.2")
    finally:
        for ns in made:
            ip("netns", "del", ns, check=False)


@pytest.fixture
def bare_host() -> Iterator[str]:
    """A namespace whose loopback is up but has no multicast route (a loopback-only host)."""
    ok, why = can_make_namespaces()
    need(ok, why)
    ns = f"vbC{os.getpid() % 100000}{random.randrange(1000):03d}"
    result = ip("netns", "add", ns, check=False)
    need(result.returncode == 0, f"cannot make a network namespace: {result.stderr.strip()}")
    try:
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns
    finally:
        ip("netns", "del", ns, check=False)


class Peer(NetnsProc):
    """A netns_peer.py process in a namespace, spoken to by JSON lines."""

    def __init__(self, ns: str, *args: str) -> None:
        super().__init__(ns, [sys.executable, str(PEER), *args], f"netns_peer {args[0]}")

    def close(self, grace: float = 20.0, *, term: bool = False) -> None:
        # It quits on "quit" after stopping its bridge cleanly; a SIGTERM would cut that short.
        super().close(grace, term=term)


def _next_on(sub: Peer, name: str, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        record = sub.read(remaining)
        if record is not None and record.get("name") == name:
            return bytes.fromhex(record["hex"])
    raise AssertionError(f"nothing arrived on {name} within {timeout} s")


def _drive_until_heard(bridge: Peer, sub: Peer, name: str, timeout: float = 20.0) -> None:
    """Send twists until the subscriber on the other host hears one, then stop and drain."""
    deadline = time.monotonic() + timeout
    while True:
        bridge.send("twist 0.1 0.0")
        try:
            _next_on(sub, name, timeout=0.25)
            break
        except AssertionError:
            assert time.monotonic() < deadline, f"{name} never reached the other host"
    bridge.send("stop")
    from viewer_bridge.core.messages import Twist

    # Twists still in flight may come before the zero that ends the drive.
    while not Twist.lcm_decode(_next_on(sub, name)).is_zero():
        pass


def _check_sequence(bridge: Peer, sub: Peer, tele: str, click: str) -> None:
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    bridge.send("twist 0.5 0.8")
    msg = LcmTwist.lcm_decode(_next_on(sub, tele))
    assert (msg.linear.x, msg.linear.y, msg.angular.z) == (0.5, 0.0, 0.8)
    bridge.send("stop")
    msg = LcmTwist.lcm_decode(_next_on(sub, tele))
    assert (msg.linear.x, msg.angular.z) == (0.0, 0.0)
    bridge.send("click 1.5 -2.0 0.25 1700000000250")
    point = LcmPointStamped.lcm_decode(_next_on(sub, click))
    assert (point.point.x, point.point.y, point.point.z) == (1.5, -2.0, 0.25)
    assert (point.header.stamp.sec, point.header.stamp.nsec, point.header.frame_id) == (
        1_700_000_000,
        250_000_000,
        "world",
    )


def test_lcm_multicast_across_hosts(hosts: Hosts) -> None:
    url = f"udpm://239.255.{random.randint(1, 254)}.{random.randint(1, 254)}:7667?ttl=1"
    sub = Peer(hosts.b, "subscribe", "--lcm-url", url)
    bridge = Peer(hosts.a, "bridge", "--transport", "lcm", "--lcm-url", url, "--namespace", "robot1")
    try:
        assert sub.expect() == {"ready": True}
        assert bridge.expect() == {"ready": True}
        tele = "/robot1/tele_cmd_vel#geometry_msgs.Twist"
        _drive_until_heard(bridge, sub, tele)
        _check_sequence(bridge, sub, tele, "/robot1/clicked_point#geometry_msgs.PointStamped")
    finally:
        bridge.close()
        sub.close()


def test_zenoh_across_hosts(hosts: Hosts) -> None:
    endpoint = f"tcp/{hosts.addr_a}:7447"
    bridge = Peer(hosts.a, "bridge", "--transport", "zenoh", "--zenoh-listen", endpoint, "--namespace", "robot1")
    sub = Peer(hosts.b, "subscribe", "--zenoh-connect", endpoint)
    try:
        assert bridge.expect() == {"ready": True}
        assert sub.expect() == {"ready": True}
        tele = "dimos/robot1/tele_cmd_vel/geometry_msgs.Twist"
        _drive_until_heard(bridge, sub, tele)
        _check_sequence(bridge, sub, tele, "dimos/robot1/clicked_point/geometry_msgs.PointStamped")
    finally:
        bridge.close()
        sub.close()


def test_lcm_route_lost_mid_run_is_counted_and_the_bridge_carries_on(hosts: Hosts) -> None:
    url = f"udpm://239.255.{random.randint(1, 254)}.{random.randint(1, 254)}:7667?ttl=1"
    bridge = Peer(hosts.a, "bridge", "--transport", "lcm", "--lcm-url", url)
    try:
        assert bridge.expect() == {"ready": True}

        def sent_and_failed() -> list[int]:
            # Lanes publish after the WebSocket side has handled the frame: poll their counts.
            counts: list[int] = bridge.send("status")["sinks"].get("tele_cmd_vel", [0, 0])
            return counts

        bridge.send("twist 0.5 0.0")
        wait_until(lambda: sent_and_failed() == [1, 0], what="the first twist on the bus")
        ip("-n", hosts.a, "route", "del", "224.0.0.0/4")
        bridge.send("twist 0.6 0.0")
        wait_until(lambda: sent_and_failed() == [1, 1], what="the second twist to fail: no route to the group")
        bridge.send("stop")
        wait_until(lambda: sent_and_failed() == [1, 2], what="the zero to fail too")
        status = bridge.send("status")
        assert status["inprocess"] == 3 and status["running"] is True
        assert status["healthy"] is False and "the last zero twist failed" in status["problems"][0]
    finally:
        bridge.close()


def test_lcm_without_a_multicast_route_fails_at_start_with_the_fix(bare_host: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", bare_host, sys.executable, "-m", "viewer_bridge", "serve", "--port", "0",
         "--transport", "lcm", "--lcm-url", "udpm://239.255.76.67:7667?ttl=0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no multicast route" in result.stderr
    assert "ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo" in result.stderr
    assert "Traceback" not in result.stderr


def test_lcm_that_cannot_join_its_group_fails_at_start(bare_host: str) -> None:
    # A route, but the host refuses multicast memberships: LCM itself cannot come up.
    ip("-n", bare_host, "route", "add", "224.0.0.0/4", "dev", "lo")
    subprocess.run(
        ["ip", "netns", "exec", bare_host, "sysctl", "-qw", "net.ipv4.igmp_max_memberships=0"], check=True, timeout=30
    )
    result = subprocess.run(
        ["ip", "netns", "exec", bare_host, sys.executable, "-m", "viewer_bridge", "serve", "--port", "0",
         "--transport", "lcm", "--lcm-url", "udpm://239.255.76.67:7667?ttl=0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1
    assert "viewer-bridge: LCM could not start with 'udpm://239.255.76.67:7667?ttl=0'" in result.stderr
    assert "ip route add 224.0.0.0/4 dev lo" in result.stderr

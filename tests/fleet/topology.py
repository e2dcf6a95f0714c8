"""A fleet's network in namespaces on this machine: hosts joined by veth pairs, and processes run on them.

The namespaces and links exist only for the test and are removed after it;
their addresses are private and never leave the machine. Built on the same
``ip`` helpers as the transport tests (tests/netns_support.py).
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bus.transports.bus_support import need
from tests.netns_support import NetnsProc, can_make_namespaces, ip

REPO = Path(__file__).resolve().parents[2]
PEER = Path(__file__).with_name("fleet_peer.py")
NETNS_PEER = REPO / "tests" / "bus" / "transports" / "netns_peer.py"


@dataclass
class Link:
    """A veth pair between two hosts: each end's device and address."""

    a: str
    b: str
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str


@dataclass
class Topology:
    """Namespaces (hosts) and the links between them; :meth:`close` removes them all."""

    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{random.randrange(100):02d}")
    hosts: dict[str, str] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    _subnets: set[int] = field(default_factory=set)
    _base: int = field(default_factory=lambda: random.randint(200, 250))

    @staticmethod
    def require() -> None:
        ok, why = can_make_namespaces()
        need(ok, why)

    def host(self, name: str, *, lcm: bool = False) -> str:
        """A namespace named after ``name``; ``lcm`` gives its loopback the multicast route LCM needs."""
        ns = f"vf{name}{self.tag}"
        result = ip("netns", "add", ns, check=False)
        need(result.returncode == 0, f"cannot make a network namespace: {result.stderr.strip()}")
        self.hosts[name] = ns
        ip("-n", ns, "link", "set", "lo", "up")
        if lcm:
            ip("-n", ns, "link", "set", "lo", "multicast", "on")
            ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "lo")
        return ns

    def link(self, a: str, b: str) -> Link:
        """A veth pair between hosts ``a`` and ``b`` on a /24 of its own (``a`` is .1, ``b`` is .2)."""
        n = len(self.links)
        subnet = random.choice([i for i in range(256) if i not in self._subnets])
        self._subnets.add(subnet)
        dev_a, dev_b = f"v{self.tag}{n}a", f"v{self.tag}{n}b"  # at most 15 characters
        ip("link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        ns_a, ns_b = self.hosts[a], self.hosts[b]
        ip("link", "set", dev_a, "netns", ns_a)
        ip("link", "set", dev_b, "netns", ns_b)
        net = f"10.{self._base}.{subnet}"
        for ns, dev, addr in ((ns_a, dev_a, f"{net}.1"), (ns_b, dev_b, f"{net}.2")):
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        link = Link(a, b, dev_a, dev_b, f"{net}.1", f"{net}.2")
        self.links.append(link)
        return link

    def set_link(self, link: Link, up: bool) -> None:
        """Cut (or restore) a link at its ``a`` end, as a pulled cable or a dead radio would."""
        ip("-n", self.hosts[link.a], "link", "set", link.dev_a, "up" if up else "down")

    def close(self) -> None:
        for ns in self.hosts.values():
            ip("netns", "del", ns, check=False)
        self.hosts.clear()


class Proc(NetnsProc):
    """A process in one of the topology's hosts."""

    @classmethod
    def python(cls, ns: str, name: str, *args: str) -> Proc:
        return cls(ns, [sys.executable, *args], name)


class LcmListener(Proc):
    """A plain ``lcm`` subscriber in a robot's namespace (tests/bus/transports/netns_peer.py), not our code."""

    def __init__(self, ns: str, url: str, name: str) -> None:
        super().__init__(ns, [sys.executable, str(NETNS_PEER), "subscribe", "--lcm-url", url], name)
        assert self.expect() == {"ready": True}

    def next_twist(self, timeout: float = 20.0) -> tuple[float, ...]:
        """The next twist on the robot's bus as its six numbers (decoded with dimos_lcm, not our code)."""
        from dimos_lcm.geometry_msgs import Twist as LcmTwist

        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            record = self.read(remaining)
            if record is not None and record["name"].endswith("tele_cmd_vel#geometry_msgs.Twist"):
                msg = LcmTwist.lcm_decode(bytes.fromhex(record["hex"]))
                return (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z)
        raise AssertionError(f"no twist on {self.name} within {timeout} s")

    def next_on(self, suffix: str, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            record = self.read(remaining)
            if record is not None and record["name"].endswith(suffix):
                return bytes.fromhex(record["hex"])
        raise AssertionError(f"nothing on *{suffix} at {self.name} within {timeout} s")

    def quiet(self, within: float) -> None:
        """Nothing at all arrives for ``within`` seconds (a bounded wait for an absence)."""
        record = self.read(within)
        assert record is None, f"unexpected message on {self.name}: {record}"

    def drain(self) -> list[dict[str, Any]]:
        records = []
        while (record := self.read(0.05)) is not None:
            records.append(record)
        return records

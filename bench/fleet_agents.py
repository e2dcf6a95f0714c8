"""Child processes of the fleet benchmark (bench/fleet.py): a Zenoh router, and hosts of robot agents.

``router --listen EP``: a Zenoh session in router mode (what ``zenohd`` is).

``agents --router EP --robot NAME=LCM_URL ...``: one real
:class:`~viewer_bridge.bus.agent.RobotAgent` per robot (each its own Zenoh
client session and its own LCM bus), plus, per robot, a plain ``lcm``
subscriber on that bus that stamps every twist's arrival with
CLOCK_MONOTONIC (one clock for every process on the machine). The twist's
``linear_y`` carries the load's sequence number. On ``report`` (stdin) it
prints ``{"arrivals": {robot: {seq: first_arrival}}, "zeros": {robot: [arrival, ...]}}``
(a zero twist carries no sequence number) and forgets them; on
``quit`` or end of input it stops.

Both print one ``{"ready": true}`` line once set up.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
import time
from typing import Any

if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
    raise RuntimeError("the fleet benchmark needs a system-wide CLOCK_MONOTONIC (Linux)")


def say(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_router(args: argparse.Namespace) -> None:
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", '"router"')
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("listen/endpoints", json.dumps([args.listen]))
    session = zenoh.open(config)
    say(ready=True)
    sys.stdin.read()
    session.close()


class Arrivals:
    """Plain lcm subscribers, one per robot bus, on one thread; first arrival of each sequence number."""

    def __init__(self, buses: dict[str, str]) -> None:
        import lcm
        from dimos_lcm.geometry_msgs import Twist as LcmTwist

        self._decode = LcmTwist.lcm_decode
        self._lock = threading.Lock()
        self.seen: dict[str, dict[int, float]] = {robot: {} for robot in buses}
        self.zeros: dict[str, list[float]] = {robot: [] for robot in buses}
        self._handles: list[Any] = []
        for robot, url in buses.items():
            handle = lcm.LCM(url)
            handle.subscribe("/tele_cmd_vel#geometry_msgs.Twist", self._handler(robot))
            self._handles.append(handle)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bench-lcm-arrivals", daemon=True)
        self._thread.start()

    def _handler(self, robot: str) -> Any:
        seen = self.seen[robot]
        zeros = self.zeros[robot]

        def handle(_channel: str, data: bytes) -> None:
            at = time.monotonic()
            msg = self._decode(data)
            with self._lock:
                if msg.linear.x == 0.0 and msg.linear.y == 0.0 and msg.angular.z == 0.0:
                    zeros.append(at)
                else:
                    seen.setdefault(int(msg.linear.y), at)

        return handle

    def _run(self) -> None:
        fds = {handle.fileno(): handle for handle in self._handles}
        while True:
            readable, _, _ = select.select([*fds, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            for fd in readable:
                fds[fd].handle_timeout(0)

    def take(self) -> tuple[dict[str, dict[int, float]], dict[str, list[float]]]:
        with self._lock:
            taken = {robot: dict(seen) for robot, seen in self.seen.items()}
            zeros = {robot: list(times) for robot, times in self.zeros.items()}
            for seen in self.seen.values():
                seen.clear()
            for times in self.zeros.values():
                times.clear()
        return taken, zeros

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(5)


def run_agents(args: argparse.Namespace) -> None:
    from viewer_bridge.bus.agent import RobotAgent

    buses = dict(item.split("=", 1) for item in args.robot)
    arrivals = Arrivals(buses)
    agents = [
        RobotAgent(
            robot, lcm_url=url, zenoh_mode="client", zenoh_connect=[args.router], zenoh_multicast_scouting=False,
            link_timeout=args.link_timeout,
        )
        for robot, url in buses.items()
    ]
    for agent in agents:
        agent.start()
    say(ready=True)
    for line in sys.stdin:
        if line.strip() == "report":
            seen, zeros = arrivals.take()
            say(arrivals={robot: {str(k): v for k, v in got.items()} for robot, got in seen.items()}, zeros=zeros)
        elif line.strip() == "quit":
            break
    for agent in agents:
        agent.stop()
    arrivals.close()


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    router = sub.add_parser("router")
    router.add_argument("--listen", required=True)
    agents = sub.add_parser("agents")
    agents.add_argument("--router", required=True)
    agents.add_argument("--robot", action="append", required=True, metavar="NAME=LCM_URL")
    agents.add_argument("--link-timeout", type=float, default=0.5)
    args = parser.parse_args()
    if args.role == "router":
        run_router(args)
    else:
        run_agents(args)


if __name__ == "__main__":
    main()

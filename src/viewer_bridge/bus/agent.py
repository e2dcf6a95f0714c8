"""``viewer-bridge agent``: the robot's half of a fleet, and the robot's last line of safety.

It runs on the robot, joins the fleet's Zenoh network (as a peer, or a client
of ``zenohd`` routers), takes the orders every station sends to its robot
(:mod:`viewer_bridge.core.fleet`), and republishes what they command on the
robot's own bus: LCM with DimOS's channel names and encodings, and in-process
streams for a program that embeds :class:`RobotAgent`, remapped and
namespaced like the bridge's own topics. It declares a liveliness token, so
stations know the robot is online, and publishes its state (who drives, the
e-stop) for them.

Threads, and why nothing delays the zero:

* Zenoh's own threads deliver orders, station liveliness and link events;
  each is handed to the :class:`~viewer_bridge.core.fleet.FleetAgent` state
  machine under one lock, and what it decides is queued onto lanes.
* The watchdog thread (:class:`~viewer_bridge.bus.watchdog.Watchdog`) sleeps
  until the command in force lapses (``link_timeout`` after its last
  refresh) and then puts the one zero on the lanes itself; it also publishes
  the periodic state. Nothing but that lock stands between the deadline and
  the zero, and the lock is held only to decide and queue.
* Publishing lanes (:mod:`viewer_bridge.bus.lanes`): per bus transport one
  for commands (latest wins) and one for clicks; one for in-process
  subscribers; one for ``--echo``; one for what goes back over Zenoh (state
  and replies), so a congested uplink never holds up the robot's bus.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from viewer_bridge.bus.fleetlink import DEFAULT_LEASE, open_session
from viewer_bridge.bus.lanes import Lane
from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports.base import Transport, TransportError
from viewer_bridge.bus.transports.zenoh import leave_session
from viewer_bridge.bus.watchdog import Watchdog
from viewer_bridge.core.fleet import (
    ALL_STATIONS,
    AgentDecision,
    AgentLatch,
    FleetAgent,
    FleetWireError,
    Holder,
    Order,
    agent_key,
    check_name,
    command_key,
    decode_order,
    encode_reply,
    encode_state,
    reply_key,
    state_key,
    station_of,
)
from viewer_bridge.core.messages import Message
from viewer_bridge.core.topics import STREAM_TYPES, TopicMap

__all__ = ["AgentSnapshot", "RobotAgent", "register"]

log = logging.getLogger(__name__)

# How often the agent publishes its state when nothing changes (stations learn of it within this).
DEFAULT_STATE_PERIOD: Final = 1.0
# The same complaint (an undecodable order) is logged at most this often.
_LOG_INTERVAL: Final = 5.0
AGENT_TRANSPORTS: Final = ("lcm",)


@dataclass(frozen=True)
class AgentSnapshot:
    """The agent's state and counters at one moment (for tests and logs)."""

    robot: str
    holder: Holder | None
    estop: AgentLatch | None
    linked: bool
    orders: int
    zeros: dict[str, int]
    refused: dict[str, int]
    dropped: dict[str, int]
    bad_orders: int
    published: dict[str, int] = field(default_factory=dict)
    watchdog_zeros: int = 0


class RobotAgent:
    """Takes one robot's orders from the fleet and publishes them on the robot's bus.

    ``RobotAgent("go2-1", zenoh_connect=["tcp/10.0.0.1:7447"]).start()``;
    ``stop()`` publishes a last zero if someone was driving. Its in-process
    streams (``tele_cmd_vel``, ``clicked_point``, ``stop_movement``,
    ``estop``) carry what the robot is told, for a program that embeds it.
    """

    def __init__(
        self,
        robot: str,
        *,
        transports: Sequence[str] = ("lcm",),
        lcm_url: str | None = None,
        namespace: str = "",
        remap: Mapping[str, str] | None = None,
        link_timeout: float = 0.5,
        announce_drive: bool = True,
        zenoh_mode: str = "peer",
        zenoh_connect: Sequence[str] = (),
        zenoh_listen: Sequence[str] = (),
        zenoh_multicast_scouting: bool = True,
        zenoh_lease: float = DEFAULT_LEASE,
        state_period: float = DEFAULT_STATE_PERIOD,
        echo: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        check_name("robot", robot)
        for name in transports:
            if name not in AGENT_TRANSPORTS:
                raise ValueError(f"unknown agent transport {name!r}; choose from: {', '.join(AGENT_TRANSPORTS)}")
        if not state_period > 0:
            raise ValueError(f"state_period must be > 0, got {state_period!r}")
        self.robot = robot
        self.core = FleetAgent(
            robot, link_timeout=link_timeout, announce_drive=announce_drive, epoch=secrets.randbits(64)
        )
        self.topics = TopicMap(remap, namespace)
        self.streams: dict[str, Stream[Any]] = {name: Stream(name, kind) for name, kind in STREAM_TYPES.items()}
        self.tele_cmd_vel = self.streams["tele_cmd_vel"]
        self.clicked_point = self.streams["clicked_point"]
        self.stop_movement = self.streams["stop_movement"]
        self.estop = self.streams["estop"]
        self._transport_names = list(dict.fromkeys(transports))
        self._lcm_url = lcm_url
        self._zenoh_mode = zenoh_mode
        self._zenoh_connect = list(zenoh_connect)
        self._zenoh_listen = list(zenoh_listen)
        self._zenoh_scouting = zenoh_multicast_scouting
        self._zenoh_lease = zenoh_lease
        self.state_period = state_period
        self._echo = echo
        self.clock = clock
        self.wall = wall
        self._lock = threading.Lock()
        self._running = False
        self._open = False  # Zenoh events are handled (from opening the session until stop)
        self._links: set[str] = set()  # the Zenoh ids of the routers and peers linked now
        self._session: Any = None
        self._declared: list[Any] = []
        self._state_publisher: Any = None
        self._state_seq = 0
        self._next_state = 0.0
        self._transports: list[Transport] = []
        self._lanes: dict[str, list[Lane]] = {}
        self._all_lanes: list[Lane] = []
        self._uplink: Lane | None = None
        self._watchdog: Watchdog | None = None
        self.bad_orders = 0
        self.published: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def link_timeout(self) -> float:
        return self.core.link_timeout

    def start(self) -> None:
        """Start the robot's bus, join the fleet, declare the robot online.

        Raises :class:`TransportError` (with a fix-it hint) if the bus or Zenoh cannot be reached.
        """
        if self._running:
            return
        try:
            self._start()
        except BaseException:
            self._teardown()
            raise
        self._running = True

    def _start(self) -> None:
        from viewer_bridge.bus.transports.lcm import LcmTransport

        for _ in self._transport_names:  # "lcm" is the only one so far
            transport = LcmTransport(url=self._lcm_url)
            transport.start()
            self._transports.append(transport)
        self._build_lanes()
        for lane in self._all_lanes:
            lane.start()
        session = self._session = open_session(
            mode=self._zenoh_mode,
            connect=self._zenoh_connect,
            listen=self._zenoh_listen,
            multicast_scouting=self._zenoh_scouting,
            lease=self._zenoh_lease,
            who=f"agent of {self.robot}",
        )
        self._open = True
        import zenoh

        self._state_publisher = session.declare_publisher(
            state_key(self.robot),
            congestion_control=zenoh.CongestionControl.BLOCK,
            reliability=zenoh.Reliability.RELIABLE,
            priority=zenoh.Priority.INTERACTIVE_HIGH,
        )
        self._declared.append(self._state_publisher)
        self._declared.append(session.declare_subscriber(command_key(self.robot), self._guard(self._on_order)))
        self._declared.append(
            session.liveliness().declare_subscriber(ALL_STATIONS, self._guard(self._on_station), history=True)
        )
        with self._lock:
            # Unlinked until Zenoh reports a link (those open already come at once, on Zenoh's thread).
            self.core.link_lost(self.clock())
        # Links are counted from Zenoh's transport events (the session's own tables may lag behind them).
        self._declared.append(session.info.declare_transport_events_listener(self._guard(self._on_link), history=True))
        self._watchdog = Watchdog(self._due, self._expire, self.clock, grace=0.0)
        self._watchdog.start()
        # Declared last: a station that sees the robot online finds it listening.
        self._declared.append(session.liveliness().declare_token(agent_key(self.robot)))
        self._running = True
        with self._lock:
            self._publish_state()
        log.info(
            "agent for %s: orders on %s, link timeout %.3g s, %s",
            self.robot,
            command_key(self.robot),
            self.core.link_timeout,
            "linked" if self.core.linked else "no router or peer yet (retrying)",
        )

    def stop(self) -> None:
        """Stop whoever drives (one zero), leave the fleet, let the lanes deliver, release the bus. Idempotent."""
        with self._lock:
            if self._running:
                self._apply(self.core.shutdown(self.clock()))
            self._running = self._open = False
        self._teardown()

    def _teardown(self) -> None:
        self._running = self._open = False
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        uplink = self._uplink
        if uplink is not None:
            uplink.stop()
        declared, self._declared = self._declared, []
        session, self._session = self._session, None
        if session is not None:
            leave_session(session, declared, "the agent's")
        for lane in self._all_lanes:
            lane.stop()
        transports, self._transports = self._transports, []
        for transport in transports:
            try:
                transport.close()
            except Exception:
                log.exception("closing the %s transport failed", transport.name)

    def __enter__(self) -> RobotAgent:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _build_lanes(self) -> None:
        lanes: dict[str, list[Lane]] = {stream: [] for stream in STREAM_TYPES}
        clock = self.clock
        topics = self.topics
        for transport in self._transports:

            def deliver(stream: str, message: Message, transport: Transport = transport) -> None:
                transport.publish(topics[stream], message)

            commands = Lane(f"agent-{transport.name}-commands", deliver, kind=transport.name, conflate=True,
                            clock=clock)
            clicks = Lane(f"agent-{transport.name}-clicks", deliver, kind=transport.name, clock=clock)
            for stream in lanes:
                lanes[stream].append(clicks if stream == "clicked_point" else commands)
        streams = self.streams
        subscribers = Lane("agent-subscribers", lambda stream, message: streams[stream].publish(message),
                           kind="inprocess", clock=clock)
        for stream_lanes in lanes.values():
            stream_lanes.append(subscribers)
        if self._echo is not None:
            from viewer_bridge.bus.echo import echo_writer

            echo = Lane("agent-echo", echo_writer(self._echo), kind="echo", max_pending=1000, clock=clock)
            for stream_lanes in lanes.values():
                stream_lanes.append(echo)
        self._lanes = lanes
        # Its "messages" are encoded state and replies, keyed by their Zenoh key.
        self._uplink = Lane("agent-uplink", self._send, kind="zenoh", max_pending=1000, clock=clock)  # type: ignore[arg-type]
        seen: dict[int, Lane] = {}
        for stream_lanes in lanes.values():
            for lane in stream_lanes:
                seen.setdefault(id(lane), lane)
        self._all_lanes = [*seen.values(), self._uplink]

    # -- state for tests and logs ---------------------------------------------------------------------

    def snapshot(self) -> AgentSnapshot:
        with self._lock:
            core = self.core
            return AgentSnapshot(
                self.robot,
                core.holder,
                core.estop,
                core.linked,
                core.orders,
                dict(core.zeros),
                dict(core.refused),
                dict(core.dropped),
                self.bad_orders,
                dict(self.published),
                self._watchdog.fired if self._watchdog is not None else 0,
            )

    def wait_delivered(self, timeout: float = 5.0) -> bool:
        """Wait until everything published so far reached the in-process subscribers and the buses."""
        deadline = time.monotonic() + timeout
        barriers = [lane.barrier() for lane in self._all_lanes if lane is not self._uplink]
        return all(event.wait(max(0.0, deadline - time.monotonic())) for event in barriers)

    # -- Zenoh callbacks (Zenoh's threads) ----------------------------------------------------------

    def _guard(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def guarded(item: Any) -> None:
            # An exception on a Zenoh thread would only be printed by the binding.
            try:
                handler(item)
            except Exception:
                log.exception("agent for %s: handling a Zenoh event failed", self.robot)

        return guarded

    def _on_order(self, sample: Any) -> None:
        try:
            order = decode_order(sample.payload.to_bytes())
        except FleetWireError as exc:
            self.bad_orders += 1
            self._log_limited("bad", "agent for %s: dropped an order that does not decode: %s", self.robot, exc)
            return
        with self._lock:
            if not self._open:
                return
            self._apply(self.core.receive(order, self.clock(), self.wall()), order)

    def _on_station(self, sample: Any) -> None:
        import zenoh

        parsed = station_of(str(sample.key_expr))
        if parsed is None:
            return
        station, epoch = parsed
        with self._lock:
            if not self._open:
                return
            if sample.kind == zenoh.SampleKind.DELETE:
                decision = self.core.station_gone(station, epoch, self.clock())
                if decision.ended is not None:
                    log.warning("station %s left while driving %s: zero published", station, self.robot)
                self._apply(decision)
            else:
                self.core.station_back(station, epoch)

    def _on_link(self, event: Any) -> None:
        import zenoh

        zid = str(event.transport.zid)
        with self._lock:
            if event.kind == zenoh.SampleKind.DELETE:
                self._links.discard(zid)
            else:
                self._links.add(zid)
            linked = bool(self._links)
            if not self._open:
                return
            now = self.clock()
            if not linked and self.core.linked:
                decision = self.core.link_lost(now)
                log.warning(
                    "agent for %s lost its last router/peer%s", self.robot,
                    ": zero published" if decision.ended is not None else "",
                )
                self._apply(decision)
            elif linked and not self.core.linked:
                log.info("agent for %s is linked again", self.robot)
                self._apply(self.core.link_back(now))

    # -- the watchdog's calls (its thread) ----------------------------------------------------------

    def _due(self) -> float | None:
        with self._lock:
            deadline = self.core.next_deadline()
            return self._next_state if deadline is None else min(deadline, self._next_state)

    def _expire(self, now: float) -> int:
        with self._lock:
            decision = self.core.tick(now)
            if decision.ended is not None:
                previous = decision.previous
                log.warning(
                    "no refresh from %s within %.3g s: zero published on %s",
                    previous.who if previous is not None else "?", self.core.link_timeout, self.robot,
                )
            self._apply(decision)
            if now >= self._next_state:
                self._publish_state()
            return 1 if decision.ended is not None else 0

    # -- what a decision leads to (under the lock) ------------------------------------------------------

    def _apply(self, decision: AgentDecision, order: Order | None = None) -> None:
        lanes = self._lanes
        published = self.published
        for stream, message in decision.publish:
            for lane in lanes.get(stream, ()):
                lane.put(stream, message)
            published[stream] = published.get(stream, 0) + 1
        if decision.reply is not None and order is not None and self._uplink is not None:
            self._uplink.put(reply_key(self.robot, order.station), encode_reply(decision.reply))  # type: ignore[arg-type]
        if decision.started is not None:
            log.info("%s drives %s", decision.started.who, self.robot)
            if self._watchdog is not None:
                self._watchdog.poke()
        if decision.ended is not None and decision.ended in ("release", "stop"):
            log.info("%s stopped (%s)", self.robot, decision.ended.value)
        if decision.changed:
            self._publish_state()

    def _publish_state(self) -> None:
        uplink = self._uplink
        if uplink is None:
            return
        self._state_seq += 1
        self._next_state = self.clock() + self.state_period
        uplink.put(state_key(self.robot), encode_state(self.core.state(self._state_seq)))  # type: ignore[arg-type]

    def _send(self, key: str, payload: bytes) -> None:
        # The uplink lane's delivery: state and replies back to the stations.
        session = self._session
        if session is None:
            return
        if key == state_key(self.robot) and self._state_publisher is not None:
            self._state_publisher.put(payload)
        else:
            session.put(key, payload)

    def _log_limited(self, what: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._logged.get(what, -_LOG_INTERVAL) >= _LOG_INTERVAL:
            self._logged[what] = now
            log.warning(message, *args)


# -- the command line ----------------------------------------------------------------------------------


def register(subparsers: Any, setup_logging: Callable[[str, str], None]) -> None:
    """Add the ``agent`` subcommand; ``setup_logging(level, format)`` is the command line's."""
    parser = subparsers.add_parser(
        "agent",
        help="run on a robot: take its orders from operator stations over Zenoh (the robot-side deadman)",
        description=(
            "The robot's half of a fleet: joins Zenoh, takes the orders stations send to this robot, "
            "publishes them on the robot's own bus (DimOS's LCM channels), and publishes one zero when the "
            "command in force is not refreshed within --link-timeout, when the driving station disappears, "
            "or when the link to the router is lost. See docs/fleet.md."
        ),
    )
    parser.add_argument("--robot", required=True, help="this robot's name in the fleet (the station's robots table)")
    parser.add_argument(
        "--transport", dest="transports", action="append", choices=AGENT_TRANSPORTS,
        help="the robot's bus to publish on (default lcm)",
    )
    parser.add_argument("--lcm-url", help="LCM URL (default $LCM_DEFAULT_URL, else udpm://239.255.76.67:7667?ttl=0)")
    parser.add_argument("--namespace", default="", help="prefix for every topic on the robot's bus")
    parser.add_argument("--remap", action="append", metavar="STREAM=TOPIC", help="rename a stream (repeatable)")
    parser.add_argument(
        "--link-timeout", type=float, default=0.5,
        help="seconds the command in force lasts without a refresh from the station (default 0.5)",
    )
    parser.add_argument(
        "--stop-movement", choices=("publish", "off"), default="publish",
        help="publish stop_movement when someone starts driving (default publish)",
    )
    parser.add_argument("--zenoh-mode", choices=("peer", "client"), default="peer",
                        help="peer (default) or client of a zenohd router")
    parser.add_argument("--zenoh-connect", action="append", default=[], help="Zenoh endpoint, e.g. tcp/ROUTER:7447")
    parser.add_argument("--zenoh-listen", action="append", default=[], help="Zenoh endpoint to listen on")
    parser.add_argument("--zenoh-multicast-scouting", action=argparse.BooleanOptionalAction, default=True,
                        help="find Zenoh peers by UDP multicast (default on)")
    parser.add_argument(
        "--zenoh-lease", type=float, default=DEFAULT_LEASE,
        help=f"seconds the router waits for this robot before dropping its link (default {DEFAULT_LEASE:g})",
    )
    parser.add_argument("--echo", choices=("text", "json"), help="print every message published on the robot's bus")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.set_defaults(func=cmd_agent, setup_logging=setup_logging)


def cmd_agent(args: argparse.Namespace) -> int:
    from viewer_bridge.config import ConfigError, parse_remaps

    args.setup_logging(args.log_level, args.log_format)
    try:
        agent = RobotAgent(
            args.robot,
            transports=args.transports or ["lcm"],
            lcm_url=args.lcm_url,
            namespace=args.namespace,
            remap=parse_remaps(args.remap or []),
            link_timeout=args.link_timeout,
            announce_drive=args.stop_movement == "publish",
            zenoh_mode=args.zenoh_mode,
            zenoh_connect=args.zenoh_connect,
            zenoh_listen=args.zenoh_listen,
            zenoh_multicast_scouting=args.zenoh_multicast_scouting,
            zenoh_lease=args.zenoh_lease,
            echo=args.echo,
        )
    except (ValueError, ConfigError) as exc:
        print(f"viewer-bridge agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            agent.start()
        except TransportError as exc:
            print(f"viewer-bridge agent: {exc}", file=sys.stderr)
            return 1
        print(f"viewer-bridge agent for robot {agent.robot}: link timeout {agent.link_timeout:g} s", file=sys.stderr)
        for topic in agent.topics:
            where = [f"lcm {topic.lcm_channel}"] if "lcm" in (args.transports or ["lcm"]) else ["in-process only"]
            print(f"  {topic.stream} ({topic.type_name}) -> {', '.join(where)}", file=sys.stderr)
        sys.stderr.flush()
        while not stop.wait(0.5):
            pass
        log.info("shutting down")
    finally:
        agent.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0

"""The station's side of a fleet: one safety state per robot, and the orders that go to each robot's agent.

With a ``robots`` table the bridge is an operator station for several robots
(docs/fleet.md). Each :class:`RobotLine` owns what one robot needs at the
station: its own :class:`~viewer_bridge.core.safety.SafetyController`
(lease, deadman, limits, e-stop), its streams and topics, and the view of its
agent (online or not, who drives it from any station, its e-stop). Two
operators may drive two robots at once; never one robot together.

A client chooses its robot with ``?robot=NAME`` in its URL, or by clicking
under a robot's ``entity_prefix``. What each robot's controller decides is
published where the station publishes (in-process streams, the station's
own buses under the robot's namespace) and, for a robot with an agent, sent
to it over Zenoh as orders (:mod:`viewer_bridge.core.fleet`) through one
uplink lane, so Zenoh never runs on the event loop.

Safety is the agent's: the station re-sends the command in force every
``1/fleet_refresh_hz`` seconds while someone drives, and the agent stops the
robot by itself when those refreshes stop coming (the station died, the
network broke). The station's part is to stop sending: when a robot goes
offline (its agent's liveliness token is gone) its drive ends here and
commands to it are refused (``robot_offline``); when the agent refuses an
order (another station drives, someone stopped it, its link lapsed, its
e-stop is latched) the drive ends here too and the client is told why.

Everything here runs on the server's event loop; Zenoh's callbacks hop onto
it with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from viewer_bridge.bus.fleetlink import open_session
from viewer_bridge.bus.lanes import Lane
from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports.zenoh import leave_session
from viewer_bridge.config import BridgeConfig, RobotSettings
from viewer_bridge.core.connection import Refusal
from viewer_bridge.core.fleet import (
    ALL_AGENTS,
    ALL_STATES,
    AgentState,
    FleetWireError,
    Kind,
    Order,
    Reply,
    command_key,
    decode_reply,
    decode_state,
    encode_order,
    estop_mirror,
    replies_for,
    robot_of,
    station_key,
)
from viewer_bridge.core.goals import goal_out_of_range
from viewer_bridge.core.messages import PointStamped, Twist
from viewer_bridge.core.protocol import Click, Estop, EstopClear, Reason, Stop, TwistCommand
from viewer_bridge.core.safety import AXES, ESTOP, TELE_CMD_VEL, Decision, Latch, Limits, Refused, SafetyController
from viewer_bridge.core.topics import STREAM_TYPES, Topic, TopicMap

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.server.pump import AsyncRerunWebSocketServer, _Session

__all__ = ["FLEET_EVENTS", "Fleet", "RobotLine", "RobotSnapshot"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The client messages the fleet routes to a robot (the rest the server handles as always).
FLEET_EVENTS: Final = (TwistCommand, Stop, Click, Estop, EstopClear)
# Who the station's own decisions (a mirrored e-stop, a refusal from the agent) are attributed to.
_FLEET: Final = "fleet"


def default_station_name() -> str:
    """This host's name, made a valid station name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63].lstrip("-.") or "station"
    return name


@dataclass(frozen=True)
class RobotSnapshot:
    """One robot as the station sees it: for ``snapshot()``, ``/status`` and tests."""

    online: bool
    driver: str | None
    """The client at this station that drives it (a session id), if any."""
    drive: int
    command: Twist | None
    estop: Latch | None
    holder: str | None
    """Who holds the robot's lease according to its agent ("CLIENT at STATION"), if anyone."""
    zeros: dict[str, int]
    orders: dict[str, int]
    refused: dict[str, int]


class RobotLine:
    """One robot at the station: its safety state, its streams and topics, and its agent as last heard."""

    def __init__(self, name: str, settings: RobotSettings, config: BridgeConfig) -> None:
        self.name = name
        self.settings = settings
        self.agent = settings.agent
        prefix = settings.entity_prefix
        self.entity_prefix = prefix.rstrip("/") if prefix else None
        station_limits = Limits.from_config(config)
        scale = tuple(
            station if mine is None else float(mine)
            for station, mine in zip(station_limits.scale, (getattr(settings, f"scale_{a}") for a in AXES), strict=True)
        )
        clamp = tuple(
            station if mine is None else float(mine)
            for station, mine in zip(station_limits.clamp, (getattr(settings, f"max_{a}") for a in AXES), strict=True)
        )
        # With an agent the command in force is re-sent at the refresh rate, so the agent's link timeout
        # only fires when the station or the network is gone.
        republish = max(config.republish_hz, config.fleet_refresh_hz) if self.agent else config.republish_hz
        self.safety = SafetyController(
            deadman_timeout=config.deadman_timeout,
            republish_hz=republish,
            limits=Limits(scale, clamp),  # type: ignore[arg-type]
            announce_drive=config.stop_movement == "publish",
        )
        self.topics = TopicMap(config.remap, settings.namespace)
        self.streams: dict[str, Stream[Any]] = {stream: Stream(stream, kind) for stream, kind in STREAM_TYPES.items()}
        self.tele_cmd_vel = self.streams["tele_cmd_vel"]
        self.clicked_point = self.streams["clicked_point"]
        self.stop_movement = self.streams["stop_movement"]
        self.estop = self.streams["estop"]
        self.online = not self.agent
        self.state: AgentState | None = None
        self.drive = 0  # this station's number of the robot's current (or last) drive
        self.driver_name: str | None = None
        self.last_estop_seq = 0  # the sequence number of the last e-stop order sent to the agent
        self.timer: asyncio.TimerHandle | None = None
        self.orders: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()

    def key(self, stream: str) -> str:
        """The outlet's name for one of this robot's streams."""
        return f"{self.name}/{stream}"

    def owns(self, entity_path: str) -> bool:
        prefix = self.entity_prefix
        return prefix is not None and (entity_path == prefix or entity_path.startswith(prefix + "/"))

    @property
    def holder(self) -> str | None:
        state = self.state
        return None if state is None or state.holder is None else state.holder.who

    def snapshot(self) -> RobotSnapshot:
        safety = self.safety
        return RobotSnapshot(
            self.online,
            safety.driver,  # type: ignore[arg-type]
            self.drive,
            safety.command,
            safety.estop,
            self.holder,
            dict(safety.zeros),
            dict(self.orders),
            dict(self.refused),
        )


class Fleet:
    """The robots of one station, and its Zenoh session to their agents."""

    def __init__(self, server: AsyncRerunWebSocketServer) -> None:
        self.server = server
        config = server.config
        self.config = config
        self.station = config.station or default_station_name()
        self.epoch = secrets.randbits(64)
        self.robots: dict[str, RobotLine] = {name: RobotLine(name, s, config) for name, s in config.robots.items()}
        self.names = sorted(self.robots)
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Any = None
        self._declared: list[Any] = []
        self._publishers: dict[str, tuple[Any, Any]] = {}
        self.uplink: Lane | None = None
        self.bad_messages = 0
        self.running = False

    # -- what the server builds around the robots ---------------------------------------------------

    def streams(self) -> dict[str, Stream[Any]]:
        return {robot.key(stream): s for robot in self.robots.values() for stream, s in robot.streams.items()}

    def topics(self) -> dict[str, Topic]:
        return {robot.key(topic.stream): topic for robot in self.robots.values() for topic in robot.topics}

    def command_streams(self) -> set[str]:
        return {robot.key(TELE_CMD_VEL) for robot in self.robots.values()}

    def lanes(self) -> list[Lane]:
        return [self.uplink] if self.uplink is not None else []

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Join the fleet's Zenoh network (if any robot has an agent); raises TransportError if it cannot."""
        self._loop = loop
        self.running = True
        if not any(robot.agent for robot in self.robots.values()):
            return
        config = self.config
        self.uplink = Lane("fleet-uplink", self._send, kind="fleet", clock=self.server.clock)  # type: ignore[arg-type]
        self.uplink.start()
        self._session = await asyncio.to_thread(
            open_session,
            mode=config.zenoh_mode,
            connect=config.zenoh_connect,
            listen=config.zenoh_listen,
            multicast_scouting=config.zenoh_multicast_scouting,
            who=f"station {self.station}",
        )
        await asyncio.to_thread(self._declare)
        log.info(
            "station %s: %d robot(s) over Zenoh (%s, connect=%s); waiting for their agents",
            self.station, len(self.robots), config.zenoh_mode, config.zenoh_connect or "-",
        )

    def _declare(self) -> None:
        import zenoh

        session = self._session
        for robot in self.robots.values():
            if not robot.agent:
                continue
            key = command_key(robot.name)
            twist = session.declare_publisher(
                key, congestion_control=zenoh.CongestionControl.DROP, reliability=zenoh.Reliability.BEST_EFFORT,
                express=True, priority=zenoh.Priority.INTERACTIVE_HIGH,
            )  # fmt: skip
            control = session.declare_publisher(
                key, congestion_control=zenoh.CongestionControl.BLOCK, reliability=zenoh.Reliability.RELIABLE,
                express=True, priority=zenoh.Priority.REAL_TIME,
            )  # fmt: skip
            self._publishers[robot.name] = (twist, control)
            self._declared.extend((twist, control))
        self._declared.append(session.declare_subscriber(ALL_STATES, self._hop(self._state_arrived)))
        self._declared.append(session.declare_subscriber(replies_for(self.station), self._hop(self._reply_arrived)))
        self._declared.append(
            session.liveliness().declare_subscriber(ALL_AGENTS, self._hop(self._agent_seen), history=True)
        )
        self._declared.append(session.liveliness().declare_token(station_key(self.station, self.epoch)))

    def shutdown(self, now: float) -> None:
        """The station is going away: end every drive here (the agents hear a release, or the token go)."""
        for robot in self.robots.values():
            self.apply(robot, robot.safety.shutdown(now), now, "release")
            if robot.timer is not None:
                robot.timer.cancel()
                robot.timer = None
        self.running = False

    async def close(self) -> None:
        uplink, self.uplink = self.uplink, None
        if uplink is not None:
            # The releases queued by shutdown() go out before the session closes.
            await asyncio.to_thread(uplink.stop)
        declared, self._declared = self._declared, []
        session, self._session = self._session, None
        self._publishers.clear()
        if session is None:
            return

        await asyncio.to_thread(leave_session, session, declared, "the station's")

    # -- choosing a robot ---------------------------------------------------------------------------

    def unknown(self, name: str | None) -> str:
        robots = ", ".join(self.names)
        if name is None:
            return (f"no robot chosen: connect with ?robot=NAME (robots here: {robots}) or click under a robot's "
                    "entity prefix")
        return f"no robot named {name[:80]!r} here; robots: {robots}"

    def robot_for(self, session: _Session) -> RobotLine | None:
        return self.robots.get(session.robot) if session.robot is not None else None

    def safety_of(self, session: Any) -> SafetyController | None:
        robot = self.robots.get(getattr(session, "robot", None) or "")
        return robot.safety if robot is not None else None

    # -- what clients send (on the loop) ---------------------------------------------------------------

    def act(self, session: _Session, result: object, now: float) -> None:
        server = self.server
        stats = server.stats
        kind = type(result)
        if kind is TwistCommand:
            stats.frames["twist"] += 1
            session.last_twist_at = now
            self._twist(session, result, now)  # type: ignore[arg-type]
        elif kind is Stop:
            stats.frames["stop"] += 1
            robot = self.robot_for(session)
            if robot is None:
                server._refused(session, Refusal(
                    Reason.UNKNOWN_ROBOT, self.unknown(None) + "; a stop goes to your robot (POST /estop stops all)"
                ))
                return
            self.apply(robot, robot.safety.stop(session.id, now), now, "stop", server._name_of(session.id))
        elif kind is Click:
            stats.frames["click"] += 1
            self._click(session, result, now)  # type: ignore[arg-type]
        elif kind is Estop:
            stats.frames["estop"] += 1
            robot = self.robot_for(session)
            targets = [robot] if robot is not None else list(self.robots.values())
            for target in targets:
                self.latch(target, session.id, result.reason, now)  # type: ignore[attr-defined]
        else:
            stats.frames["estop_clear"] += 1
            robot = self.robot_for(session)
            for target in [robot] if robot is not None else list(self.robots.values()):
                self.clear(target, session.id, now)
        stats.latency.observe(server.clock() - now)

    def _twist(self, session: _Session, command: TwistCommand, now: float) -> None:
        server = self.server
        robot = self.robot_for(session)
        if robot is None:
            server._refused(session, Refusal(Reason.UNKNOWN_ROBOT, self.unknown(session.robot),
                                             tell=session.conn.tell_once(Reason.UNKNOWN_ROBOT, now)))
            return
        moving = bool(
            command.linear_x or command.linear_y or command.linear_z
            or command.angular_x or command.angular_y or command.angular_z
        )  # fmt: skip
        if moving:
            if robot.agent and not robot.online:
                server._refused(session, self._offline(robot, session, now))
                return
            state = robot.state
            holder = state.holder if state is not None else None
            if holder is not None and holder.epoch != self.epoch and robot.safety.estop is None:
                server._refused(session, Refusal(
                    Reason.NOT_DRIVER,
                    f"{holder.who} is driving {robot.name} (from another station); wait for it to stop",
                    tell=session.conn.tell_once(Reason.NOT_DRIVER, now),
                ))
                return
        factor = 1.0
        if moving and server.link_limits.enabled:
            checked = server._link_check(session, command, now)
            if checked is None:
                return
            factor = checked
        decision = robot.safety.twist(session.id, command.to_twist(), now, factor)
        if decision.refused is not None:
            server._refused(session, self._refusal(robot, decision))
            return
        self.apply(robot, decision, now, "twist")

    def _click(self, session: _Session, click: Click, now: float) -> None:
        server = self.server
        config = self.config
        robot = None
        path = click.entity_path
        for candidate in self.robots.values():
            if path and candidate.owns(path):
                robot = candidate
                break
        if robot is not None and session.robot is None:
            # Chosen by clicking: this client's twists go to that robot from now on.
            session.robot = robot.name
            log.info("client %s chose robot %s by clicking %s", session.label, robot.name, path[:120])
        robot = robot or self.robot_for(session)
        if robot is None:
            server._refused(session, Refusal(Reason.UNKNOWN_ROBOT, self.unknown(session.robot)))
            return
        if robot.agent and not robot.online:
            server._refused(session, self._offline(robot, session, now, "a goal is not sent"))
            return
        if robot.safety.click_refused() is not None:
            server._refused(session, self._estopped(robot, "a goal is not sent"))
            return
        frame_id = path if config.click_frame == "entity_path" and path else config.frame_id
        assert click.z is not None
        if config.max_goal_distance is not None or config.max_goal_height is not None:
            refused = goal_out_of_range(click.x, click.y, click.z, frame_id, config.max_goal_distance,
                                        config.max_goal_height)
            if refused is not None:
                server._refused(session, Refusal(Reason.GOAL_OUT_OF_RANGE, refused[1], refused[0]))
                return
        ts = click.timestamp_ms / 1000.0 if click.timestamp_ms else server.wall_clock()
        point = PointStamped(click.x, click.y, click.z, ts, frame_id)
        server._publish(robot.key("clicked_point"), point)
        if robot.agent:
            self._order(robot, Kind.CLICK, server._name_of(session.id), point=point)

    def latch(self, robot: RobotLine, client: str, reason: str | None, now: float) -> None:
        server = self.server
        name = server._name_of(client)
        decision = robot.safety.latch(client, name, server.wall_clock(), now, reason)
        if decision.publish:
            log.warning("e-stop LATCHED on %s by %s%s", robot.name, name, f": {reason}" if reason else "")
        self.apply(robot, decision, now, "latch", name, reason)

    def stop(self, robot: RobotLine, client: str, now: float) -> str | None:
        """A ``stop`` for ``robot`` from outside any session (``POST /stop``); returns who was driving it."""
        server = self.server
        driver = robot.safety.driver
        self.apply(robot, robot.safety.stop(client, now), now, "stop", server._name_of(client))
        return None if driver is None else server._name_of(driver)

    def clear(self, robot: RobotLine, client: str, now: float) -> None:
        name = self.server._name_of(client)
        decision = robot.safety.clear(client, now)
        if decision.publish:
            log.warning("e-stop on %s cleared by %s", robot.name, name)
        self.apply(robot, decision, now, "clear", name)

    def closed(self, session: _Session, now: float) -> None:
        """A client's connection ended: whatever it drove stops."""
        for robot in self.robots.values():
            decision = robot.safety.disconnect(session.id, now)
            if decision.publish or decision.ended:
                self.apply(robot, decision, now, "release")

    # -- what a robot's controller decided ---------------------------------------------------------------

    def apply(
        self, robot: RobotLine, decision: Decision, now: float, source: str, actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Publish a robot's decision at the station, and send the orders it means to the robot's agent.

        ``source`` is what led to it: ``twist``, ``tick`` (the deadman or a
        refresh), ``stop``, ``release`` (disconnect, shutdown, a halt here),
        ``latch``/``clear`` (an e-stop from a client here), ``mirror`` (the
        agent's e-stop reflected here) or ``agent`` (the agent refused the
        drive: it already knows). ``actor`` names who stopped or latched.
        """
        server = self.server
        refresh_locally = bool(self.config.republish_hz)
        started = decision.started
        for stream, message in decision.publish:
            is_tele = stream == TELE_CMD_VEL
            moving = is_tele and not message.is_zero()  # type: ignore[union-attr]
            if not (source == "tick" and moving and not refresh_locally):
                server._publish(robot.key(stream), message, decision.expires)
            if not robot.agent:
                continue
            if moving:
                if started is not None:
                    robot.drive += 1
                    robot.driver_name = server._name_of(started)
                    started = None
                self._order(robot, Kind.TWIST, robot.driver_name, robot.drive, twist=message)  # type: ignore[arg-type]
            elif is_tele:
                if source == "stop":
                    self._order(robot, Kind.STOP, actor)
                elif source in ("twist", "tick", "release"):
                    self._order(robot, Kind.RELEASE, robot.driver_name, robot.drive)
                # latch: the agent's e-stop stops the robot itself; mirror/agent: it already has.
            elif stream == ESTOP and source in ("latch", "clear"):
                kind = Kind.ESTOP if message else Kind.ESTOP_CLEAR
                robot.last_estop_seq = self._order(robot, kind, actor, reason=reason if kind is Kind.ESTOP else None)
        if decision.ended is not None:
            who = server._label(decision.previous)
            if decision.ended in ("deadman", "disconnect", "shutdown"):
                log.warning("%s: published a zero twist: %s (driver was %s)", robot.name, decision.ended.value, who)
            else:
                log.info("%s: client %s stopped driving (%s)", robot.name, who, decision.ended.value)
        if decision.started is not None:
            log.info("client %s is now driving %s", server._label(decision.started), robot.name)
        if robot.timer is None:
            self._arm(robot)
        server.status.changed()

    def _order(
        self, robot: RobotLine, kind: Kind, client: str | None, drive: int = 0, *, twist: Twist | None = None,
        point: PointStamped | None = None, reason: str | None = None,
    ) -> int:
        uplink = self.uplink
        if uplink is None or not robot.agent:
            return 0
        self._seq += 1
        order = Order(kind, self.station, self.epoch, self._seq, client or self.station, drive, twist, point, reason)
        robot.orders[kind.name.lower()] += 1
        uplink.put(robot.name, order, wake=True)  # type: ignore[arg-type]
        return self._seq

    def _send(self, robot: str, order: Order) -> None:
        # The uplink lane's delivery (its own thread): encode and put on Zenoh.
        publishers = self._publishers.get(robot)
        if publishers is None:
            return
        publisher = publishers[0] if order.kind is Kind.TWIST else publishers[1]
        publisher.put(encode_order(order))

    # -- the per-robot timer -----------------------------------------------------------------------------

    def _arm(self, robot: RobotLine) -> None:
        deadline = robot.safety.next_deadline()
        loop = self._loop
        if deadline is None or loop is None or not self.running:
            return
        robot.timer = loop.call_at(deadline, self._on_timer, robot)

    def _on_timer(self, robot: RobotLine) -> None:
        robot.timer = None
        now = self.server.clock()
        self.apply(robot, robot.safety.tick(now), now, "tick")

    # -- what the agents say (hopped onto the loop) ---------------------------------------------------

    def _hop(self, handler: Any) -> Any:
        loop = self._loop
        assert loop is not None

        def on_zenoh_thread(sample: Any) -> None:
            try:
                loop.call_soon_threadsafe(handler, sample)
            except RuntimeError:  # the loop closed while Zenoh was still delivering
                pass

        return on_zenoh_thread

    def _agent_seen(self, sample: Any) -> None:
        import zenoh

        robot = self.robots.get(robot_of(str(sample.key_expr)) or "")
        if robot is None or not robot.agent or not self.running:
            return
        online = sample.kind != zenoh.SampleKind.DELETE
        if online == robot.online:
            return
        robot.online = online
        now = self.server.clock()
        if online:
            log.info("robot %s is online (its agent's token is seen)", robot.name)
        else:
            log.warning("robot %s went OFFLINE (its agent's token is gone); commands to it are refused", robot.name)
            robot.state = None
            driver = robot.safety.driver
            if driver is not None:
                session = self.server._sessions.get(driver)  # type: ignore[call-overload]
                self.apply(robot, robot.safety.disconnect(driver, now), now, "release")
                if session is not None:
                    self.server._refused(session, self._offline(robot, session, now, "your drive ended", True))
        self.server.status.changed()

    def _decoded(self, sample: Any, decode: Callable[[bytes], _T], what: str) -> _T | None:
        """A Zenoh sample decoded with ``decode``; None (counted, and said at DEBUG) when it does not decode."""
        try:
            return decode(sample.payload.to_bytes())
        except FleetWireError as exc:
            self.bad_messages += 1
            log.debug("ignored %s that does not decode: %s", what, exc)
            return None

    def _state_arrived(self, sample: Any) -> None:
        state = self._decoded(sample, decode_state, "an agent state")
        if state is None:
            return
        robot = self.robots.get(state.robot)
        if robot is None or not robot.agent or not self.running:
            return
        last = robot.state
        if last is not None and last.agent == state.agent and state.seq <= last.seq:
            return  # older than what we have
        robot.state = state
        now = self.server.clock()
        action = estop_mirror(robot.safety.estop is not None, state, self.epoch, robot.last_estop_seq)
        if action == "latch" and state.estop is not None:
            latch = state.estop
            log.warning("e-stop on %s latched by %s (at the robot); mirrored here", robot.name, latch.by)
            self.apply(robot, robot.safety.latch(_FLEET, latch.by, latch.at, now, latch.reason), now, "mirror")
        elif action == "clear":
            log.warning("e-stop on %s cleared at the robot; mirrored here", robot.name)
            self.apply(robot, robot.safety.clear(_FLEET, now), now, "mirror")
        self.server.status.changed()

    def _reply_arrived(self, sample: Any) -> None:
        reply = self._decoded(sample, decode_reply, "a reply")
        if reply is None:
            return
        robot = self.robots.get(reply.robot)
        if robot is None or reply.epoch != self.epoch or not self.running:
            return
        robot.refused[reply.reason] += 1
        driver = robot.safety.driver
        if driver is None or reply.drive != robot.drive:
            return  # about a drive that has already ended here
        self._drive_refused(robot, driver, reply)

    def _drive_refused(self, robot: RobotLine, driver: object, reply: Reply) -> None:
        """The agent refused the drive in force here: end it here too, and tell its driver why."""
        server = self.server
        now = server.clock()
        session = server._sessions.get(driver)  # type: ignore[call-overload]
        who = reply.who or "someone"
        if reply.reason == "stopped_by_other":
            # The driver must let go before driving again, as when someone here stops it.
            self.apply(robot, robot.safety.stop(who, now), now, "agent")
            refusal = Refusal(Reason.STOPPED_BY_OTHER, f"{who} stopped {robot.name}; let go (send stop or a zero "
                              "twist, or stop sending for the deadman time) before driving again")
        elif reply.reason == "estopped":
            latch = robot.safety.latch(_FLEET, who, server.wall_clock(), now)
            self.apply(robot, latch, now, "mirror")
            refusal = self._estopped(robot, "twists are refused")
        else:
            self.apply(robot, robot.safety.disconnect(driver, now), now, "agent")
            if reply.reason == "not_driver":
                refusal = Refusal(Reason.NOT_DRIVER, f"{who} is driving {robot.name} (from another station); wait "
                                  "for it to stop")
            elif reply.reason == "lapsed":
                timeout = robot.state.link_timeout if robot.state is not None else math.nan
                refusal = Refusal(Reason.LINK_LAPSED, f"{robot.name} stopped: no command reached it within its "
                                  f"{timeout:g} s link timeout; drive again to move it")
            else:
                refusal = Refusal(str(reply.reason), f"{robot.name}'s agent refused the command: {reply.reason}")
        log.warning("%s: the agent refused the drive of %s: %s (%s)", robot.name, server._label(driver),
                    reply.reason, who)
        if session is not None:
            server._refused(session, refusal)

    # -- refusals --------------------------------------------------------------------------------------

    def _offline(
        self, robot: RobotLine, session: _Session, now: float, what: str = "commands are not sent", always: bool = False
    ) -> Refusal:
        """``always``: tell the client even if it was told a moment ago (its drive just ended)."""
        told = session.conn.tell_once(Reason.ROBOT_OFFLINE, now)
        return Refusal(
            Reason.ROBOT_OFFLINE,
            f"{robot.name} is offline: its agent is not seen on the fleet's Zenoh network (not running, or its "
            f"link is down); {what}",
            tell=told or always,
        )

    def _estopped(self, robot: RobotLine, what: str) -> Refusal:
        latch = robot.safety.estop
        assert latch is not None
        when = time.strftime("%H:%M:%S", time.localtime(latch.at))
        why = f" ({latch.reason})" if latch.reason else ""
        return Refusal(
            Reason.ESTOPPED,
            f"e-stop on {robot.name} latched by {latch.by} at {when}{why}: {what} until someone sends estop_clear",
        )

    def _refusal(self, robot: RobotLine, decision: Decision) -> Refusal:
        server = self.server
        refused = decision.refused
        if refused is Refused.ESTOPPED:
            return self._estopped(robot, "twists are refused")
        if refused is Refused.STOPPED_BY_OTHER:
            return Refusal(
                Reason.STOPPED_BY_OTHER,
                f"{server._name_of(decision.by)} stopped you; let go (send stop or a zero twist, or stop sending "
                "for the deadman time) before driving again",
            )
        if refused is Refused.NOT_DRIVER:
            return Refusal(
                Reason.NOT_DRIVER,
                f"{server._name_of(robot.safety.driver)} is driving {robot.name}; wait for it to stop (or send "
                "'stop')",
            )
        return Refusal(str(refused), "twist is not finite after scaling; numbers must stay finite")

    # -- reports ------------------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """``/status`` for a station: every robot, and every client with the robot it chose."""
        server = self.server
        robots: dict[str, Any] = {}
        for name in self.names:
            robot = self.robots[name]
            safety = robot.safety
            latch = safety.estop
            command = safety.command
            state = robot.state
            robots[name] = {
                "online": robot.online,
                "agent": robot.agent,
                "driver": None if safety.driver is None else server._name_of(safety.driver),
                "driven_by": robot.holder,
                "command": None if command is None else [*command.linear, *command.angular],
                "estop": None if latch is None else {"by": latch.by, "at": latch.at, "reason": latch.reason},
                "entity_prefix": robot.entity_prefix,
                "link_timeout_s": None if state is None else state.link_timeout,
                "zeros": dict(safety.zeros),
            }
        now = server.clock()
        clients = []
        for session in list(server._sessions.values()):
            chosen = self.robots.get(session.robot or "")
            entry = session.status(chosen.safety.driver if chosen is not None else None, now)
            entry["robot"] = session.robot
            clients.append(entry)
        return {"station": self.station, "robots": robots, "clients": clients}

    def health(self) -> dict[str, Any]:
        return {
            "station": self.station,
            "robots": {name: {"online": self.robots[name].online, "driven_by": self.robots[name].holder}
                       for name in self.names},
        }

    def snapshots(self) -> dict[str, RobotSnapshot]:
        return {name: robot.snapshot() for name, robot in self.robots.items()}


class FleetCollector(Collector):
    """Per-robot metrics for ``/metrics`` (read when scraped)."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        fleet = self._fleet
        online = GaugeMetricFamily("viewer_bridge_robot_online", "1 while the robot's agent is seen", labels=["robot"])
        driven = GaugeMetricFamily("viewer_bridge_robot_driven", "1 while a client of this station drives the robot",
                                   labels=["robot"])
        estop = GaugeMetricFamily("viewer_bridge_robot_estop_latched", "1 while the robot's e-stop is latched",
                                  labels=["robot"])
        zeros = CounterMetricFamily("viewer_bridge_robot_zero_twists", "Drives of the robot ended with one zero, "
                                    "by cause", labels=["robot", "cause"])
        orders = CounterMetricFamily("viewer_bridge_fleet_orders", "Orders sent to the robot's agent, by kind",
                                     labels=["robot", "kind"])
        refused = CounterMetricFamily("viewer_bridge_fleet_refused", "Orders the robot's agent refused, by reason",
                                      labels=["robot", "reason"])
        lease = CounterMetricFamily("viewer_bridge_robot_lease_changes", "Driver lease changes at this station",
                                    labels=["robot"])
        for name in fleet.names:
            robot = fleet.robots[name]
            safety = robot.safety
            online.add_metric([name], 1 if robot.online else 0)
            driven.add_metric([name], 0 if safety.driver is None else 1)
            estop.add_metric([name], 0 if safety.estop is None else 1)
            lease.add_metric([name], safety.lease_changes)
            for cause, n in sorted(safety.zeros.items()):
                zeros.add_metric([name, cause], n)
            for kind, n in sorted(robot.orders.items()):
                orders.add_metric([name, kind], n)
            for reason, n in sorted(robot.refused.items()):
                refused.add_metric([name, reason], n)
        bad = CounterMetricFamily(
            "viewer_bridge_fleet_bad_messages",
            "Agent states and replies that did not decode (ignored)",
            value=fleet.bad_messages,
        )
        yield from (online, driven, estop, zeros, orders, refused, lease, bad)


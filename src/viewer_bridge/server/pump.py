"""The asyncio bridge server: a thin pump between picows and the pure cores, and the threads around it.

Threading model (see also ``docs/architecture.md``):

* **The event loop** owns the sockets and every decision. picows parses
  frames; each goes to the client's :class:`~viewer_bridge.core.connection.Connection`
  (budgets, framing, parsing), events go to the shared
  :class:`~viewer_bridge.core.safety.SafetyController`, and what it decides
  is handed to the :class:`~viewer_bridge.bus.outlet.Outlet`. Handling one
  client's frames in order on one thread is what keeps its messages in
  order; nothing on this path blocks, and no client's reads may cost more
  than its frame budget (reads are capped per callback, and a client over
  budget is not read at all until its budget refills). The whole text
  frames of one read go through as one run (``Connection.receive_texts``,
  ``SafetyController.twist_run``, ``Outlet.publish_run``): the same rules
  per message, the bookkeeping once per read.
* **Publishing lanes** (one thread each, :mod:`viewer_bridge.bus.lanes`): for
  every bus transport one for commands (latest value wins) and one for
  clicks; for the threaded server one for in-process subscribers; for
  ``--echo`` one for stdout. The outlet only queues onto them, so a slow
  subscriber, a stuck bus or a full stdout delays its own lane and nothing
  else.
* **The watchdog thread** (:mod:`viewer_bridge.bus.watchdog`) publishes the
  zero onto the lanes when a command lapses and the loop has not, whatever
  holds the loop.

In the asyncio server (this class) in-process subscribers are called inline
on the loop, in order, right after the message is queued for the buses: a
slow subscriber there delays the loop (other clients' frames, HTTP, the
loop's own timers) but not the buses, and not the watchdog's zero. The
threaded server (:class:`~viewer_bridge.server.threaded.RerunWebSocketServer`)
calls them on their own lane instead, so there they delay only each other.

Every connection starts at the :class:`~viewer_bridge.server.front.FrontDoor`,
which reads the request head and asks :class:`~viewer_bridge.server.http.HttpRoutes`
whether to hand it to picows (a WebSocket upgrade) or answer it (every other
request).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import itertools
import logging
import math
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from viewer_bridge.bus.lanes import Lane
from viewer_bridge.bus.mux import MuxNode
from viewer_bridge.bus.outlet import Outlet
from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports import Transport, create_transport
from viewer_bridge.config import BridgeConfig, ConfigError, from_mapping
from viewer_bridge.core.auth import ANONYMOUS, Principal
from viewer_bridge.core.connection import (
    Answered,
    Close,
    CloseCode,
    Connection,
    ConnectionLimits,
    Pong,
    Refusal,
    Result,
)
from viewer_bridge.core.goals import goal_out_of_range
from viewer_bridge.core.link import LinkMonitor
from viewer_bridge.core.logsafe import Throttle, clean
from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist
from viewer_bridge.core.protocol import Click, Estop, EstopClear, Heartbeat, Reason, Stop, TwistCommand, to_twists
from viewer_bridge.core.safety import ESTOP, TELE_CMD_VEL, Decision, Latch, Limits, Refused, SafetyController
from viewer_bridge.core.topics import STREAM_TYPES, Topic, TopicMap
from viewer_bridge.server.estop_store import EstopStore
from viewer_bridge.server.fleet import FLEET_EVENTS, Fleet, FleetCollector, RobotLine, RobotSnapshot
from viewer_bridge.server.front import FrontDoor
from viewer_bridge.server.hardening import ACCEPT_BATCH, AcceptErrors, PicowsLog, deepen_accept_queue, prepare
from viewer_bridge.server.http import HttpRoutes
from viewer_bridge.server.metrics import BridgeStats, make_registry
from viewer_bridge.server.observer import BridgeObserver
from viewer_bridge.server.status import StatusBoard
from viewer_bridge.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.bus.rerun_sink import RerunSink

__all__ = ["AsyncRerunWebSocketServer", "BindError", "BridgeSnapshot", "ServerState"]

log = logging.getLogger(__name__)

# A client that leaves this much of our output unread (error frames, pongs)
# is closed rather than buffered for.
_MAX_PENDING_WRITE: Final = 64 * 1024
# The most bytes read from one socket per loop callback: what one client's
# frames can cost the loop before every other client and timer gets a turn.
_READ_CHUNK: Final = 16 * 1024
# The same complaint about the same client is logged at most this often.
_LOG_REPEAT_INTERVAL: Final = 10.0
_ZERO_TWIST: Final = Twist.zero()
_SAFETY_DETAIL: Final = {
    Refused.NON_FINITE: "twist is not finite after scaling; numbers must stay finite",
    Refused.NOT_DRIVER: "another client is driving; wait for it to stop (or send 'stop')",
}
# Rejection reasons (metric labels) for the close codes the connection core fails a client with.
_CLOSE_REASONS: Final[dict[int, str]] = {
    CloseCode.PROTOCOL_ERROR: "protocol_error",
    CloseCode.MESSAGE_TOO_BIG: "message_too_big",
}
# How long stop() waits for clients to finish the close handshake.
_CLOSE_GRACE: Final = 1.0
# How often the loop measures its own lag.
_LAG_PERIOD: Final = 0.05
# How often the loop looks for round-trip pings that are due (each client's come about once a second).
_LINK_PERIOD: Final = 0.1
# A client is pinged while it drives, and for this long after its last twist (it may drive again).
_LINK_WATCH: Final = 5.0
# Names of clients kept after they leave, for "stopped by ..." and "latched by ..." messages.
_NAMES_KEPT: Final = 1024
_TEXT: Final = WSMsgType.TEXT
# How often the observer (the Rerun sink) is told the status; it logs only changes.
_STATUS_PERIOD: Final = 0.2


@dataclass(frozen=True)
class BridgeSnapshot:
    """The server's state and counters at one moment: what ``/status`` reports and tests assert on."""

    state: ServerState
    driver: str | None
    command: Twist | None
    clients: int
    paused_clients: int
    flood_closes: int
    zeros: dict[str, int]
    clamped: int
    lease_changes: int
    watchdog_zeros: int
    frames: dict[str, int]
    rejects: dict[str, int]
    published: dict[str, int]
    http_refused: dict[int, int]
    deliveries: dict[tuple[str, str], tuple[int, int]]
    """``(stream, transport) -> (delivered, failed)`` for every bus transport."""
    preauth_dropped: dict[str, int] = field(default_factory=dict)
    """Connections dropped before a complete request: ``per_address``, ``evicted``, ``shed``."""
    auth_failures: int = 0
    """Requests with a wrong or missing token."""
    connect_throttled: int = 0
    """Requests answered 429 because their address opened connections faster than ``connect_rate``."""
    robots: dict[str, RobotSnapshot] = field(default_factory=dict)
    """A fleet station's robots by name (empty without a ``robots`` table)."""


class BindError(OSError):
    """The server could not listen on its address; the message names host:port and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _bind_failure(host: str, port: int, exc: OSError) -> str:
    where = f"cannot listen on {_url_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where}: the port is in use (another bridge, or DimOS's own server?); stop it or choose another "
                "port with --port (0 picks a free one)")
    if exc.errno == errno.EACCES:
        return f"{where}: permission denied (ports below 1024 need root); choose another port with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where}: {host} is not an address of this machine; check --host"
    return f"{where}: {os.strerror(exc.errno) if exc.errno else exc}"


class ServerState(enum.Enum):
    """Where a server is in its life; every transition happens on its event loop."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class _BoundedReads(WSProtocol):  # type: ignore[misc]
    """picows's protocol, reading no more per callback than the client's frame budget covers.

    picows hands every complete frame in its buffer to the listener in one
    callback and grows the buffer when a read fills it, so a flooding client
    would otherwise get ever larger reads, and ever longer turns on the loop;
    a read is also cut to what the client's remaining work budget pays for
    (``Connection.read_allowance``), so tiny frames cannot pack thousands
    into one callback.
    """

    def get_buffer(self, size_hint: int) -> memoryview:
        buffer: memoryview = super().get_buffer(size_hint)
        listener = self.listener
        limit = listener.read_allowance() if isinstance(listener, _Session) else _READ_CHUNK
        return buffer[:limit] if len(buffer) > limit else buffer


class _Session(WSListener):
    """One WebSocket client: hands its frames to its :class:`Connection` and the result to the server."""

    def __init__(
        self,
        server: AsyncRerunWebSocketServer,
        client_id: str,
        connection: Connection,
        link: LinkMonitor,
        principal: Principal = ANONYMOUS,
        account: str = "?",
    ) -> None:
        super().__init__()
        self.server = server
        self.id = client_id
        self.peer = "?"
        self.principal = principal
        self.account = account  # the address (IPv6: /64) its host message budget is charged to
        self.label = f"? #{client_id}"
        # How operators and status frames name this client: its token's name, if the token has one.
        self.name = principal.name if principal.named else f"#{client_id}"
        # The robot this client drives at a fleet station (?robot=NAME, or chosen by a click); None otherwise.
        self.robot: str | None = None
        self.conn = connection
        self.link = link
        self.last_status: bytes | None = None
        self.last_twist_at = -math.inf
        self.transport: WSTransport | None = None
        self.connected_wall = time.time()
        self.rejects = 0
        self.paused = False
        self.complaints = Throttle(_LOG_REPEAT_INTERVAL, max_keys=64)  # one log line per reason at a time
        self._receive = connection.receive
        self._act = server._act
        self._clock = server.clock
        # Whole text frames of the read under way (see on_ws_frame).
        self._texts: list[bytes] = []
        self._hold = self._texts.append

    # picows callbacks ------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.server._session_opened(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # Whole text frames (every message the protocol has) are held until the last frame of this read,
        # then handled as one run: the rules per message are the same, the bookkeeping once per read.
        # A read is bounded by the client's work budget (_BoundedReads), so a run is too.
        if frame.msg_type is _TEXT and frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3):
            self._hold(frame.get_payload_as_bytes())
            if frame.last_in_buffer:
                self.flush()
            return
        if self._texts:
            self.flush()  # what came before this frame, first
        now = self._clock()
        result = self._receive(
            frame.msg_type,  # type: ignore[arg-type]  # an IntEnum, the opcode
            frame.fin,
            frame.get_payload_as_bytes(),
            now,
            frame.rsv1 | frame.rsv2 | frame.rsv3,
        )
        if result is not None:
            self._act(self, result, now)
        self._check_pause()

    def flush(self) -> None:
        """Handle the whole text frames held from this read, in order."""
        texts = self._texts.copy()
        self._texts.clear()
        now = self._clock()  # a read's frames came in one callback: the run is handled when it has them all
        server = self.server
        start = 0
        while start < len(texts):
            results, start = self.conn.receive_texts(texts, now, start)
            server._act_run(self, results, now)
            if start < len(texts):
                # One the run could not take (the connection closing, a fragmented message open, a message
                # too big): on its own.
                result = self._receive(_TEXT, True, texts[start], now)  # type: ignore[arg-type]  # the opcode
                if result is not None:
                    self._act(self, result, now)
                start += 1
        self._check_pause()

    def _check_pause(self) -> None:
        if self.conn.pause_until is not None and not self.paused:
            self.server._pause(self, self.conn.pause_until)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self._texts:
            self.flush()  # a read cut short by a framing error leaves the frames before it
        self.conn.closed()
        self.server._session_closed(self)

    def read_allowance(self) -> int:
        return self.conn.read_allowance(self._clock())

    def is_user_specific_pong(self, frame: WSFrame) -> bool:
        # picows's keepalive pings are empty; answers to the bridge's round-trip pings carry a payload
        # and come to on_ws_frame.
        return frame.msg_type == WSMsgType.PONG and frame.payload_size == 0

    # output ------------------------------------------------------------------

    def writable(self) -> WSTransport | None:
        """The transport if the client is reading what we send; otherwise it is closed and None returned."""
        transport = self.transport
        if transport is None or transport.is_close_frame_sent:
            return None
        if transport.underlying_transport.get_write_buffer_size() > _MAX_PENDING_WRITE:
            log.warning("client %s does not read what it is sent; closing it", self.label)
            self.conn.close(1008, "not reading")
            transport.disconnect(graceful=False)
            return None
        return transport

    def send_status(self, frame: bytes) -> None:
        transport = self.writable()
        if transport is not None:
            transport.send(_TEXT, frame)

    def link_view(self, now: float) -> tuple[float | None, float | None]:
        link = self.link
        # Until a first round trip is measured there is none to show: the first ping has only been out
        # a moment when the greeting is sent (the factor still counts a ping that never comes back).
        rtt = link.estimate(now) if link.rtt is not None else None
        return rtt, link.factor(now)

    def close(self, close: Close) -> None:
        """Send our close frame; drop TCP once the peer has answered, or after a grace period.

        Dropping TCP at once while the peer's data is still unread makes the
        kernel send a reset, which can destroy our close frame before the peer
        reads it (RFC 6455 section 7.1.1 has the server wait for the answer).
        """
        transport = self.transport
        if transport is None:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(WSCloseCode(close.code), close.reason.encode("utf-8")[:120])
        if close.answered:
            transport.disconnect()
        else:
            asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.disconnect)

    def status(self, driver: object, now: float) -> dict[str, Any]:
        rtt, factor = self.link_view(now)
        return {
            "id": self.id,
            "name": self.name,
            "address": self.peer,
            "rtt_ms": None if rtt is None else round(rtt * 1000.0, 1),
            "speed_factor": factor,
            "since": self.connected_wall,
            "frames": self.conn.frames,
            "rejects": self.rejects,
            "paused": self.paused,
            "driver": driver == self.id,
            "token": self.principal.name if self.principal.named else None,
            "role": self.principal.role.value,
        }


class AsyncRerunWebSocketServer:
    """The bridge server for asyncio programs.

    ``AsyncRerunWebSocketServer(port=0)`` or ``AsyncRerunWebSocketServer(config)``;
    then ``await start()`` / ``await stop()``, or ``async with``. Streams
    (``clicked_point``, ``tele_cmd_vel``, ``stop_movement``) exist from
    construction, so subscribe before starting to miss nothing.

    ``subscribers="loop"`` (the default) calls in-process subscribers on this
    server's event loop; ``"thread"`` calls them on a thread of their own
    (what :class:`~viewer_bridge.RerunWebSocketServer` uses).
    """

    def __init__(
        self,
        config: BridgeConfig | None = None,
        /,
        *,
        subscribers: Literal["loop", "thread"] = "loop",
        **settings: Any,
    ) -> None:
        if config is None:
            config = from_mapping(settings, source="arguments")
        elif settings:
            config = config.replace(**settings)
        self.config = config
        self.topics = TopicMap(config.remap, config.namespace)
        self.clicked_point: Stream[PointStamped] = Stream("clicked_point", PointStamped)
        self.tele_cmd_vel: Stream[Twist] = Stream("tele_cmd_vel", Twist)
        self.stop_movement: Stream[Bool] = Stream("stop_movement", Bool)
        self.estop: Stream[Bool] = Stream("estop", Bool)
        self.streams: dict[str, Stream[Any]] = {
            "clicked_point": self.clicked_point,
            "tele_cmd_vel": self.tele_cmd_vel,
            "stop_movement": self.stop_movement,
            "estop": self.estop,
        }
        assert set(self.streams) == set(STREAM_TYPES)
        self.mux: MuxNode | None = None
        if config.mux is not None:
            self.mux = MuxNode.from_config(config, self.topics)
            self.streams.update(self.mux.streams)
        # A fleet station (docs/fleet.md): each robot's own safety state, streams and agent.
        self.fleet: Fleet | None = Fleet(self) if config.robots else None
        if self.fleet is not None:
            self.streams.update(self.fleet.streams())
        self._subscribers_on = subscribers
        self.limits = ConnectionLimits(
            max_message_size=config.max_message_size,
            rate=config.rate_limit,
            burst=config.rate_burst,
            work_rate=config.frame_budget,
            work_burst=config.frame_budget * 2,
            flood_close_after=config.flood_close_after,
        )
        self.safety = SafetyController(
            deadman_timeout=config.deadman_timeout,
            republish_hz=config.republish_hz,
            limits=Limits.from_config(config),
            announce_drive=config.stop_movement == "publish",
        )
        self.link_limits = config.link()
        self._estop_store = EstopStore(config.estop_state_file) if config.estop_state_file else None
        # Names of clients that took part in a stop or a latch, kept after they leave (for who-did-it messages).
        self._names: dict[str, str] = {}
        self.status = StatusBoard(
            self.safety, lambda: self._sessions.values(), self._name_of, self._now,
            self.fleet.safety_of if self.fleet is not None else None,
        )
        # The DimOS 0.0.15 compatibility profile (docs/dimos.md).
        self._announce = config.stop_movement == "publish"
        self._entity_frames = config.click_frame == "entity_path"
        self._goal_limits = config.max_goal_distance is not None or config.max_goal_height is not None
        self.stats = BridgeStats()
        self.registry = make_registry(self)
        if self.fleet is not None:
            self.registry.register(FleetCollector(self.fleet))
        self.wall_clock: Callable[[], float] = time.time
        # The server's one clock: the event loop's (asyncio's is monotonic), read from other threads too.
        self.clock: Callable[[], float] = time.monotonic
        self.transports: list[Transport] = []
        self.token: str | None = None
        self.secure = False
        self.bound_port: int | None = None
        self.state = ServerState.STOPPED
        self._http = HttpRoutes(self)
        self._tls: ssl.SSLContext | None = None
        self._picows_log: Any = logging.getLogger("viewer_bridge.picows")
        self._accept_errors: AcceptErrors | None = None
        self._outlet: Outlet | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._lag_timer: asyncio.TimerHandle | None = None
        self._link_timer: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        self._last_command_at: float | None = None  # when tele_cmd_vel last got a message
        # Told of every refusal and, every _STATUS_PERIOD, of the status (viewer_bridge.server.observer).
        self.observer: BridgeObserver | None = None
        self.rerun_sink: RerunSink | None = None
        self._status_timer: asyncio.TimerHandle | None = None

    # -- lifecycle --------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self.state is ServerState.RUNNING

    async def start(self) -> None:
        """Bind and listen. Returns once connections are accepted.

        Raises :class:`BindError` (naming host:port) if the address cannot be
        bound, :class:`ConfigError` for an unsafe or invalid setup, and
        :class:`~viewer_bridge.bus.transports.TransportError` if a bus is unreachable.
        Nothing here blocks the event loop: bus probes and file reads run on
        worker threads.
        """
        if self.state is not ServerState.STOPPED:
            return
        self.state = ServerState.STARTING
        try:
            await self._start()
        except BaseException:
            await self._teardown()
            self.state = ServerState.STOPPED
            raise
        self.state = ServerState.RUNNING

    async def _start(self) -> None:
        config = self.config
        loop = self._loop = asyncio.get_running_loop()
        # The loop's clock; asyncio's own loop.time() *is* time.monotonic(), called directly where it is
        # (it is read several times per message, and the method call costs more than the read).
        self.clock = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        # Tokens read, and the bind host resolved: loopback is decided by address, not by name.
        security = await asyncio.to_thread(prepare, config)
        self.token = security.shared_token
        if not security.loopback and not security.tokens and not config.insecure:
            raise ConfigError(
                f"refusing to listen on {config.host}:{config.port} ({', '.join(security.bind_addresses)}) "
                "without a token: anyone who can reach that address could drive the robot. Set a token "
                "(--token-file FILE, or the VIEWER_BRIDGE_TOKEN environment variable) and give clients "
                "ws://HOST:PORT/ws?token=..., or pass --insecure to accept the risk."
            )
        if not security.loopback and not security.tokens:
            log.warning(
                "listening on %s without a token (--insecure): anyone who can reach this port can drive "
                "the robot",
                config.host,
            )
        self._http.configure(security)
        ssl_context = await asyncio.to_thread(_tls_context, config) if config.tls_cert else None
        self._tls = ssl_context
        self.secure = ssl_context is not None
        if config.web:
            from viewer_bridge.server.web import StaticFiles

            static = await asyncio.to_thread(StaticFiles, config, bool(security.tokens))
            self._http.static = static.respond
            self._http.page_config = static.page_config
        for name in config.transports:
            transport = create_transport(name, config)
            self.transports.append(transport)
            # Probes the bus (LCM waits for its probe to come back, Zenoh for its peers): off the loop.
            await asyncio.to_thread(transport.start)
        if config.rerun_connect is not None:
            from viewer_bridge.bus.rerun_sink import RerunSink

            sink = RerunSink.from_config(config, self.clock)
            await asyncio.to_thread(sink.open)  # imports the Rerun SDK; connecting waits for the lane
            self.rerun_sink = self.observer = sink
            self.registry.register(sink.metrics)
        self._outlet = self._build_outlet()
        self._outlet.start()
        if self.fleet is not None:
            await self.fleet.start(loop)
        if self._estop_store is not None:
            latch = await asyncio.to_thread(self._estop_store.load, self.wall_clock())
            if latch is not None:
                # Restored latched: the robot side hears it again, with one zero, before anyone connects.
                now = self.clock()
                self._apply(self.safety.latch("estop_state_file", latch.by, latch.at, now, latch.reason), now)
                log.warning("starting with the e-stop latched (by %s%s), from %s", clean(latch.by),
                            f": {clean(latch.reason)}" if latch.reason else "", self._estop_store.path)
        self.status.start(loop)
        if self.mux is not None:
            self.mux.start(loop, self.transports, self._on_nav)
        self._picows_log = PicowsLog(logging.getLogger("viewer_bridge.picows"), security.tokens.secrets, self.clock)
        try:
            # The addresses that were checked, not the name again (it could resolve differently now).
            # TLS is started by the front door, so its handshake counts against the pre-auth limits.
            self._server = await loop.create_server(
                self._front_door,
                list(security.bind_addresses),
                config.port,
                reuse_address=True,
                backlog=ACCEPT_BATCH,
            )
        except OSError as exc:
            raise BindError(exc.errno, _bind_failure(config.host, config.port, exc)) from None
        deepen_accept_queue(self._server)
        sockets = self._server.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else config.port
        self._started_at = self.clock()
        self._accept_errors = AcceptErrors(loop, self._http.shed, self.clock)
        self._lag_timer = loop.call_at(self.clock() + _LAG_PERIOD, self._measure_lag, self.clock() + _LAG_PERIOD)
        self._link_timer = loop.call_at(self.clock() + _LINK_PERIOD, self._link_tick)
        if self.observer is not None:
            self._status_timer = loop.call_at(self.clock(), self._report_status)
        log.info("listening on %s", self.websocket_url())

    def _front_door(self) -> FrontDoor:
        http = self._http
        return FrontDoor(
            http, self._ws_protocol, self.config.handshake_timeout, http.opened, http.closed, tls=self._tls
        )

    def _ws_protocol(self, session: WSListener) -> WSProtocol:
        """picows's protocol for a connection the front door has vetted; ``session`` gets its frames."""
        config = self.config
        return _BoundedReads(
            None,  # host:port (client side only)
            None,  # path (client side only)
            False,  # is_client_side
            lambda _request: session,
            self._picows_log,
            True,  # disconnect_on_exception
            config.handshake_timeout,
            True,  # enable_auto_ping: picows pings an idle client and drops it if no pong comes
            config.ping_interval,
            config.ping_timeout,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            False,  # enable_auto_pong: pings are answered here, within the client's budget and output bound
            config.max_message_size,
            None,  # extra response headers
            # Viewer messages are ~200 bytes; picows's 16 KiB default read buffer per connection would
            # dominate idle memory. 2048 is the least it takes; a busy client's buffer grows by doubling.
            2048,
        )

    def _build_outlet(self) -> Outlet:
        """One command lane and one click lane per transport, plus subscribers' and echo's lanes."""
        config = self.config
        topic_for: dict[str, Topic] = {topic.stream: topic for topic in self.topics}
        if self.fleet is not None:
            topic_for.update(self.fleet.topics())
        if self.mux is not None:
            topic_for[self.mux.output_topic.stream] = self.mux.output_topic
        bus_streams = list(topic_for)
        lanes: dict[str, list[Lane]] = {stream: [] for stream in self.streams}
        clock = self.clock
        for transport in self.transports:

            def deliver(stream: str, message: Message, transport: Transport = transport) -> None:
                transport.publish(topic_for[stream], message)

            commands = Lane(f"{transport.name}-commands", deliver, kind=transport.name, conflate=True, clock=clock)
            clicks = Lane(f"{transport.name}-clicks", deliver, kind=transport.name, clock=clock)
            for stream in bus_streams:
                lanes[stream].append(clicks if stream == "clicked_point" else commands)
        inline = None
        if self._subscribers_on == "thread":
            streams = self.streams
            subscribers = Lane(
                "subscribers", lambda stream, message: streams[stream].publish(message), kind="inprocess",
                max_pending=100_000, clock=clock,
                deliver_run=lambda stream, messages: streams[stream].publish_run(messages),
            )
            for stream_lanes in lanes.values():
                stream_lanes.append(subscribers)
        else:
            streams = self.streams

            def inline(stream: str, message: Message) -> None:
                streams[stream].publish(message)

        if config.echo is not None:
            from viewer_bridge.bus.echo import echo_writer

            echo = Lane("echo", echo_writer(config.echo), kind="echo", max_pending=1000, clock=clock)
            for stream_lanes in lanes.values():
                stream_lanes.append(echo)
        if self.rerun_sink is not None:
            for stream in ("clicked_point", TELE_CMD_VEL):
                lanes[stream].append(self.rerun_sink.lane)
        commands_streams = {TELE_CMD_VEL}
        if self.fleet is not None:
            commands_streams |= self.fleet.command_streams()
        if self.mux is not None:
            commands_streams.add(self.mux.output_topic.stream)
        loop = self._loop
        assert loop is not None
        return Outlet(lanes, command_streams=commands_streams, clock=clock, inline=inline, defer=loop.call_soon)

    async def stop(self) -> None:
        """Close every client (1001 Going Away), stop whoever was driving, and stop listening.

        Idempotent, and safe before or after start.
        """
        if self.state in (ServerState.STOPPED, ServerState.STOPPING):
            return
        self.state = ServerState.STOPPING
        try:
            await self._teardown()
        finally:
            self.state = ServerState.STOPPED

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._accept_errors is not None:
            self._accept_errors.remove()
            self._accept_errors = None
        self._http.stop()
        if self._outlet is not None:
            self._apply(self.safety.shutdown(self.clock()), self.clock())
            if self.fleet is not None:
                self.fleet.shutdown(self.clock())
            if self.observer is not None:
                self.observer.on_status(self._observer_status(self.clock()), self.clock())
        sessions = list(self._sessions.values())
        for session in sessions:
            session.close(session.conn.close(CloseCode.GOING_AWAY, "server shutting down"))
        waits = [s.transport.wait_disconnected() for s in sessions if s.transport is not None]
        if waits:
            _, pending = await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=_CLOSE_GRACE)
            for task in pending:
                task.cancel()
        for session in sessions:
            if session.transport is not None:
                session.transport.disconnect(graceful=False)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        for timer in (self._timer, self._lag_timer, self._link_timer, self._status_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._lag_timer = self._link_timer = self._status_timer = None
        self.status.stop()
        if self.mux is not None:
            self.mux.stop()
        if self._outlet is not None:
            # Lanes deliver what they hold (the shutdown zero among it) before their threads end.
            await asyncio.to_thread(self._outlet.stop)
            self._outlet = None
        if self.fleet is not None:
            await self.fleet.close()
        if self.rerun_sink is not None:
            await asyncio.to_thread(self.rerun_sink.close)
            self.registry.unregister(self.rerun_sink.metrics)
            self.rerun_sink = self.observer = None
        if self._estop_store is not None:
            await asyncio.to_thread(self._estop_store.close)
        transports, self.transports = self.transports, []
        for transport in transports:
            try:
                await asyncio.to_thread(transport.close)
            except Exception:
                log.exception("closing the %s transport failed", transport.name)
        self._sessions.clear()
        self.stats.connections_open = 0
        self.stats.paused = 0
        self.bound_port = None

    async def __aenter__(self) -> AsyncRerunWebSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- addresses --------------------------------------------------------

    def websocket_url(self, host: str | None = None) -> str:
        """The URL clients dial, e.g. ``ws://127.0.0.1:3030/ws`` (the token is not included)."""
        scheme = "wss" if self.config.tls_cert else "ws"
        return f"{scheme}://{_url_host(host or _display_host(self.config.host))}:{self._port()}{self.config.path}"

    def http_url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        return f"{scheme}://{_url_host(host or _display_host(self.config.host))}:{self._port()}{path}"

    def _port(self) -> int:
        return self.bound_port if self.bound_port is not None else self.config.port

    # -- state for HTTP, metrics and tests ----------------------------------

    @property
    def robots(self) -> dict[str, RobotLine]:
        """A fleet station's robots by name (each has the four streams); empty without a ``robots`` table."""
        return self.fleet.robots if self.fleet is not None else {}

    @property
    def auth_required(self) -> bool:
        """Whether clients must present a token (the shared one or a named one); known once started."""
        return bool(self._http.tokens)

    @property
    def client_count(self) -> int:
        return len(self._sessions)

    def new_session(
        self, principal: Principal = ANONYMOUS, account: str = "?", *, robot: str | None = None
    ) -> _Session:
        """A session for a request that passed the HTTP checks (called by the router).

        ``principal`` is whose token it presented (its role decides what it may
        send); ``account`` the address its messages are also counted against;
        ``robot`` the robot it drives at a fleet station.
        """
        client_id = f"{next(self._ids):04x}"
        now = self.clock()
        connection = Connection(
            self.limits,
            now,
            role=principal.role,
            name=principal.name if principal.named else "",
            host=self._http.guard.bucket(account, now),
        )
        session = _Session(self, client_id, connection, LinkMonitor(self.link_limits, now), principal, account)
        session.robot = robot
        return session

    def token_connections(self) -> dict[tuple[str, str], int]:
        """Open WebSocket connections by token name and role (a metric's labels)."""
        counts: Counter[tuple[str, str]] = Counter()
        for session in self._sessions.values():
            counts[(session.principal.name, session.principal.role.value)] += 1
        return counts

    async def wait_delivered(self, timeout: float = 5.0) -> bool:
        """Wait until every message published so far has been handed to the in-process subscribers.

        With subscribers on the loop that is already so; on their own thread
        (the threaded server) this waits for that thread to catch up. Returns
        False if it did not within ``timeout`` (a subscriber is stuck).
        """
        outlet = self._outlet
        lanes = [lane for lane in outlet.lanes if lane.kind == "inprocess"] if outlet is not None else []
        if not lanes:
            return True
        reached = [lane.barrier() for lane in lanes]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for event in reached:
            if not await asyncio.to_thread(event.wait, max(0.0, deadline - loop.time())):
                return False
        return True

    def owns_thread(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of the bridge's own (a publishing lane's, or the watchdog's)."""
        outlet = self._outlet
        fleet_lanes = self.fleet.lanes() if self.fleet is not None else []
        return (outlet is not None and outlet.owns_thread(thread)) or any(lane.thread is thread for lane in fleet_lanes)

    def bus_lanes(self) -> list[Lane]:
        """The lanes that carry messages to bus transports."""
        if self._outlet is None:
            return []
        return [lane for lane in self._outlet.lanes if lane.kind in {t.name for t in self.transports}]

    def metric_lanes(self) -> list[Lane]:
        lanes = self._outlet.lanes if self._outlet is not None else []
        return lanes + self.fleet.lanes() if self.fleet is not None else lanes

    def metric_links(self) -> list[tuple[str, float | None, float | None]]:
        now = self.clock()
        return [(session.name, *session.link_view(now)) for session in list(self._sessions.values())]

    def watchdog_zeros(self) -> int:
        return self._outlet.watchdog.fired if self._outlet is not None else 0

    def health(self) -> dict[str, Any]:
        """``up`` is true only when the server runs and every bus transport takes its commands."""
        now = self.clock()
        age = None if self._last_command_at is None else round(now - self._last_command_at, 6)
        transports: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for lane in self.bus_lanes():
            lane_health = lane.health(now)
            entry = transports.setdefault(lane.kind, {"ok": True, "problems": []})
            if not lane_health.ok:
                entry["ok"] = False
                entry["problems"].append(lane_health.problem)
                problems.append(str(lane_health.problem))
        if not self.is_running:
            problems.insert(0, f"server is {self.state.value}")
        estop = self.safety.estop
        return {
            "up": not problems,
            "version": __version__,
            "uptime_s": round(now - self._started_at, 3) if self.is_running else 0.0,
            "clients": len(self._sessions),
            "driver": self.safety.driver,
            "last_command_age_s": age,
            "transports": transports,
            "problems": problems,
            "estop": None if estop is None else {"by": estop.by, "at": estop.at, "reason": estop.reason},
            **({"fleet": self.fleet.health()} if self.fleet is not None else {}),
        }

    def snapshot(self) -> BridgeSnapshot:
        """Counters and state now (read on the loop's thread, or after the server stopped)."""
        safety = self.safety.snapshot()
        stats = self.stats
        return BridgeSnapshot(
            state=self.state,
            driver=safety.driver,  # type: ignore[arg-type]
            command=safety.command,
            clients=len(self._sessions),
            paused_clients=stats.paused,
            flood_closes=stats.flood_closes,
            zeros=Counter(safety.zeros),
            clamped=safety.clamped,
            lease_changes=safety.lease_changes,
            watchdog_zeros=self.watchdog_zeros(),
            frames=dict(stats.frames),
            rejects=Counter(stats.rejects),
            published=Counter(stats.published),
            http_refused=Counter(stats.http_refused),
            deliveries=self._deliveries(),
            preauth_dropped=Counter(stats.preauth_refused),
            auth_failures=stats.auth_failures,
            connect_throttled=stats.connect_throttled,
            robots=self.fleet.snapshots() if self.fleet is not None else {},
        )

    def _deliveries(self) -> dict[tuple[str, str], tuple[int, int]]:
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for lane in self.bus_lanes():
            for stream in {*lane.delivered, *lane.failures}:
                ok, failed = counts.get((stream, lane.kind), (0, 0))
                ok += lane.delivered.get(stream, 0)
                failed += lane.failures.get(stream, 0)
                counts[(stream, lane.kind)] = (ok, failed)
        return counts

    def client_status(self) -> dict[str, Any]:
        """``/status``: who drives, the e-stop, and one entry per client."""
        driver = self.safety.driver
        estop = self.safety.estop
        now = self.clock()
        return {
            "driver": None if driver is None else self._name_of(driver),
            "estop": None if estop is None else {"by": estop.by, "at": estop.at, "reason": estop.reason},
            "clients": [session.status(driver, now) for session in self._sessions.values()],
        }

    # -- sessions ---------------------------------------------------------

    def _session_opened(self, session: _Session) -> None:
        transport = session.transport
        assert transport is not None
        peer = transport.underlying_transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            session.peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
            named = session.principal.named
            session.label = f"{session.peer} #{session.id}" + (f" ({session.principal.name})" if named else "")
        self._sessions[session.id] = session
        self._remember(session)
        self.stats.connections_total += 1
        self.stats.connections_open = len(self._sessions)
        log.info("client %s connected (%d open)", session.label, len(self._sessions))
        # One round trip measured right away, so a first twist already knows its link.
        self._ping(session, self.clock())
        self.status.greet(session)
        self.status.changed()

    def _session_closed(self, session: _Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self._http.guard.release(session.account)
        self.stats.connections_open = len(self._sessions)
        if session.paused:
            session.paused = False
            self.stats.paused -= 1
        if self._outlet is not None:
            now = self.clock()
            self._apply(self.safety.disconnect(session.id, now), now)
            if self.fleet is not None:
                self.fleet.closed(session, now)
        self.status.changed()
        close = session.transport.close_handshake if session.transport is not None else None
        received = close.recv if close is not None else None
        how = f"close code {received.code.value}" if received is not None else "no close frame"
        log.info("client %s disconnected (%s; %d frames)", session.label, how, session.conn.frames)

    # -- flow control ---------------------------------------------------------

    def _pause(self, session: _Session, until: float) -> None:
        transport = session.transport
        if transport is None or self._loop is None:
            return
        session.paused = True
        self.stats.paused += 1
        transport.underlying_transport.pause_reading()
        self._loop.call_at(until, self._resume, session)

    def _resume(self, session: _Session) -> None:
        if not session.paused:
            return
        session.paused = False
        self.stats.paused -= 1
        session.conn.resumed(self.clock())
        transport = session.transport
        if transport is not None and not transport.is_disconnected:
            transport.underlying_transport.resume_reading()

    # -- what a frame led to ------------------------------------------------

    def _act_run(self, session: _Session, results: list[Result], now: float) -> None:
        """What a run of whole text frames led to (``Connection.receive_texts``), in order."""
        act = self._act
        if self.fleet is not None:
            for result in results:
                if result is not None:
                    act(session, result, now)
            return
        for kind, group in itertools.groupby(results, type):
            if kind is TwistCommand:
                self._twists(session, list(group), now)  # type: ignore[arg-type]
            elif kind is Click:
                self._clicks(session, list(group), now)  # type: ignore[arg-type]
            elif kind is not type(None):
                for result in group:
                    act(session, result, now)

    def _twists(self, session: _Session, commands: list[TwistCommand], now: float) -> None:
        """Consecutive twists from one client at one instant: the safety controller's run, else one at a time."""
        stats = self.stats
        stats.frames["twist"] += len(commands)
        session.last_twist_at = now
        factors: list[float] | None = None
        if self.link_limits.enabled:
            passed: list[TwistCommand] = []
            factors = []
            for command in commands:
                factor = self._twist_factor(session, command, now)
                if factor is not None:  # else refused, and told: it does nothing else
                    passed.append(command)
                    factors.append(factor)
            commands = passed
        twists = to_twists(commands)
        start = 0
        accepted = 0  # the latency histogram counts what was published, not what was refused
        while start < len(twists):
            drive, expires = self.safety.twist_run(
                session.id, twists[start:], now, None if factors is None else factors[start:]
            )
            if drive:
                taken = len(drive)
                if self.mux is None:
                    self._drive_on(drive, expires, now)
                else:
                    publish = tuple([(TELE_CMD_VEL, command) for command in drive])
                    self._apply(Decision(publish, expires=expires), now)  # the mux takes each on its way
                start += taken
                accepted += taken
                if start == len(twists):
                    break
            accepted += self._safety_twist(session, twists[start], now, 1.0 if factors is None else factors[start])
            start += 1
        if accepted:
            stats.latency.observe_run(self.clock() - now, accepted)

    def _twist_factor(self, session: _Session, command: TwistCommand, now: float) -> float | None:
        """The link's speed factor for ``command``, or None after refusing it for the link."""
        if (
            command.linear_x or command.linear_y or command.linear_z
            or command.angular_x or command.angular_y or command.angular_z
        ):  # fmt: skip
            return self._link_check(session, command, now)
        return 1.0  # a release (a zero twist) always passes: only moving is held back by a bad link

    def _safety_twist(self, session: _Session, twist: Twist, now: float, factor: float) -> bool:
        """One twist through the safety controller; whether it was accepted (else refused, and told)."""
        decision = self.safety.twist(session.id, twist, now, factor)
        if decision.refused is not None:
            self._refused(session, self._safety_refusal(decision))
            return False
        self._apply(decision, now)
        return True

    def _act(self, session: _Session, result: object, now: float) -> None:
        # Twists come first: they arrive at key-repeat or frame rate from every driver.
        kind = type(result)
        stats = self.stats
        if self.fleet is not None and kind in FLEET_EVENTS:
            self.fleet.act(session, result, now)
            return
        if kind is TwistCommand:
            self._twists(session, [result], now)  # type: ignore[list-item]  # a run of one
            return
        if kind is Stop:
            stats.frames["stop"] += 1
            self._apply(self.safety.stop(session.id, now), now)
        elif kind is Click:
            self._clicks(session, [result], now)  # type: ignore[list-item]  # a run of one
            return
        elif kind is Heartbeat:
            stats.frames["heartbeat"] += 1
            return
        elif kind is Estop:
            stats.frames["estop"] += 1
            self.latch_estop(session.id, result.reason, now)  # type: ignore[attr-defined]
        elif kind is EstopClear:
            stats.frames["estop_clear"] += 1
            self.clear_estop(session.id, now)
        elif kind is Answered:
            if session.link.pong(result.payload, now):  # type: ignore[attr-defined]
                self.status.changed()
            return
        elif kind is Refusal:
            self._refused(session, result)  # type: ignore[arg-type]
            return
        elif kind is Pong:
            transport = session.writable()
            if transport is not None:
                transport.send_pong(result.payload)  # type: ignore[attr-defined]
            return
        elif kind is Close:
            close: Close = result  # type: ignore[assignment]
            if close.code == CloseCode.POLICY_VIOLATION and close.reason.startswith("flooding"):
                stats.flood_closes += 1
                log.warning("client %s: closed: %s", session.label, close.reason)
            elif close.code in _CLOSE_REASONS:
                # The bridge is closing this client for what it sent (a peer's own close is not counted).
                self._count_reject(session, _CLOSE_REASONS[close.code], close.reason)
            session.close(close)
            return
        stats.latency.observe(self.clock() - now)

    def _goal(self, session: _Session, click: Click, now: float) -> PointStamped | None:
        """The goal a 3D click publishes, or None after refusing it (e-stop, out of range)."""
        assert click.z is not None  # the connection refuses 2D clicks
        if self.safety.click_refused() is not None:
            self._refused(session, self._estopped("a goal is not sent"))
            return None
        frame_id = click.entity_path if self._entity_frames and click.entity_path else self.config.frame_id
        if self._goal_limits:
            refused = goal_out_of_range(
                click.x, click.y, click.z, frame_id, self.config.max_goal_distance, self.config.max_goal_height
            )
            if refused is not None:
                self._refused(session, Refusal(Reason.GOAL_OUT_OF_RANGE, refused[1], refused[0]))
                return None
        ts = click.timestamp_ms / 1000.0 if click.timestamp_ms else self.wall_clock()
        return PointStamped(click.x, click.y, click.z, ts, frame_id)

    def _clicks(self, session: _Session, clicks: list[Click], now: float) -> None:
        """Consecutive clicks from one client: each checked as _act would, the goals published together."""
        self.stats.frames["click"] += len(clicks)
        goals: list[Message] = []
        for click in clicks:
            goal = self._goal(session, click, now)
            if goal is not None:
                goals.append(goal)
        if goals:
            outlet = self._outlet
            if outlet is not None:
                outlet.publish_run("clicked_point", goals)
                self.stats.published["clicked_point"] += len(goals)
            self.stats.latency.observe_run(self.clock() - now, len(goals))

    def _publish(self, stream: str, message: Message, expires: float | None = None) -> None:
        outlet = self._outlet
        if outlet is None:
            return
        outlet.publish(stream, message, expires)
        self.stats.published[stream] += 1

    def _apply(self, decision: Decision, now: float) -> None:
        """Publish what the safety controller decided, feed the mux, log lease changes, keep the timer."""
        publish = decision.publish
        if (
            len(publish) == 1
            and self.mux is None
            and decision.started is None
            and decision.ended is None
            and decision.expires is not None
            and publish[0][0] == TELE_CMD_VEL
        ):
            # The common case, a driver's next command, without the general path's bookkeeping.
            self._drive_on([publish[0][1]], decision.expires, now)
            return
        announced = False
        for stream, message in decision.publish:
            self._publish(stream, message, decision.expires)
            if stream == TELE_CMD_VEL:
                self._last_command_at = now
                if self.mux is not None:
                    self._mux_publish(self.mux.teleop(message, now, announced), decision.expires)  # type: ignore[arg-type]
            elif stream == ESTOP:
                if self._estop_store is not None:
                    self._estop_store.save(self.safety.estop)
            else:
                announced = True
        if decision.ended is not None:
            who = self._label(decision.previous)
            if decision.ended in ("deadman", "disconnect", "shutdown"):
                log.warning("published a zero twist: %s (driver was %s)", decision.ended.value, who)
            else:
                log.info("client %s stopped driving (%s)", who, decision.ended.value)
        if decision.started is not None:
            log.info("client %s is now driving", self._label(decision.started))
        if decision.expires is not None and self._timer is None:
            self._arm()
        self.status.changed()

    def _drive_on(self, commands: Sequence[Message], expires: float, now: float) -> None:
        """Publish the driver's next moving commands on ``tele_cmd_vel`` (no mux), all with one deadline."""
        outlet = self._outlet
        if outlet is not None:
            outlet.publish_run(TELE_CMD_VEL, commands, expires)
            self.stats.published[TELE_CMD_VEL] += len(commands)
        self._last_command_at = now
        if self._timer is None:
            self._arm()
        self.status.changed()

    def _mux_publish(self, outcome: Any, expires: float | None) -> None:
        if outcome is None:
            return
        mux = self.mux
        assert mux is not None
        if outcome.stop_movement and self._announce:
            self._publish("stop_movement", Bool(True))
        if outcome.cmd_vel is not None:
            self._publish(mux.output_topic.stream, outcome.cmd_vel, expires)

    def _on_nav(self, twist: Twist) -> None:
        """A navigation command arrived (on the loop) for the mux."""
        mux = self.mux
        if mux is None or self._outlet is None:
            return
        self._publish(mux.nav_cmd_vel.name, twist)
        self._mux_publish(mux.nav(twist, self.clock()), None)

    # -- operator control: the e-stop, the link, names ---------------------------------------

    def latch_estop(self, client: str, reason: str | None, now: float) -> Latch | None:
        """Latch the e-stop for ``client`` (a session id, or e.g. ``"http:ADDRESS"``); returns the latch in force."""
        name = self._name_of(client)
        decision = self.safety.latch(client, name, self.wall_clock(), now, reason)
        if decision.publish:
            log.warning("e-stop LATCHED by %s%s", name, f": {clean(reason)}" if reason else "")
        self._apply(decision, now)
        if self.fleet is not None:
            # At a fleet station an e-stop from outside any robot's session (POST /estop) latches every robot.
            for robot in self.fleet.robots.values():
                self.fleet.latch(robot, client, reason, now)
        return self.safety.estop

    def stop_from(self, client: str, now: float) -> str | None:
        """A ``stop`` from outside any session (``POST /stop``): one zero, exactly as a ``stop`` frame gives.

        ``client`` names the sender (e.g. ``"http:ADDRESS"``); returns the name of who was driving, if anyone.
        """
        driver = self.safety.driver
        # Not logged here: _apply logs a drive it ends, and a line per stop would let a stop storm flood the log.
        self._apply(self.safety.stop(client, now), now)
        return None if driver is None else self._name_of(driver)

    def clear_estop(self, client: str, now: float) -> None:
        decision = self.safety.clear(client, now)
        if decision.publish:
            log.warning("e-stop cleared by %s", self._name_of(client))
        self._apply(decision, now)
        if self.fleet is not None:
            for robot in self.fleet.robots.values():
                self.fleet.clear(robot, client, now)

    def _link_check(self, session: _Session, command: TwistCommand, now: float) -> float | None:
        """The speed factor for a moving twist, or None after refusing it (link too slow, or stale)."""
        link = session.link
        factor = link.factor(now)
        if factor is None:
            rtt = link.estimate(now) or 0.0
            self._refused(session, Refusal(
                Reason.LINK_TOO_SLOW,
                f"your round trip is {rtt * 1000:.0f} ms, over the {self.link_limits.max_rtt * 1000:.0f} ms "
                "that driving allows; the robot is not moved from this link",
                tell=session.conn.tell_once(Reason.LINK_TOO_SLOW, now),
            ))
            return None
        if command.timestamp_ms is not None:
            age = link.stale(command.timestamp_ms, self.wall_clock())
            if age is not None:
                self._refused(session, Refusal(
                    Reason.STALE,
                    f"command arrived {age * 1000:.0f} ms later than this link's best (limit "
                    f"{self.link_limits.max_command_age * 1000:.0f} ms): not sent to the robot",
                    "timestamp_ms",
                    tell=session.conn.tell_once(Reason.STALE, now),
                ))
                return None
        return factor

    def _link_tick(self) -> None:
        """Ping the clients that drive, or did a moment ago, when their next round trip is due."""
        now = self.clock()
        driver = self.safety.driver
        for session in self._sessions.values():
            if session.id == driver or now - session.last_twist_at < _LINK_WATCH:
                self._ping(session, now)
        loop = self._loop
        if loop is not None and self.state in (ServerState.RUNNING, ServerState.STARTING):
            self._link_timer = loop.call_at(now + _LINK_PERIOD, self._link_tick)

    def _ping(self, session: _Session, now: float) -> None:
        payload = session.link.ping_due(now)
        if payload is None:
            return
        transport = session.writable()
        if transport is not None:
            transport.send_ping(payload)

    def _safety_refusal(self, decision: Decision) -> Refusal:
        refused = decision.refused
        if refused is Refused.ESTOPPED:
            return self._estopped("twists are refused")
        if refused is Refused.STOPPED_BY_OTHER:
            return Refusal(
                Reason.STOPPED_BY_OTHER,
                f"{self._name_of(decision.by)} stopped you; let go (send stop or a zero twist, or stop "
                "sending for the deadman time) before driving again",
            )
        if refused is Refused.NOT_DRIVER:
            return Refusal(
                Reason.NOT_DRIVER,
                f"{self._name_of(self.safety.driver)} is driving; wait for it to stop (or send 'stop')",
            )
        return Refusal(str(refused), _SAFETY_DETAIL[refused])  # type: ignore[index]

    def _estopped(self, what: str) -> Refusal:
        latch = self.safety.estop
        assert latch is not None
        when = time.strftime("%H:%M:%S", time.localtime(latch.at))
        why = f" ({latch.reason})" if latch.reason else ""
        return Refusal(
            Reason.ESTOPPED,
            f"e-stop latched by {latch.by} at {when}{why}: {what} until someone sends estop_clear",
        )

    def _remember(self, session: _Session) -> None:
        names = self._names
        names[session.id] = session.name
        if len(names) > _NAMES_KEPT:
            for stale in [key for key in names if key not in self._sessions][: len(names) - _NAMES_KEPT]:
                del names[stale]

    def _name_of(self, client: object) -> str:
        session = self._sessions.get(client) if isinstance(client, str) else None
        if session is not None:
            return session.name
        return self._names.get(client, str(client)) if isinstance(client, str) else str(client)

    def _now(self) -> float:
        return self.clock()

    def _label(self, client: object) -> str:
        session = self._sessions.get(client) if isinstance(client, str) else None
        return session.label if session is not None else f"#{client}"

    # -- the safety timer and the lag monitor ----------------------------------

    def _arm(self) -> None:
        # The timer is armed lazily: each twist only moves the deadline later,
        # so instead of re-arming per message, a timer that fires early finds
        # nothing due and re-arms for the new deadline.
        deadline = self.safety.next_deadline()
        loop = self._loop
        if deadline is None or loop is None or self.state not in (ServerState.RUNNING, ServerState.STARTING):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.clock()
        self._apply(self.safety.tick(now), now)
        self._arm()

    def _report_status(self) -> None:
        observer, loop = self.observer, self._loop
        if observer is None or loop is None or self.state not in (ServerState.RUNNING, ServerState.STARTING):
            return
        now = self.clock()
        observer.on_status(self._observer_status(now), now)
        self._status_timer = loop.call_at(now + _STATUS_PERIOD, self._report_status)

    def _observer_status(self, now: float) -> dict[str, Any]:
        """The status an observer shows (keys: viewer_bridge.core.awareness.status_text)."""
        driver, latch = self.safety.driver, self.safety.estop
        estop = None
        if latch is not None:
            estop = f"by {latch.by} at {time.strftime('%H:%M:%S', time.localtime(latch.at))}"
            estop += f" ({latch.reason})" if latch.reason else ""
        return {
            "driver": None if driver is None else self._label(driver),
            "clients": len(self._sessions),
            "command": self.safety.command,
            "command_age": None if self._last_command_at is None else now - self._last_command_at,
            "estop": estop,
        }

    def _measure_lag(self, due: float) -> None:
        now = self.clock()
        self.stats.loop_lag.observe(max(0.0, now - due))
        loop = self._loop
        if loop is not None and self.state in (ServerState.RUNNING, ServerState.STARTING):
            self._lag_timer = loop.call_at(now + _LAG_PERIOD, self._measure_lag, now + _LAG_PERIOD)

    # -- rejections ---------------------------------------------------------

    def _count_reject(self, session: _Session, reason: str, detail: str) -> None:
        self.stats.rejects[reason] += 1
        session.rejects += 1
        now = self.clock()
        if self.observer is not None:
            self.observer.on_refusal(session.label, reason, detail, now)
        suppressed = session.complaints.allow(reason, now)
        if suppressed is not None:
            more = f" (+{suppressed} more since last logged)" if suppressed else ""
            # The detail may quote what the client sent (an entity_path): escaped, one line.
            log.warning("client %s: rejected %s: %s%s", session.label, reason, clean(detail, 300), more)

    def _refused(self, session: _Session, refusal: Refusal) -> None:
        self._count_reject(session, refusal.reason, refusal.detail)
        if refusal.tell:
            transport = session.writable()
            if transport is not None:
                transport.send(_TEXT, refusal.frame)


def _tls_context(config: BridgeConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert or "", config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {config.tls_cert!r} / key {config.tls_key!r}: {exc}"
        ) from None
    return context


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def interface_addresses() -> list[str]:
    """IPv4 addresses of this host's interfaces, loopback first, for the start banner."""
    addresses: list[str] = ["127.0.0.1"]
    try:
        import fcntl
        import struct

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
                except OSError:
                    continue
                address = socket.inet_ntoa(packed[20:24])
                if address not in addresses:
                    addresses.append(address)
    except (OSError, ImportError):  # pragma: no cover - non-Linux
        pass
    return addresses

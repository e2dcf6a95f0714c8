"""The asyncio bridge server: WebSocket and HTTP I/O around the pure protocol and safety cores.

One event loop owns everything: picows parses WebSocket frames and calls
:class:`_Session` for each, the session hands the payload to
:func:`~viewer_bridge.core.protocol.parse_message`, the resulting event goes
through :class:`~viewer_bridge.core.safety.SafetyController`, and its outcome is
published synchronously to the streams (in-process subscribers, then bus
transports). Doing all of it inline on the loop is what keeps one client's
messages in order and costs no queue or thread hop per message; a subscriber
therefore runs on the loop and delays other clients only for its own call.

HTTP on the same port answers before any upgrade: only the configured path
upgrades (with token, Origin and connection-cap checks), ``/healthz``,
``/metrics`` and ``/status`` report, ``/`` serves the browser page, and
anything else is a 404.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import logging
import math
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from viewer_bridge.bus.mux import MuxNode
from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports import Transport, TransportSink, create_transport
from viewer_bridge.config import BridgeConfig, ConfigError, from_mapping
from viewer_bridge.core.auth import check_origin, check_token, redact_target, split_target
from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist
from viewer_bridge.core.protocol import (
    Click,
    MessageAssembler,
    ProtocolError,
    Reason,
    Stop,
    TwistCommand,
    encode_error,
    parse_message,
)
from viewer_bridge.core.ratelimit import TokenBucket
from viewer_bridge.core.safety import Limits, SafetyController, StopCause
from viewer_bridge.core.topics import STREAM_TYPES, TopicMap
from viewer_bridge.server.metrics import BridgeStats, make_registry, render_metrics
from viewer_bridge.version import __version__

__all__ = ["AsyncRerunWebSocketServer", "BindError"]

log = logging.getLogger(__name__)

# Error frames are dropped rather than queued once this much is waiting to be
# written to a client that does not read (a flooding client must not make the
# bridge buffer without bound).
_MAX_PENDING_WRITE: Final = 64 * 1024
# The same complaint about the same client is logged at most this often.
_LOG_REPEAT_INTERVAL: Final = 10.0
_ZERO_TWIST: Final = Twist.zero()
_SAFETY_REJECTIONS: Final = {
    "non_finite": "twist has a non-finite component; numbers must be finite",
    "not_driver": "another client is driving; wait for it to stop (or send 'stop')",
}
# How long stop() waits for clients to finish the close handshake.
_CLOSE_GRACE: Final = 1.0


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


_TEXT: Final = WSMsgType.TEXT


class _Session(WSListener):
    """One WebSocket client. All methods run on the server's event loop."""

    def __init__(self, server: AsyncRerunWebSocketServer, peer: str, client_id: str, now: float) -> None:
        super().__init__()
        self.server = server
        self.peer = peer
        self.id = client_id
        self.label = f"{peer} #{client_id}"
        self.transport: WSTransport | None = None
        self.connected_wall = time.time()
        self.frames = 0
        self.rejects = 0
        self.bucket = TokenBucket(server.config.rate_limit, server.config.rate_burst, now)
        self.assembler: MessageAssembler | None = None
        self.logged: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}
        self.rate_limited_told = -math.inf
        self.handle = server._handle_message
        self.max_size = server.config.max_message_size
        self.closing = False

    # picows callbacks ------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.server._session_opened(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The common case first, in one test: a whole text message of an
        # allowed size on an open connection.
        if (
            frame.msg_type is _TEXT
            and frame.fin
            and self.assembler is None
            and not self.closing
            and frame.payload_size <= self.max_size
        ):
            self.handle(self, frame.get_payload_as_bytes())
        else:
            self._other_frame(transport, frame)

    def _other_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if self.closing:
            # After our close frame the peer's input is moot; its close frame
            # completes the handshake.
            if msg_type is WSMsgType.CLOSE:
                transport.disconnect()
        elif msg_type is WSMsgType.TEXT and frame.fin and self.assembler is None:
            # picows flags an oversized frame but still delivers it, so the
            # limit is enforced here too.
            self._too_big(self._size_detail(frame.payload_size))
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
        elif msg_type is WSMsgType.PING or msg_type is WSMsgType.PONG:
            pass  # picows answers pings itself and tracks pongs for its keepalive
        else:
            self._fragment(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.server._session_closed(self)

    # ---------------------------------------------------------------------

    def _size_detail(self, size: int) -> str:
        return f"message of {size} bytes exceeds the {self.max_size}-byte limit"

    def _too_big(self, detail: str) -> None:
        self.server._count_reject(self, Reason.MESSAGE_TOO_BIG, detail)
        self.close(WSCloseCode.MESSAGE_TOO_BIG, detail)

    def _fragment(self, frame: WSFrame) -> None:
        if frame.payload_size > self.max_size:
            self._too_big(self._size_detail(frame.payload_size))
            return
        if self.assembler is None:
            self.assembler = MessageAssembler(self.server.config.max_message_size)
        try:
            message = self.assembler.feed(frame.msg_type.value, frame.fin, frame.get_payload_as_bytes())
        except ProtocolError as exc:
            if exc.reason == Reason.MESSAGE_TOO_BIG:
                self._too_big(exc.detail)
            else:
                self.server._reject(self, exc.reason, exc.detail, exc.field)
            return
        finally:
            # Between fragmented messages, text frames take the fast path again.
            if self.assembler is not None and not self.assembler.in_message:
                self.assembler = None
        if message is not None:
            self.handle(self, message)

    def send_frame(self, payload: bytes) -> bool:
        """Send a text frame unless the client has stopped reading; returns whether it was sent."""
        transport = self.transport
        if transport is None or transport.is_close_frame_sent:
            return False
        if transport.underlying_transport.get_write_buffer_size() > _MAX_PENDING_WRITE:
            return False
        transport.send(WSMsgType.TEXT, payload)
        return True

    def close(self, code: WSCloseCode, reason: str = "") -> None:
        """Start the closing handshake; the TCP connection ends when the peer answers, or after a grace period.

        Dropping TCP at once while the peer's data is still unread makes the
        kernel send a reset, which can destroy our close frame before the peer
        reads it (RFC 6455 section 7.1.1 has the server wait for the answer).
        """
        self.closing = True
        transport = self.transport
        if transport is None:
            return
        if not transport.is_close_frame_sent:
            transport.send_close(code, reason.encode("utf-8")[:120])
        asyncio.get_running_loop().call_later(_CLOSE_GRACE, transport.disconnect)

    def status(self, driver: object) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.peer,
            "since": self.connected_wall,
            "frames": self.frames,
            "rejects": self.rejects,
            "driver": driver == self.id,
        }


class AsyncRerunWebSocketServer:
    """The bridge server for asyncio programs.

    ``AsyncRerunWebSocketServer(port=0)`` or ``AsyncRerunWebSocketServer(config)``;
    then ``await start()`` / ``await stop()``, or ``async with``. Streams
    (``clicked_point``, ``tele_cmd_vel``, ``stop_movement``) exist from
    construction, so subscribe before starting to miss nothing. Subscribers
    run on this server's event loop.
    """

    def __init__(self, config: BridgeConfig | None = None, /, **settings: Any) -> None:
        if config is None:
            config = from_mapping(settings, source="arguments")
        elif settings:
            config = config.replace(**settings)
        self.config = config
        self.topics = TopicMap(config.remap, config.namespace)
        self.clicked_point: Stream[PointStamped] = Stream("clicked_point", PointStamped)
        self.tele_cmd_vel: Stream[Twist] = Stream("tele_cmd_vel", Twist)
        self.stop_movement: Stream[Bool] = Stream("stop_movement", Bool)
        self.streams: dict[str, Stream[Any]] = {
            "clicked_point": self.clicked_point,
            "tele_cmd_vel": self.tele_cmd_vel,
            "stop_movement": self.stop_movement,
        }
        assert set(self.streams) == set(STREAM_TYPES)
        self.safety = SafetyController(
            self._emit,
            on_event=self._safety_event,
            deadman_timeout=config.deadman_timeout,
            republish_hz=config.republish_hz,
            limits=Limits(
                scale=(
                    config.scale_linear_x,
                    config.scale_linear_y,
                    config.scale_linear_z,
                    config.scale_angular_x,
                    config.scale_angular_y,
                    config.scale_angular_z,
                ),
                clamp=(
                    config.max_linear_x,
                    config.max_linear_y,
                    config.max_linear_z,
                    config.max_angular_x,
                    config.max_angular_y,
                    config.max_angular_z,
                ),
            ),
        )
        self.stats = BridgeStats()
        self.registry = make_registry(self.stats, self.safety, self._transport_counts)
        self.wall_clock: Callable[[], float] = time.time
        self.transports: list[Transport] = []
        # The optional cmd_vel mux (--mux): exists from construction so its streams can be subscribed early.
        self.mux: MuxNode | None = None
        if config.mux is not None:
            self.mux = MuxNode.from_config(config, self.topics, self.tele_cmd_vel, self.stop_movement)
        self._sinks: list[TransportSink] = []
        self._unsubscribe_sinks: list[Callable[[], None]] = []
        self._token: str | None = None
        self._ssl: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._clock: Callable[[], float] = time.monotonic
        self._started_at = 0.0
        self._last_command_at: float | None = None  # monotonic time of the last tele_cmd_vel
        self._state = "stopped"
        # (path, request headers) -> (body, response headers); see viewer_bridge.server.web.StaticFiles.respond
        self._static: Callable[[str, Any], tuple[bytes, dict[str, str]] | None] | None = None
        self.bound_port: int | None = None

    # -- lifecycle --------------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._state == "running"

    async def start(self) -> None:
        """Bind and listen. Returns once connections are accepted.

        Raises :class:`BindError` (naming host:port) if the address cannot be
        bound, :class:`ConfigError` for an unsafe or invalid setup, and
        :class:`~viewer_bridge.bus.transports.TransportError` if a bus is unreachable.
        """
        if self._state != "stopped":
            return
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            await self._teardown()
            self._state = "stopped"
            raise
        self._state = "running"

    async def _start(self) -> None:
        config = self.config
        self._loop = asyncio.get_running_loop()
        self._token = config.resolved_token()
        if not config.is_loopback and not self._token and not config.insecure:
            raise ConfigError(
                f"refusing to listen on {config.host}:{config.port} without a token: anyone who can reach "
                "that address could drive the robot. Set a token (--token-file FILE, or the "
                "VIEWER_BRIDGE_TOKEN environment variable) and give clients ws://HOST:PORT/ws?token=..., "
                "or pass --insecure to accept the risk."
            )
        if not config.is_loopback and not self._token:
            log.warning(
                "listening on %s without a token (--insecure): anyone who can reach this port can drive "
                "the robot",
                config.host,
            )
        if config.tls_cert and config.tls_key:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(config.tls_cert, config.tls_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"cannot load TLS certificate {config.tls_cert!r} / key {config.tls_key!r}: {exc}"
                ) from None
            self._ssl = context
        if config.web:
            from viewer_bridge.server.web import StaticFiles

            self._static = StaticFiles(config).respond
        for name in config.transports:
            transport = create_transport(name, config)
            transport.start()
            self.transports.append(transport)
            for topic in self.topics:
                sink = TransportSink(transport, topic)
                self._sinks.append(sink)
                self._unsubscribe_sinks.append(self.streams[topic.stream].subscribe(sink))
        if self.mux is not None:
            self.mux.start(self._loop, self.transports)
            self._sinks.extend(self.mux.sinks)
        try:
            self._server = await ws_create_server(
                self._route,
                config.host,
                config.port,
                ssl=self._ssl,
                websocket_handshake_timeout=10,
                logger_name="viewer_bridge.picows",
                enable_auto_ping=True,
                auto_ping_idle_timeout=config.ping_interval,
                auto_ping_reply_timeout=config.ping_timeout,
                auto_ping_strategy=WSAutoPingStrategy.PING_WHEN_IDLE,
                max_frame_size=config.max_message_size,
                # Viewer messages are ~200 bytes; picows's 16 KiB default read
                # buffer per connection would dominate idle memory (it grows on
                # demand for larger messages and bursts).
                read_buffer_init_size=4096,
                # asyncio's own transports: picows's optional aiofastnet layer
                # measured no faster here per message and took ~5 KB more
                # memory per idle connection (see docs/performance.md).
                use_aiofastnet=False,
                reuse_address=True,
            )
        except OSError as exc:
            raise BindError(exc.errno, _bind_failure(config.host, config.port, exc)) from None
        sockets = self._server.sockets
        self.bound_port = sockets[0].getsockname()[1] if sockets else config.port
        self._started_at = time.monotonic()
        log.info("listening on %s", self.websocket_url())

    async def stop(self) -> None:
        """Close every client (1001 Going Away), stop whoever was driving, and stop listening.

        Idempotent, and safe before or after start.
        """
        if self._state in ("stopped", "stopping"):
            return
        self._state = "stopping"
        try:
            await self._teardown()
        finally:
            self._state = "stopped"

    async def _teardown(self) -> None:
        if self._server is not None:
            self._server.close()
        loop = self._loop
        if loop is not None:
            self.safety.shutdown(self._clock())
        sessions = list(self._sessions.values())
        for session in sessions:
            session.close(WSCloseCode.GOING_AWAY, "server shutting down")
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.mux is not None:
            self.mux.stop()
        for unsubscribe in self._unsubscribe_sinks:
            unsubscribe()
        self._unsubscribe_sinks.clear()
        self._sinks.clear()
        for transport in self.transports:
            try:
                transport.close()
            except Exception:
                log.exception("closing the %s transport failed", transport.name)
        self.transports.clear()
        self._sessions.clear()
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

    # -- HTTP routing (runs before any upgrade) ---------------------------

    def _route(self, request: WSUpgradeRequest) -> Any:
        try:
            target = request.path.decode("latin-1")
        except Exception:  # pragma: no cover - picows gives bytes
            target = "/"
        path, query = split_target(target)
        headers = request.headers
        if path == self.config.path:
            if not check_token(self._token, query, headers):
                return self._refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if not check_origin(
                headers.get("origin"), headers.get("host"), self.config.allowed_origins, self._ssl is not None
            ):
                return self._refuse(403, f"origin {headers.get('origin')!r} is not allowed", target)
            if len(self._sessions) >= self.config.max_connections:
                return self._refuse(
                    503, f"connection limit reached ({self.config.max_connections})", target, {"Retry-After": "1"}
                )
            loop = self._loop
            assert loop is not None
            client_id = f"{next(self._ids):04x}"
            return _Session(self, "?", client_id, self._clock())
        if path in ("/healthz", "/metrics", "/status"):
            if not check_token(self._token, query, headers):
                return self._refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if path == "/metrics":
                return _ok(render_metrics(self.registry), "text/plain; version=0.0.4; charset=utf-8")
            if path == "/healthz":
                return _ok(_json(self.health()), "application/json")
            return _ok(_json(self.client_status()), "application/json")
        if self._static is not None:
            found = self._static(path, headers)
            if found is not None:
                body, response_headers = found
                return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(body, response_headers), None)
        return self._refuse(404, f"nothing at {path}; the viewer endpoint is {self.config.path}", target)

    def _refuse(self, status: int, why: str, target: str, headers: dict[str, str] | None = None) -> Any:
        self.stats.http_refused[status] += 1
        log.info("HTTP %d for %s: %s", status, redact_target(target), why)
        body = _json({"type": "error", "status": status, "reason": why})
        extra = {"Content-Type": "application/json", **(headers or {})}
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, body, extra), None)

    def health(self) -> dict[str, Any]:
        age = None if self._last_command_at is None else round(self._clock() - self._last_command_at, 6)
        return {
            "up": self.is_running,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self.is_running else 0.0,
            "clients": len(self._sessions),
            "driver": self.safety.driver,
            "last_command_age_s": age,
        }

    def client_status(self) -> list[dict[str, Any]]:
        driver = self.safety.driver
        return [session.status(driver) for session in self._sessions.values()]

    # -- sessions ---------------------------------------------------------

    def _session_opened(self, session: _Session) -> None:
        transport = session.transport
        assert transport is not None
        peer = transport.underlying_transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            session.peer = f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
            session.label = f"{session.peer} #{session.id}"
        self._sessions[session.id] = session
        self.stats.connections_total += 1
        self.stats.connections_open = len(self._sessions)
        log.info("client %s connected (%d open)", session.label, len(self._sessions))

    def _session_closed(self, session: _Session) -> None:
        if self._sessions.pop(session.id, None) is None:
            return
        self.stats.connections_open = len(self._sessions)
        loop = self._loop
        if loop is not None:
            now = self._clock()
            self.safety.disconnect(session.id, now)
        close = session.transport.close_handshake if session.transport is not None else None
        received = close.recv if close is not None else None
        how = f"close code {received.code.value}" if received is not None else "no close frame"
        log.info("client %s disconnected (%s; %d frames)", session.label, how, session.frames)

    # -- the per-message path ---------------------------------------------

    def _handle_message(self, session: _Session, payload: bytes) -> None:
        # The hot path: twists arrive at key-repeat or frame rate from every
        # driver, so they are tested first and handled with the fewest calls.
        clock = self._clock
        now = clock()
        session.frames += 1
        try:
            event = parse_message(payload)
        except ProtocolError as exc:
            self._reject(session, exc.reason, exc.detail, exc.field)
            return
        kind = type(event)
        stats = self.stats
        if kind is TwistCommand:
            if not session.bucket.allow(now):
                self._rate_limited(session, now)
                return
            stats.frames["twist"] += 1
            rejected = self.safety.twist(session.id, event.to_twist(), now)  # type: ignore[union-attr]
            if rejected is not None:
                self._reject(session, rejected, _SAFETY_REJECTIONS[rejected])
                return
            if self._timer is None:
                self._arm()
            self._last_command_at = now
            stats.observe_latency(clock() - now)
        elif kind is Stop:
            # Never rate-limited: a stop must get through a flood.
            stats.frames["stop"] += 1
            self.safety.stop(session.id, now)
            stats.observe_latency(clock() - now)
        elif not session.bucket.allow(now):
            self._rate_limited(session, now)
        elif kind is Click:
            stats.frames["click"] += 1
            assert isinstance(event, Click)
            if event.z is None:
                self._reject(
                    session,
                    Reason.CLICK_NOT_3D,
                    f"click at ({event.x}, {event.y}) on {event.entity_path or 'an entity'} has no z: it came "
                    "from a 2D view and is not a point in the world, so it was not published",
                    "z",
                )
                return
            ts = event.timestamp_ms / 1000.0 if event.timestamp_ms else self.wall_clock()
            self._emit("clicked_point", PointStamped(event.x, event.y, event.z, ts, self.config.frame_id))
            stats.observe_latency(clock() - now)
        else:
            stats.frames["heartbeat"] += 1

    def _emit(self, stream: str, message: Message) -> None:
        """Publish to in-process subscribers (and, through them, the bus transports)."""
        self.streams[stream].publish(message)
        self.stats.published[stream] += 1
        if message is _ZERO_TWIST:
            # Zeros come from stops, disconnects and timers; a twist's time is
            # recorded by the caller, which already read the clock.
            self._last_command_at = self._clock()

    def _safety_event(self, kind: str, client: object) -> None:
        session = self._sessions.get(client) if isinstance(client, str) else None
        who = session.label if session is not None else f"#{client}"
        if kind == "lease":
            log.info("client %s is now driving", who)
        elif kind in (StopCause.DEADMAN, StopCause.DISCONNECT, StopCause.SHUTDOWN):
            log.warning("published a zero twist: %s (driver was %s)", kind, who)

    def _arm(self) -> None:
        # The timer is armed lazily: each twist only moves the deadline later,
        # so instead of re-arming per message, a timer that fires early finds
        # nothing due and re-arms for the new deadline.
        deadline = self.safety.next_deadline()
        loop = self._loop
        if deadline is None or loop is None or self._state not in ("running", "starting"):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.safety.tick(self._clock())
        self._arm()

    # -- rejections ---------------------------------------------------------

    def _count_reject(self, session: _Session, reason: str, detail: str) -> None:
        self.stats.rejects[reason] += 1
        session.rejects += 1
        now = time.monotonic()
        last = session.logged.get(reason)
        if last is None or now - last >= _LOG_REPEAT_INTERVAL:
            suppressed = session.suppressed.pop(reason, 0)
            more = f" (+{suppressed} more since last logged)" if suppressed else ""
            log.warning("client %s: rejected %s: %s%s", session.label, reason, detail, more)
            session.logged[reason] = now
        else:
            session.suppressed[reason] = session.suppressed.get(reason, 0) + 1

    def _reject(self, session: _Session, reason: str, detail: str, field: str | None = None) -> None:
        self._count_reject(session, reason, detail)
        session.send_frame(encode_error(reason, detail, field))

    def _rate_limited(self, session: _Session, now: float) -> None:
        detail = (
            f"more than {self.config.rate_limit:g} messages/s (burst {self.config.rate_burst:g}); "
            "excess messages are dropped"
        )
        self._count_reject(session, Reason.RATE_LIMITED, detail)
        # Tell a flooding client once a second, not once per dropped message.
        if now - session.rate_limited_told >= 1.0:
            session.rate_limited_told = now
            session.send_frame(encode_error(Reason.RATE_LIMITED, detail))

    def _transport_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {(s.topic.stream, s.transport.name): (s.published, s.failures) for s in list(self._sinks)}


def _ok(body: bytes, content_type: str) -> Any:
    response = WSUpgradeResponse.create_ok_response(
        body, {"Content-Type": content_type, "Cache-Control": "no-store"}
    )
    return WSUpgradeResponseWithListener(response, None)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


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

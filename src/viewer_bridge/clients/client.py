"""Python clients for the bridge: :class:`AsyncViewerClient` (asyncio) and :class:`ViewerClient` (blocking).

Both speak the viewer protocol (docs/protocol.md): ``click``, ``twist``, ``stop``
and ``heartbeat`` as JSON text frames, plus this project's ``estop`` and
``estop_clear``; each is encoded from the protocol's own Structs
(:mod:`viewer_bridge.core.protocol`), the types the bridge decodes. Example::

    from viewer_bridge.clients.client import ViewerClient

    with ViewerClient("ws://127.0.0.1:3030/ws", token="...") as robot:
        robot.twist(linear_x=0.5)
        robot.stop()
        robot.sync()  # raises ServerError if the bridge refused anything sent so far

Knowing whether a message was accepted. The bridge answers only bad
messages, with ``{"type":"error","reason":...}``; a good one gets no reply.
It handles one connection's frames in order and writes an error frame before
it reads the next frame, so an error caused by a message always arrives
before the bridge's answer to anything sent after it. Two such answers serve
as barriers here: a WebSocket ping (its pong, RFC 6455 section 5.5.3) in
:meth:`~AsyncViewerClient.sync`, and the close handshake (section 5.5.1) in
:meth:`~AsyncViewerClient.close`. Once either answer is in, every error for
the messages before it has been received: no guessed grace period. Between
barriers, errors go to the ``on_error`` callback if one is given; otherwise
they are kept and raised by the next ``sync()`` or ``close()``. Sends never
raise a server's error, so a ``stop`` is never blocked by an old complaint.

Status. The bridge sends each client a ``status`` frame on connect and
whenever it changes (at most 10 a second): who drives, the command in force
after the limits, the e-stop, this client's round trip and speed factor. The
latest is :attr:`~AsyncViewerClient.status` (``None`` until the first arrives
and while disconnected); ``on_status`` gets each one as it arrives, and
:meth:`~AsyncViewerClient.wait_status` waits for one that matches.

Stale commands. Every twist carries ``timestamp_ms``, the wall clock when it
was sent, so the bridge can refuse one that spent too long on its way
(``stale``); the bridge compares it with the link's best delivery, so the two
clocks need not agree.

Reconnecting. With ``reconnect=True`` (the default) a lost connection is
redialled in the background with exponential backoff and jitter (unlike the
viewer's fixed 1 s, so a fleet of clients does not hammer a restarting
bridge in step); a refusal that says when to come back (``Retry-After``, as
the bridge's 429 and 503 do) is waited out, up to a minute. Messages sent
while disconnected raise :class:`NotConnected`; nothing is queued, because a
velocity command delivered late is worse than none (the viewer's 256-message
queue can replay keys pressed a second before the bridge came back).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import os
import random
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import msgspec
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from viewer_bridge.core.logsafe import redact_target
from viewer_bridge.core.protocol import (
    MAX_REASON,
    Click,
    ErrorFrame,
    Estop,
    EstopClear,
    Heartbeat,
    Status,
    Stop,
    TwistCommand,
    decode_server_frame,
)

__all__ = [
    "DEFAULT_URL",
    "AsyncViewerClient",
    "Backoff",
    "ClientError",
    "ConnectError",
    "ConnectionState",
    "NotConnected",
    "ServerError",
    "Status",
    "ViewerClient",
]

log = logging.getLogger(__name__)

DEFAULT_URL: Final = "ws://127.0.0.1:3030/ws"
# Real messages are ~200 bytes and error frames a few hundred; anything near
# this from a bridge is a bug, and the cap bounds what a bad peer can make us buffer.
_MAX_INCOMING: Final = 1 << 20
# A bridge's Retry-After is waited out up to this many seconds: a bigger one is a misconfiguration,
# and asking again costs the bridge a cheap refusal.
_MAX_RETRY_AFTER: Final = 60.0
# Server errors kept for `errors` (history) when nobody reads them.
_ERROR_HISTORY: Final = 100

T = TypeVar("T")
V = TypeVar("V")


class ClientError(Exception):
    """Base class of every error this module raises on purpose."""


class ServerError(ClientError):
    """The bridge refused a message: its ``{"type":"error"}`` frame as an exception.

    ``reason`` is one of :class:`viewer_bridge.core.protocol.Reason` (e.g.
    ``not_driver``, ``rate_limited``, ``invalid_field``); ``detail`` is the
    bridge's explanation; ``field`` names the offending field, if any;
    ``frame`` is the whole decoded frame. ``more`` holds further errors that
    arrived before the same barrier.
    """

    def __init__(self, reason: str, detail: str = "", field: str | None = None, frame: dict[str, Any] | None = None):
        text = f"{reason}: {detail}" if detail else reason
        super().__init__(text if field is None else f"{text} (field {field!r})")
        self.reason = reason
        self.detail = detail
        self.field = field
        self.frame: dict[str, Any] = frame if frame is not None else {"type": "error", "reason": reason}
        self.more: list[ServerError] = []

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> ServerError:
        field = frame.get("field")
        return cls(
            str(frame.get("reason", "unknown")),
            str(frame.get("detail", "")),
            field if isinstance(field, str) else None,
            frame,
        )

    @classmethod
    def from_error_frame(cls, frame: ErrorFrame) -> ServerError:
        return cls(frame.reason, frame.detail, frame.field, msgspec.to_builtins(frame))


class ConnectError(ClientError):
    """The connection could not be opened. ``status`` is the HTTP status when the bridge refused
    the upgrade (401 wrong or missing token, 403 Origin, 404 wrong path, 429 too many new connections
    from this address, 503 full), else ``None``; ``retry_after`` the seconds its ``Retry-After`` asked for."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class NotConnected(ClientError):
    """A message was not sent because there is no open connection (it was not queued either)."""


class ConnectionState(enum.Enum):
    """Where the client's connection stands; reported to ``on_state``."""

    IDLE = "idle"  # constructed, connect() not called yet
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost; waiting for the next reconnect attempt
    CLOSED = "closed"  # closed by us, or lost with reconnect=False: final


class Backoff:
    """Reconnect delays: ``initial``, doubling each failure up to ``maximum``, less up to ``jitter`` of each.

    ``random`` is injectable so the sequence can be tested exactly.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 10.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        random: Callable[[], float] = random.random,
    ) -> None:
        if not (0 < initial <= maximum and factor >= 1 and 0 <= jitter < 1):
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1 and 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._random = random
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        # Jitter only shortens, so `maximum` is a true bound.
        return delay * (1.0 - self.jitter * self._random())

    def reset(self) -> None:
        self._next = self.initial


def make_ssl_context(cafile: str | None = None, verify: bool = True) -> ssl_module.SSLContext:
    """A client TLS context: system CAs plus ``cafile``; ``verify=False`` accepts any certificate (unsafe)."""
    context = ssl_module.create_default_context(cafile=cafile)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index(":") :]


def redact_url(url: str) -> str:
    """``url`` with its query and fragment values hidden (the bridge's one redaction rule), for messages."""
    parts = urlsplit(url)
    if not parts.query and not parts.fragment:
        return url
    head = f"{parts.scheme}://{parts.netloc}" if parts.scheme else parts.netloc
    return head + redact_target(url[len(head) :])


def _finite(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        # The bridge would refuse it (non_finite); say so before it leaves.
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


_encoder: Final = msgspec.json.Encoder()
# Encoded once: they never change.
_STOP: Final = _encoder.encode(Stop()).decode()
_ESTOP_CLEAR: Final = _encoder.encode(EstopClear()).decode()


def _now_ms() -> int:
    """The wall clock in epoch milliseconds, as the viewer stamps its messages."""
    return int(time.time() * 1000)


class AsyncViewerClient:
    """A bridge client for asyncio programs.

    ``url`` is the bridge's WebSocket URL (``ws://`` or ``wss://``; a
    ``?token=`` in it is sent as is). ``token`` is sent as
    ``Authorization: Bearer``, which keeps it out of URLs and logs. For
    ``wss://``, pass ``ssl`` (a context) or ``cafile``/``verify``.
    ``on_error(ServerError)``, ``on_state(ConnectionState)`` and
    ``on_status(Status)`` run on the event loop and must not block.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        cafile: str | None = None,
        verify: bool = True,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        open_timeout: float = 5.0,
        close_timeout: float = 5.0,
        on_error: Callable[[ServerError], object] | None = None,
        on_state: Callable[[ConnectionState], object] | None = None,
        on_status: Callable[[Status], object] | None = None,
    ) -> None:
        try:
            secure = parse_uri(url).secure
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL (ws://HOST:PORT/ws or wss://...): {url!r}") from exc
        except ValueError as exc:  # what urllib finds wrong inside one: a port out of range, a broken IPv6 address
            shown = url.split("?", 1)[0] + ("?..." if "?" in url else "")  # a query may hold the token
            raise ValueError(f"not a valid WebSocket URL ({exc}): {shown!r}") from exc
        self.url = url
        self.token = token
        if secure:
            self._ssl: ssl_module.SSLContext | None = ssl or make_ssl_context(cafile, verify)
        elif ssl is not None or cafile is not None:
            raise ValueError(f"TLS options were given but {redact_url(url)} is not a wss:// URL")
        else:
            self._ssl = None
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.on_error = on_error
        self.on_state = on_state
        self.on_status = on_status
        self.state = ConnectionState.IDLE
        # The bridge's latest status frame on this connection (None before the first, and while disconnected).
        self.status: Status | None = None
        self.errors: list[ServerError] = []  # every error frame received (the last 100)
        self.last_connect_error: ConnectError | None = None
        self._pending: list[ServerError] = []  # errors not yet raised or handed to on_error
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._state_waiters: list[asyncio.Future[None]] = []
        self._status_waiters: list[asyncio.Future[None]] = []

    # -- connection ---------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    @property
    def ssl(self) -> ssl_module.SSLContext | None:
        """The TLS context for a ``wss://`` URL (None for ``ws://``): the bridge's HTTP endpoints use it too."""
        return self._ssl

    async def connect(self) -> None:
        """Open the connection; raises :class:`ConnectError` if this first attempt fails.

        Afterwards a lost connection is redialled in the background (if ``reconnect``).
        """
        self._check_fresh()
        self._set_state(ConnectionState.CONNECTING)
        try:
            ws = await self._dial()
        except ConnectError:
            self._set_state(ConnectionState.CLOSED)
            raise
        self._attach(ws)
        self._runner = asyncio.get_running_loop().create_task(self._run(ws), name="viewer-client")

    def start(self) -> None:
        """Start connecting in the background and return at once; failures are retried with backoff.

        Progress is reported to ``on_state``; see also :meth:`wait_connected`.
        Needs a running event loop.
        """
        self._check_fresh()
        self._runner = asyncio.get_running_loop().create_task(self._run(None), name="viewer-client")

    def _check_fresh(self) -> None:
        if self._runner is not None or self._closing:
            raise RuntimeError("connect() or start() was already called on this client")

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is open; raises ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while self.state is not ConnectionState.CONNECTED:
                if self.state is ConnectionState.CLOSED:
                    raise NotConnected(f"the client for {redact_url(self.url)} is closed")
                changed = asyncio.get_running_loop().create_future()
                self._state_waiters.append(changed)
                await changed

    async def _dial(self) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        where = redact_url(self.url)
        dialing = ws_connect(
            self.url,
            additional_headers=headers,
            ssl=self._ssl,
            open_timeout=self.open_timeout,
            close_timeout=self.close_timeout,
            # The bridge (picows) negotiates no extension; don't offer one.
            compression=None,
            max_size=_MAX_INCOMING,
        )
        try:
            return await dialing
        except InvalidStatus as exc:
            response = exc.response
            why = _http_reason(response.body)
            # websockets follows redirects (without the token across origins): name where the refusal came from.
            final = redact_url(dialing.uri)
            refuser = where if final == where else f"{final} (redirected from {where})"
            error = ConnectError(
                f"the bridge at {refuser} refused the connection: HTTP {response.status_code}"
                + (f": {why}" if why else ""),
                status=response.status_code,
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        except ssl_module.SSLError as exc:
            hint = ""
            if exc.reason == "WRONG_VERSION_NUMBER":
                # The far end answered in plain text: a bridge without TLS.
                hint = f"; the bridge does not seem to serve TLS: use {_with_scheme(where, 'ws')}"
            error = ConnectError(f"TLS to {where} failed: {exc.reason or exc}{hint}")
        except TimeoutError:
            # A bridge without TLS waits for an HTTP request that a TLS hello never completes.
            hint = f"; if the bridge does not serve TLS, use {_with_scheme(where, 'ws')}" if self.url.startswith(
                "wss://") else ""
            error = ConnectError(f"no answer from {where} within {self.open_timeout:g} s{hint}")
        except OSError as exc:
            # asyncio's "Connect call failed (...)" hides the errno's meaning.
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            error = ConnectError(f"cannot connect to {where}: {why}")
        except InvalidHandshake as exc:
            hint = ""
            if self.url.startswith("ws://") and isinstance(exc, InvalidMessage):
                # A TLS server reads a plain-text request as a bad TLS record and hangs up.
                hint = f"; if the bridge serves TLS, use {_with_scheme(where, 'wss')}"
            error = ConnectError(f"WebSocket handshake with {where} failed: {exc}{hint}")
        self.last_connect_error = error
        raise error

    async def _run(self, ws: ClientConnection | None) -> None:
        """Read frames while connected, and redial after a loss. The one task that reads the socket."""
        try:
            while True:
                if ws is None:
                    ws = await self._redial()
                    if ws is None:
                        return
                    self._attach(ws)
                try:
                    async for message in ws:
                        self._on_message(message)
                except ConnectionClosed:
                    pass
                self._ws = None
                ws = None
                if self._closing or not self.reconnect:
                    return
                log.info("connection to %s lost; reconnecting", redact_url(self.url))
                self._set_state(ConnectionState.DISCONNECTED)
        finally:
            self._ws = None
            self._set_state(ConnectionState.CLOSED)

    def _attach(self, ws: ClientConnection) -> None:
        self._ws = ws
        self.backoff.reset()
        self._set_state(ConnectionState.CONNECTED)

    async def _redial(self) -> ClientConnection | None:
        first = self.state is ConnectionState.IDLE
        asked = 0.0  # what the last refusal's Retry-After asked for
        while not self._closing:
            if not first:
                self._set_state(ConnectionState.DISCONNECTED)
                await asyncio.sleep(max(self.backoff.next_delay(), asked))
                if self._closing:
                    return None
            first = False
            self._set_state(ConnectionState.CONNECTING)
            try:
                return await self._dial()
            except ConnectError as exc:
                asked = exc.retry_after or 0.0
                log.debug("%s", exc)
        return None

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is not ConnectionState.CONNECTED:
            # What the bridge said applied to that connection; a new one gets its own status at once.
            self.status = None
        waiters, self._state_waiters = self._state_waiters, []
        _notify(waiters, self.on_state, state, "on_state")

    def _on_message(self, message: str | bytes) -> None:
        try:
            frame = decode_server_frame(message)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A newer bridge may send frames this client does not know: not an error.
            log.debug("ignoring a frame from the bridge (%s): %r", exc, message[:80])
            return
        if isinstance(frame, Status):
            self._on_status(frame)
            return
        error = ServerError.from_error_frame(frame)
        self.errors.append(error)
        del self.errors[:-_ERROR_HISTORY]
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                log.exception("on_error callback raised")
        else:
            self._pending.append(error)
            del self._pending[:-_ERROR_HISTORY]

    def _on_status(self, status: Status) -> None:
        self.status = status
        waiters, self._status_waiters = self._status_waiters, []
        _notify(waiters, self.on_status, status, "on_status")

    async def wait_status(
        self, predicate: Callable[[Status], object] = lambda status: True, timeout: float | None = None
    ) -> Status:
        """The latest status once ``predicate(status)`` holds for it (checked on each new frame).

        Raises ``TimeoutError`` after ``timeout`` seconds, :class:`NotConnected` if the client closes.
        """
        async with asyncio.timeout(timeout):
            while True:
                status = self.status
                if status is not None and predicate(status):
                    return status
                if self.state is ConnectionState.CLOSED:
                    raise NotConnected(f"the client for {redact_url(self.url)} is closed")
                changed = asyncio.get_running_loop().create_future()
                self._status_waiters.append(changed)
                self._state_waiters.append(changed)
                await changed

    def _raise_pending(self) -> None:
        if not self._pending:
            return
        first, *more = self._pending
        self._pending = []
        first.more = more
        raise first

    async def sync(self, timeout: float = 5.0) -> None:
        """Wait until the bridge has handled everything sent so far; raise the first error it reported.

        A ping barrier: the bridge answers the ping only after it has handled
        (and answered) every earlier frame. Raises :class:`ServerError` (with
        later ones in ``.more``) unless ``on_error`` takes errors,
        :class:`NotConnected` if the connection is down or drops meanwhile,
        and ``TimeoutError`` after ``timeout`` seconds.
        """
        ws = self._require_ws()
        try:
            pong = await ws.ping()
            await asyncio.wait_for(pong, timeout)
        except ConnectionClosed as exc:
            raise NotConnected(f"the connection to {redact_url(self.url)} closed before the bridge answered") from exc
        # The frames that preceded the pong were queued before it, and the
        # reader task was woken for them first; one more turn of the loop
        # lets it finish handing them over.
        await asyncio.sleep(0)
        self._raise_pending()

    async def close(self) -> bool:
        """Close the connection with the close handshake and stop reconnecting. Idempotent.

        Returns True when the bridge answered the handshake, which means it
        handled every message sent before and any error for them has been
        received; False when the connection was already gone or dropped. Then
        raises the first error not yet reported (see :meth:`sync`).
        """
        self._closing = True
        confirmed = False
        ws = self._ws
        runner = self._runner
        if ws is not None:
            await ws.close()
            protocol = ws.protocol
            # We sent the first close frame and the bridge answered it: nothing
            # we sent was cut off by a close of the bridge's own.
            confirmed = protocol.close_rcvd is not None and protocol.close_rcvd_then_sent is False
        if runner is not None:
            if ws is None:
                runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                if not runner.cancelled():
                    raise
        self._set_state(ConnectionState.CLOSED)
        self._raise_pending()
        return confirmed

    async def __aenter__(self) -> AsyncViewerClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- messages -------------------------------------------------------------

    def _require_ws(self) -> ClientConnection:
        ws = self._ws
        if ws is None or self.state is not ConnectionState.CONNECTED:
            raise NotConnected(f"not connected to {redact_url(self.url)} ({self.state.value}); nothing was sent")
        return ws

    async def send_raw(self, message: str | dict[str, Any]) -> None:
        """Send one text frame as is (a dict is JSON-encoded): for messages the typed methods don't make."""
        await self._send_text(message if isinstance(message, str) else _encode(message))

    async def _send_text(self, text: str) -> None:
        ws = self._require_ws()
        try:
            await ws.send(text)
        except ConnectionClosed as exc:
            raise NotConnected(f"the connection to {redact_url(self.url)} closed; nothing was sent") from exc

    async def _send_struct(self, message: msgspec.Struct) -> None:
        await self._send_text(_encoder.encode(message).decode())

    async def click(self, x: float, y: float, z: float, entity_path: str = "", timestamp_ms: int | None = None) -> None:
        """A click on a world point, published by the bridge as ``clicked_point``.

        ``timestamp_ms`` defaults to now (epoch milliseconds), as the viewer sends.
        """
        await self._send_struct(
            Click(
                _finite("x", x),
                _finite("y", y),
                _finite("z", z),
                str(entity_path),
                int(_now_ms() if timestamp_ms is None else timestamp_ms),
            )
        )

    async def twist(
        self,
        linear_x: float = 0.0,
        linear_y: float = 0.0,
        linear_z: float = 0.0,
        angular_x: float = 0.0,
        angular_y: float = 0.0,
        angular_z: float = 0.0,
        timestamp_ms: int | None = None,
    ) -> None:
        """A velocity command (m/s, rad/s). The bridge stops the robot if it is not refreshed within
        its deadman timeout (1 s by default), so re-send it while you mean it.

        ``timestamp_ms`` (default now, epoch milliseconds) lets the bridge refuse
        the command as ``stale`` if it took too long to arrive.
        """
        await self._send_struct(
            TwistCommand(
                _finite("linear_x", linear_x),
                _finite("linear_y", linear_y),
                _finite("linear_z", linear_z),
                _finite("angular_x", angular_x),
                _finite("angular_y", angular_y),
                _finite("angular_z", angular_z),
                int(_now_ms() if timestamp_ms is None else timestamp_ms),
            )
        )

    async def stop(self) -> None:
        """Stop now: the bridge publishes one zero twist, whoever is driving or nobody (anyone may stop).

        A driver stopped by someone else must let go (``stop``, a zero twist,
        or silence) before it may drive again.
        """
        await self._send_text(_STOP)

    async def estop(self, reason: str | None = None) -> None:
        """Latch the bridge's emergency stop: one zero now, and every twist and click refused
        (``estopped``) until someone sends :meth:`estop_clear`, across disconnects (and bridge
        restarts with ``estop_state_file``). ``reason`` is shown to every operator; past
        ``MAX_REASON`` (200) characters it is cut, never a reason not to stop.
        """
        if reason is not None:
            reason = str(reason)
            if len(reason) > MAX_REASON:
                reason = reason[: MAX_REASON - 1] + "\u2026"
        await self._send_struct(Estop(reason))

    async def estop_clear(self) -> None:
        """Release a latched e-stop. Whoever was driving when it latched must let go before driving again."""
        await self._send_text(_ESTOP_CLEAR)

    async def heartbeat(self, timestamp_ms: int | None = None) -> None:
        """Liveness only; the bridge publishes nothing for it."""
        await self._send_struct(Heartbeat(int(_now_ms() if timestamp_ms is None else timestamp_ms)))


def _retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (RFC 9110 10.2.3), at most a minute; None if absent or a date."""
    seconds = (value or "").strip()
    if not (seconds.isascii() and seconds.isdigit()):
        return None
    return min(float(seconds), _MAX_RETRY_AFTER)


def _notify(
    waiters: list[asyncio.Future[None]], callback: Callable[[V], object] | None, value: V, name: str
) -> None:
    """Wake ``waiters`` and call the user's ``callback`` with ``value`` (whose exceptions are logged, not raised)."""
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)
    if callback is not None:
        try:
            callback(value)
        except Exception:
            log.exception("%s callback raised", name)


def _http_reason(body: bytes | bytearray | None) -> str:
    """The bridge's reason from a refused upgrade's JSON body (or the body's text)."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return bytes(body).decode("utf-8", "replace").strip()[:200]
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        return str(data["reason"])
    return ""


class ViewerClient:
    """The blocking client: :class:`AsyncViewerClient` run on a thread of its own.

    Same arguments and methods, called without ``await``; each call waits at
    most ``timeout`` seconds. ``on_error``, ``on_state`` and ``on_status`` run on the
    client's thread. Use as a context manager, or call :meth:`close`: the
    thread ends there.
    """

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = 10.0, **options: Any) -> None:
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="viewer-client", daemon=True)
        self._closed = False
        self._thread.start()
        try:
            # Built on its loop (and thread) so its futures and tasks belong there; the caller's thread
            # may be running an event loop of its own (Jupyter, Playwright's sync API).
            self._client: AsyncViewerClient = asyncio.run_coroutine_threadsafe(
                _build(url, options), self._loop
            ).result(timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
            raise

    @property
    def client(self) -> AsyncViewerClient:
        """The asyncio client underneath (its ``state``, ``errors``, ``url``)."""
        return self._client

    @property
    def state(self) -> ConnectionState:
        return self._client.state

    @property
    def connected(self) -> bool:
        return self._client.connected

    @property
    def errors(self) -> list[ServerError]:
        return list(self._client.errors)

    @property
    def status(self) -> Status | None:
        """The bridge's latest status frame (see :attr:`AsyncViewerClient.status`)."""
        return self._client.status

    def wait_status(self, predicate: Callable[[Status], object] = lambda status: True, timeout: float = 5.0) -> Status:
        """See :meth:`AsyncViewerClient.wait_status`."""
        return self._call(self._client.wait_status(predicate, timeout), timeout + 1.0)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise NotConnected("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise

    def connect(self) -> None:
        """See :meth:`AsyncViewerClient.connect`."""
        self._call(self._client.connect())

    def start(self) -> None:
        """See :meth:`AsyncViewerClient.start`."""
        self._call(_call_soon(self._client.start))

    def wait_connected(self, timeout: float) -> None:
        self._call(self._client.wait_connected(timeout), timeout + 1.0)

    def click(self, x: float, y: float, z: float, entity_path: str = "", timestamp_ms: int | None = None) -> None:
        self._call(self._client.click(x, y, z, entity_path, timestamp_ms))

    def twist(
        self,
        linear_x: float = 0.0,
        linear_y: float = 0.0,
        linear_z: float = 0.0,
        angular_x: float = 0.0,
        angular_y: float = 0.0,
        angular_z: float = 0.0,
        timestamp_ms: int | None = None,
    ) -> None:
        self._call(self._client.twist(linear_x, linear_y, linear_z, angular_x, angular_y, angular_z, timestamp_ms))

    def stop(self) -> None:
        self._call(self._client.stop())

    def estop(self, reason: str | None = None) -> None:
        self._call(self._client.estop(reason))

    def estop_clear(self) -> None:
        self._call(self._client.estop_clear())

    def heartbeat(self, timestamp_ms: int | None = None) -> None:
        self._call(self._client.heartbeat(timestamp_ms))

    def send_raw(self, message: str | dict[str, Any]) -> None:
        self._call(self._client.send_raw(message))

    def sync(self, timeout: float = 5.0) -> None:
        """See :meth:`AsyncViewerClient.sync`."""
        self._call(self._client.sync(timeout), timeout + 1.0)

    def close(self) -> bool:
        """Close (see :meth:`AsyncViewerClient.close`) and end the client's thread. Idempotent."""
        if self._closed:
            return False
        try:
            return self._call(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(self.timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> ViewerClient:
        if self._client.state is ConnectionState.IDLE:
            self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def _build(url: str, options: dict[str, Any]) -> AsyncViewerClient:
    return AsyncViewerClient(url, **options)


async def _call_soon(function: Callable[[], object]) -> None:
    function()

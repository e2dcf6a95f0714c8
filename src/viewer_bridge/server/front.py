"""The front door: every connection's request head is read here, then upgraded by picows or answered here.

picows parses only ``GET`` requests and sends each answer as one in-memory
response. The bridge needs more of HTTP than that: ``POST`` endpoints, big
files sent in pieces as the client reads them (the Rerun web viewer is
43 MB), a bound on connections that have not yet said who they are, and
precise errors for malformed requests. So every accepted connection starts
with a :class:`FrontDoor`, which

1. with TLS, runs the TLS handshake itself (``loop.start_tls``), so a
   connection is counted and bounded from the moment it is accepted, not
   from when its handshake ends;
2. reads the request head, bounded in size (``MAX_HEAD``) and time: one
   handshake timeout from accept to a complete head, TLS included;
3. parses it strictly (RFC 9112 section 3: one request line, ``name: value``
   fields of token characters and visible bytes); anything else is a 400;
4. asks the router (:class:`~viewer_bridge.server.http.HttpRoutes`) what to do:
   an :class:`Upgrade` hands the connection, with the bytes read so far, to
   a picows protocol whose listener is the session the router made; a
   :class:`Response` is written here, a large body in chunks with the
   transport's flow control, and the connection closed.

Nothing here blocks: writing a body queues one chunk per turn of the loop,
with the loop left idle for a moment between chunks (so the publishing
threads get the GIL), and waits for ``resume_writing`` when the socket is
full.

``on_open`` is called when a connection is accepted and may refuse it;
``on_close`` once when it stops being the front door's (handed to picows,
or closed after its answer is written). Between the two the connection is
*pending*: not yet authenticated, and counted per address by the router.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from viewer_bridge.core.logsafe import clean, redact_target
from viewer_bridge.server.pacing import LOOP_GAP

__all__ = ["MAX_HEAD", "FrontDoor", "Request", "Response", "Upgrade", "reason_phrase"]

log = logging.getLogger(__name__)

# A request head larger than this is refused (431): real ones are a few hundred bytes.
MAX_HEAD: Final = 16 * 1024
# Bodies are written this much at a time, with the loop idle for LOOP_GAP in between (server/pacing.py):
# the 43 MB Wasm written flat out to 8 fast readers held a stop for the bus up to 75 ms.
_CHUNK: Final = 256 * 1024
# The transport may hold this much unsent before writing pauses (asyncio's flow control).
_HIGH_WATER: Final = 512 * 1024
_TOKEN: Final = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FIELD_VALUE: Final = re.compile(rb"^[\t\x20-\x7e\x80-\xff]*$")
_REASONS: Final = {
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    426: "Upgrade Required",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "Unknown")


@dataclass(frozen=True)
class Request:
    """A parsed request head. Header names are lower-case; values are decoded as latin-1 (RFC 9110 5.5)."""

    method: str
    target: str
    headers: Mapping[str, str]
    peer: tuple[str, int] | None
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    """A complete HTTP answer; the connection closes after it."""

    status: int
    body: bytes | memoryview = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Upgrade:
    """Hand the connection to picows; ``listener`` (a WSListener) gets its frames."""

    listener: Any


class Router(Protocol):
    def front(self, request: Request) -> Response | Upgrade: ...

    def body_limit(self, request: Request) -> int: ...


MakeProtocol = Callable[[Any], asyncio.BaseProtocol]


# Sent to a connection refused before its request is read (its address holds too many already).
_BUSY_BODY: Final = b"too many connections from your address; retry later\n"
_BUSY: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class FrontDoor(asyncio.BufferedProtocol):
    """One connection until its request head is read and answered (or handed to picows)."""

    def __init__(
        self,
        router: Router,
        make_ws_protocol: MakeProtocol,
        timeout: float,
        on_open: Callable[[FrontDoor], bool] | None = None,
        on_close: Callable[[FrontDoor], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._router = router
        self._make_ws_protocol = make_ws_protocol
        self._timeout = timeout
        self._on_open = on_open
        self._on_close = on_close
        self._tls = tls
        self._buffer = bytearray(4096)
        self._used = 0
        self._raw: asyncio.Transport | None = None  # the socket's own transport (under TLS, if any)
        self._transport: asyncio.Transport | None = None  # what requests are read from and answered on
        self._timer: asyncio.TimerHandle | None = None
        self._tls_task: asyncio.Task[None] | None = None
        self._body: memoryview | None = None
        self._next: asyncio.TimerHandle | None = None
        self._writing = True
        self._continued = False  # "100 Continue" sent
        self._decided = False
        self._released = False
        self.peer: tuple[str, int] | None = None

    # -- asyncio.BufferedProtocol -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        if self._on_open is not None and not self._on_open(self):
            # Refused before reading anything (the router counted and logs why).
            self._decided = self._released = True
            if self._tls is None:
                transport.write(_BUSY)
                transport.close()
            else:
                transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout, self._timed_out)
        if self._tls is None:
            self._ready(transport)
        else:
            # Nothing is read until start_tls has put the TLS layer between the socket and us.
            transport.pause_reading()
            self._tls_task = loop.create_task(self._start_tls(transport))

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        assert self._tls is not None
        try:
            # The front door's timer bounds the whole of it; asyncio's own timeout is only a backstop.
            tls = await loop.start_tls(raw, self, self._tls, server_side=True, ssl_handshake_timeout=self._timeout)
        except asyncio.CancelledError:
            self._release()
            raw.abort()
            raise
        except Exception as exc:  # whatever the handshake failed with, the connection is over
            log.debug("TLS handshake with %s failed: %s", self.peer, clean(exc))
            self._release()
            raw.abort()
            return
        if tls is None or self._decided:
            if tls is not None:
                tls.abort()
            self._release()
            return
        assert isinstance(tls, asyncio.Transport)
        self._ready(tls)

    def _ready(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        transport.set_write_buffer_limits(high=_HIGH_WATER)
        if self._used:
            self._process()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._used == len(self._buffer):
            self._buffer.extend(bytes(len(self._buffer)))
        return memoryview(self._buffer)[self._used :]

    def buffer_updated(self, nbytes: int) -> None:
        if self._decided:
            return
        self._used += nbytes
        if self._transport is not None:
            self._process()
        # else: TLS delivers what came with its last handshake message before start_tls returns; _ready reads it.

    def _process(self) -> None:
        data = bytes(self._buffer[: self._used])
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if self._used > MAX_HEAD:
                self._answer(Response(431, b"request head too large\n"))
            elif b"\n\n" in data:
                # A head ended by bare line feeds would otherwise wait out the timeout for a CRLF that never comes.
                self._answer(Response(400, b"request lines must end with CRLF (RFC 9112 section 2.2)\n"))
            return
        request = _parse(data[:end], self.peer)
        if isinstance(request, Response):
            self._answer(request)
            return
        rest = data[end + 4 :]
        headers = request.headers
        if "transfer-encoding" in headers:
            # Refused with or without a Content-Length beside it (RFC 9112 section 6.1 allows it): two framings
            # of one body are how requests are smuggled past a proxy.
            self._answer(Response(400, b"Transfer-Encoding is not supported; send Content-Length\n"))
            return
        expect = headers.get("expect")
        if expect is not None and expect.lower() != "100-continue":
            self._answer(Response(417, b"only Expect: 100-continue is understood\n"))
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self._router.body_limit(request):
                self._answer(Response(413 if length.isdigit() else 400, b"bad or too large Content-Length\n"))
                return
            if len(rest) < int(length):
                if self._used > MAX_HEAD + int(length):
                    self._answer(Response(413, b"request too large\n"))
                elif expect is not None and not self._continued:
                    # curl holds a body back for a second waiting for this (RFC 9110 section 10.1.1): an e-stop
                    # with a long reason must not wait that second.
                    self._continued = True
                    assert self._transport is not None
                    self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return  # the rest of the body is still coming
            request = Request(request.method, request.target, headers, request.peer, rest[: int(length)])
            rest = rest[int(length) :]
        try:
            decision = self._router.front(request)
        except Exception as exc:
            # The target is redacted and the exception named only by its type: both may hold what a client sent.
            log.error(
                "answering %s %s from %s failed: %s",
                clean(request.method, 16), redact_target(request.target), self.peer, type(exc).__name__,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            decision = Response(500, b"internal error\n")
        if isinstance(decision, Upgrade):
            self._hand_over(_upgrade_head(request), rest, decision)
        else:
            self._answer(decision, head_only=request.method == "HEAD")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._decide()
        self._release()

    def pause_writing(self) -> None:
        self._writing = False

    def resume_writing(self) -> None:
        self._writing = True
        # Not from here: asyncio calls this from inside its own write handler, and when the rest of the
        # body goes straight to an empty socket buffer, closing the transport then makes asyncio 3.11 call
        # connection_lost twice (the second time on a transport already torn down: a logged traceback).
        if self._next is None:
            self._next = asyncio.get_running_loop().call_later(LOOP_GAP, self._write_more)

    # -- for the router ---------------------------------------------------------------

    def drop(self) -> None:
        """Abort this connection now, to make room for others (``on_close`` is called at once)."""
        self._decide()
        if self._raw is not None:
            self._raw.abort()
        self._release()

    # -- internals ----------------------------------------------------------------

    def _decide(self) -> None:
        """The request is decided (or will never be): the head timer stops."""
        self._decided = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release(self) -> None:
        """The connection is no longer the front door's: the router stops counting it."""
        if not self._released:
            self._released = True
            if self._on_close is not None:
                self._on_close(self)

    def _timed_out(self) -> None:
        self._timer = None
        if self._decided or self._raw is None:
            return
        log.debug("no complete request from %s within %.0f s; closed", self.peer, self._timeout)
        self._decide()
        self._raw.abort()

    def _hand_over(self, head: bytes, rest: bytes, upgrade: Upgrade) -> None:
        transport = self._transport
        assert transport is not None
        self._decide()
        self._release()
        protocol = self._make_ws_protocol(upgrade.listener)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        _feed(protocol, head + rest)

    def _answer(self, response: Response, head_only: bool = False) -> None:
        transport = self._transport
        self._decide()
        if transport is None or transport.is_closing():
            return
        body = memoryview(response.body) if not isinstance(response.body, memoryview) else response.body
        lines = [f"HTTP/1.1 {response.status} {reason_phrase(response.status)}"]
        headers = {"Content-Length": str(len(body)), "Connection": "close", **response.headers}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self._body = None if head_only else body
        self._write_more()

    def _write_more(self) -> None:
        self._next = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        body = self._body
        if body is not None and len(body) and self._writing:
            transport.write(body[:_CHUNK])
            body = body[_CHUNK:]
        self._body = body if body is not None and len(body) else None
        if self._body is None:
            transport.close()  # after what is queued has been sent
        elif self._writing:
            self._next = asyncio.get_running_loop().call_later(LOOP_GAP, self._write_more)


def _upgrade_head(request: Request) -> bytes:
    """The request head picows is given: only what it needs, in the one form it accepts.

    The router has checked the upgrade (method, ``Connection``, key, version)
    already. picows wants ``Connection`` to be exactly ``Upgrade``, which
    refuses Firefox's ``keep-alive, Upgrade`` (RFC 9110 section 7.6.1 makes it
    a list), so it is handed a canonical head instead of the client's.
    """
    headers = request.headers
    return (
        f"GET {request.target} HTTP/1.1\r\nHost: {headers.get('host', '')}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {headers.get('sec-websocket-key', '')}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode("latin-1")


def _feed(protocol: Any, data: bytes) -> None:
    """Give ``data`` to a buffered protocol as if it had just been read."""
    view = memoryview(data)
    while len(view):
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _parse(head: bytes, peer: tuple[str, int] | None) -> Request | Response:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1]:
        return Response(400, b"malformed request line\n")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return Response(400, b"HTTP/1.1 only\n")
    if not all(0x21 <= byte <= 0x7E for byte in target):
        return Response(400, b"the request target has bytes that are not allowed (RFC 9112 3.2)\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name) or not _FIELD_VALUE.match(value):
            return Response(400, b"malformed header field\n")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("host", "content-length", "authorization", "origin", "sec-websocket-key"):
                return Response(400, f"duplicate {key} header\n".encode())
            headers[key] = f"{headers[key]}, {text}"
        else:
            headers[key] = text
    return Request(method.decode("ascii"), target.decode("ascii"), headers, peer)

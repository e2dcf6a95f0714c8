"""HTTP on the bridge's port: who may connect, and the small endpoints.

The :class:`~viewer_bridge.server.front.FrontDoor` tells :class:`HttpRoutes`
when a connection is accepted (``opened``: it may refuse it, or make room
for it) and when it stops waiting (``closed``), and asks :meth:`HttpRoutes.front`
what to do with each request head. In order:

1. ``Host`` must name an IP address, ``localhost``, the bridge's own name or
   one in ``allowed_hosts`` (DNS rebinding; see :mod:`viewer_bridge.core.auth`),
   else 403, before anything else is looked at;
2. a WebSocket upgrade on the viewer path, well formed (RFC 6455 section
   4.2.1: GET, ``Connection: Upgrade``, a 16-byte key, version 13, else
   400/405/426), whose token, Origin and the connection cap allow it,
   becomes an :class:`~viewer_bridge.server.front.Upgrade` carrying a new
   session with the token's name and role (picows completes the handshake);
3. ``/healthz`` (503 when the bridge is not taking commands, with the
   reasons), ``/metrics``, ``/status`` and ``/config`` (the page's settings)
   answer with a token when tokens are set;
4. anything else is the browser page's files (with tokens set, the page
   carries no settings: it asks ``/config`` for them with the token), or
   an error (401, 403, 404, 405, 426, 429, 503) with a JSON body saying why.

Per remote address (:class:`~viewer_bridge.core.peers.PeerGuard`):
connections not yet authenticated are capped, and after ``auth_failures``
wrong tokens in ``auth_window`` seconds requests needing a token get 429
with ``Retry-After`` without any comparison.

Every refusal is counted by status. Logging is bounded: each refusal at
DEBUG, and at INFO one line per status every 10 s with a count of the rest,
with the target redacted and every client-supplied string escaped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from viewer_bridge.core.auth import (
    ANONYMOUS,
    Principal,
    TokenTable,
    check_host,
    check_origin,
    offered_tokens,
    split_target,
    target_authority,
)
from viewer_bridge.core.logsafe import Throttle, clean, redact_target
from viewer_bridge.core.peers import PeerGuard, peer_of
from viewer_bridge.core.protocol import MAX_REASON
from viewer_bridge.core.roles import may_send
from viewer_bridge.server.front import FrontDoor, Request, Response, Upgrade
from viewer_bridge.server.metrics import render_metrics

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.server.fleet import RobotLine
    from viewer_bridge.server.hardening import SecuritySetup
    from viewer_bridge.server.pump import AsyncRerunWebSocketServer

__all__ = ["HttpRoutes"]

log = logging.getLogger(__name__)

StaticResponder = Callable[[str, Mapping[str, str]], "tuple[bytes, dict[str, str]] | None"]

_READ_METHODS: Final = ("GET", "HEAD")
_JSON: Final = {"Content-Type": "application/json"}
_AUTHENTICATED: Final = ("/healthz", "/metrics", "/status", "/config")
# Safety actions over plain HTTP, for a sender without a WebSocket (or refused one), and the message kind
# each is (for the roles); docs/protocol.md.
_SAFETY_PATHS: Final = {"/stop": "stop", "/estop": "estop", "/estop/clear": "estop_clear"}
# One INFO line per refusal status (and per pre-auth complaint) this often; the rest are counted.
_LOG_INTERVAL: Final = 10.0


class HttpRoutes:
    """The request router of one server (runs on its event loop)."""

    def __init__(self, server: AsyncRerunWebSocketServer) -> None:
        self._server = server
        self.static: StaticResponder | None = None
        self.page_config: Callable[[], dict[str, Any]] | None = None
        self.tokens = TokenTable()
        self.host_names: tuple[str, ...] = ()
        self.guard = PeerGuard()
        self._throttle = Throttle(_LOG_INTERVAL)
        self._flush_timer: Any = None

    def configure(self, setup: SecuritySetup) -> None:
        """Take what the server prepared at start: tokens, the names it answers to, the pre-auth caps."""
        config = self._server.config
        self.tokens = setup.tokens
        self.host_names = setup.host_names
        host_rate = 2 * config.rate_limit if config.host_rate_limit is None else config.host_rate_limit
        host_burst = 2 * config.rate_burst if config.host_rate_burst is None else config.host_rate_burst
        self.guard = PeerGuard(
            max_pending_per_peer=config.max_pending_per_address,
            max_pending=setup.max_pending,
            auth_failures=config.auth_failures,
            auth_window=config.auth_window,
            host_rate=host_rate,
            host_burst=host_burst,
            connect_rate=config.connect_rate,
            connect_burst=config.connect_burst,
        )

    def body_limit(self, request: Request) -> int:
        """The largest request body accepted (the endpoints here take none, or small JSON)."""
        return 4096

    # -- connections before their request is decided --------------------------------

    def opened(self, door: FrontDoor) -> bool:
        """A connection was accepted: False refuses it (its address holds too many pending already)."""
        address = door.peer[0] if door.peer is not None else "?"
        peer = peer_of(address)
        admission = self.guard.admit(door, peer)
        stats = self._server.stats
        if not admission.admitted:
            stats.preauth_refused["per_address"] += 1
            self._note(
                "per_address",
                "refused a connection from %s: it already holds %d that have not sent a complete request "
                "(max_pending_per_address)", clean(address), self.guard.pending_from(peer),
            )
            return False
        victim = admission.evict
        if isinstance(victim, FrontDoor):
            stats.preauth_refused["evicted"] += 1
            self._note(
                "evicted",
                "%d connections waiting for their request (max_pending): dropped the oldest from %s, the "
                "address holding the most", self.guard.pending, clean(victim.peer[0] if victim.peer else "?"),
            )
            victim.drop()
        return True

    def closed(self, door: FrontDoor) -> None:
        self.guard.leave(door)

    def shed(self, n: int) -> int:
        """Drop up to ``n`` pending connections (the process ran out of descriptors); returns how many."""
        victims = self.guard.shed(n)
        for victim in victims:
            if isinstance(victim, FrontDoor):
                victim.drop()
        self._server.stats.preauth_refused["shed"] += len(victims)
        return len(victims)

    # -- requests ----------------------------------------------------------------------

    def front(self, request: Request) -> Response | Upgrade:
        server = self._server
        config = server.config
        target = request.target
        path, query = split_target(target)
        # A stop or an e-stop is never held back by its address's connection budget: stopping must not depend
        # on how often that address connected (the token and the failed-token brake still apply).
        if path not in _SAFETY_PATHS:
            throttled = self._throttled(request)
            if throttled is not None:
                return throttled
        headers = request.headers
        if "host" not in headers:
            return self.refuse(400, "a Host header is required (RFC 9112 section 3.2)", request)
        # An absolute-form target names its host itself, and that name is the one that counts.
        host = target_authority(target) or headers["host"]
        if not check_host(host, config.allowed_hosts, self.host_names):
            # DNS rebinding: a page whose name now points here; nothing else is looked at.
            return self.refuse(
                403,
                f"Host {clean(host, 100)} is not a name this bridge answers to (DNS rebinding protection); "
                "if it is yours, add it to allowed_hosts",
                request,
            )
        if "websocket" in headers.get("upgrade", "").lower():
            return self._upgrade(request, path, query)
        if path == config.path:
            return self.refuse(
                426, "this is the WebSocket endpoint: upgrade to websocket", request, {"Upgrade": "websocket"}
            )
        if path in _SAFETY_PATHS:
            return self._safety_action(request, path, query)
        if request.method not in _READ_METHODS:
            return self.refuse(
                405, f"{clean(request.method, 16)} is not supported at {self._shown(path)}", request,
                {"Allow": "GET, HEAD"},
            )
        if path in _AUTHENTICATED:
            principal = self._authenticate(request, query)
            if isinstance(principal, Response):
                return principal
            if path == "/metrics":
                return _ok(render_metrics(server.registry), "text/plain; version=0.0.4; charset=utf-8")
            if path == "/healthz":
                health = server.health()
                return Response(200 if health["up"] else 503, _json(health), _no_store(_JSON))
            if path == "/config":
                page = self.page_config() if self.page_config is not None else {"wsPath": config.path}
                you = {"name": principal.name if principal.named else None, "role": principal.role.value}
                return _ok(_json({**page, "you": you}), "application/json")
            if server.fleet is not None:
                return _ok(_json(server.fleet.report()), "application/json")
            return _ok(_json(server.client_status()), "application/json")
        if self.static is not None:
            found = self.static(path, headers)
            if found is not None:
                body, response_headers = found
                return Response(200, body, response_headers)
        return self.refuse(404, f"nothing at {self._shown(path)}; the viewer endpoint is {config.path}", request)

    def _upgrade(self, request: Request, path: str, query: dict[str, list[str]]) -> Response | Upgrade:
        server = self._server
        config = server.config
        headers = request.headers
        if path != config.path:
            return self.refuse(
                404, f"nothing to upgrade at {self._shown(path)}; the viewer endpoint is {config.path}", request
            )
        if request.method != "GET":
            return self.refuse(405, "a WebSocket upgrade is a GET", request, {"Allow": "GET"})
        if headers.get("sec-websocket-version") != "13":
            # RFC 6455 section 4.4: say which version we speak.
            return self.refuse(426, "WebSocket version 13 only", request, {"Sec-WebSocket-Version": "13"})
        if "upgrade" not in (item.strip().lower() for item in headers.get("connection", "").split(",")):
            return self.refuse(400, "a WebSocket upgrade needs 'Connection: Upgrade' (RFC 6455 section 4.2.1)", request)
        if not _valid_key(headers.get("sec-websocket-key")):
            return self.refuse(
                400, "Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 section 4.2.1)", request
            )
        principal = self._authenticate(request, query)
        if isinstance(principal, Response):
            return principal
        if not self._origin_allowed(request):
            return self.refuse(403, f"origin {clean(headers.get('origin'), 100)} is not allowed", request)
        if server.client_count >= config.max_connections:
            return self.refuse(
                503, f"connection limit reached ({config.max_connections})", request, {"Retry-After": "1"}
            )
        robot = self._robot_chosen(request, query)  # the robot this client drives
        if isinstance(robot, Response):
            return robot
        address = request.peer[0] if request.peer is not None else "?"
        return Upgrade(server.new_session(principal, peer_of(address), robot=robot))

    def _robot_chosen(self, request: Request, query: Mapping[str, list[str]]) -> str | Response | None:
        """At a fleet station, the robot ``?robot=NAME`` names (None: none named), or the 404 for an unknown one.

        On a single-robot bridge ``robot=`` is ignored: there is only the one (docs/fleet.md).
        """
        fleet = self._server.fleet
        if fleet is None:
            return None
        chosen = query.get("robot")
        robot = chosen[-1] if chosen else None
        if robot is not None and robot not in fleet.robots:
            return self.refuse(404, f"unknown_robot: {fleet.unknown(robot)}", request)
        return robot

    def _origin_allowed(self, request: Request) -> bool:
        """The browser Origin rule, for the upgrade and the safety POSTs alike (docs/protocol.md)."""
        server = self._server
        origin = request.headers.get("origin")
        return check_origin(origin, _host(request), server.config.allowed_origins, server.secure)

    def _shown(self, path: str) -> str:
        """A client's path as it may appear in a reason (which is also logged): redacted, escaped, short."""
        return redact_target(path, self.tokens.secrets, limit=100)

    def _throttled(self, request: Request) -> Response | None:
        """The 429 for a request whose address opens connections faster than ``connect_rate`` allows.

        Decided before anything else about the request is looked at but its
        path (a stop or an e-stop is never held back). It is made once the
        request head is read, not at accept, so the answer is not lost to a
        reset when the client's request arrives after the close.
        """
        peer = peer_of(request.peer[0]) if request.peer is not None else "?"
        wait = self.guard.connect(peer, self._server.clock())
        if wait <= 0:
            return None
        self._server.stats.connect_throttled += 1
        retry = math.ceil(wait)
        why = f"too many new connections from {peer} (connect_rate {self.guard.connect_rate:g}/s); retry in {retry} s"
        if not self._note("connect_rate", "HTTP 429 to %s: %s", clean(peer), why):
            log.debug("HTTP 429 to %s: %s", clean(peer), why)
        return Response(429, _json({"type": "error", "status": 429, "reason": why}), _no_store(
            {**_JSON, "Retry-After": str(retry)}
        ))

    def _authenticate(self, request: Request, query: Mapping[str, list[str]]) -> Principal | Response:
        """Whose token the request carries; or the 401/429 to answer."""
        tokens = self.tokens
        if not tokens:
            return ANONYMOUS
        peer = peer_of(request.peer[0]) if request.peer is not None else "?"
        now = self._server.clock()
        wait = self.guard.brake(peer, now)
        if wait > 0:
            # Braked: answered without looking at the token, so guessing costs a wait, not a comparison.
            return self.refuse(
                429,
                f"too many wrong tokens from {peer}; try again in {math.ceil(wait)} s",
                request,
                {"Retry-After": str(math.ceil(wait))},
            )
        principal = tokens.match(offered_tokens(query, request.headers))
        if principal is None:
            self.guard.auth_failed(peer, now)
            self._server.stats.auth_failures += 1
            return self.refuse(401, "missing or wrong token", request, {"WWW-Authenticate": "Bearer"})
        return principal

    def _safety_action(self, request: Request, path: str, query: Mapping[str, list[str]]) -> Response:
        """``POST /stop`` publishes one zero; ``POST /estop`` (optional body ``{"reason": ...}``) latches;
        ``POST /estop/clear`` releases."""
        server = self._server
        if request.method != "POST":
            return self.refuse(405, f"{path} takes POST", request, {"Allow": "POST"})
        if not self._origin_allowed(request):
            # A page on another site may not stop, latch or, worst, clear the e-stop (cross-site request forgery:
            # without a token, a browser would send such a POST for any page its user opens).
            return self.refuse(
                403,
                f"origin {clean(request.headers.get('origin'), 100)} may not {path[1:]}: a cross-site request "
                "(add it to allowed_origins if it is yours)",
                request,
            )
        principal = self._authenticate(request, query)
        if isinstance(principal, Response):
            return principal
        kind = _SAFETY_PATHS[path]
        if not may_send(principal.role, kind):
            return self.refuse(
                403, f"token {principal.name!r} has role {principal.role.value!r}, which may not {path[1:]}", request
            )
        who = f"http:{principal.name}" if principal.named else f"http:{request.peer[0]}" if request.peer else "http"
        now = server.clock()
        # As on a WebSocket: the robot named acts on that robot, none on every robot.
        robot = self._robot_chosen(request, query)
        if isinstance(robot, Response):
            return robot
        if path == "/stop":
            answer = self._stop(robot, who, now)
        else:
            # An authorised e-stop always latches: a body that is not the expected JSON becomes the reason.
            latch = path == "/estop"
            answer = self._estop(latch, _estop_reason(request.body) if latch else None, robot, who, now)
        return Response(200, _json(answer), _no_store(_JSON))

    def _stop(self, robot: str | None, who: str, now: float) -> dict[str, object]:
        """One zero, as a ``stop`` frame gives; at a fleet station to ``robot``, or to every robot."""
        server = self._server
        fleet = server.fleet
        if fleet is None:
            return {"stopped": True, "driver": server.stop_from(who, now)}
        lines = [fleet.robots[robot]] if robot is not None else list(fleet.robots.values())
        return {
            "stopped": True,
            "robots": {line.name: fleet.stop(line, who, now) for line in lines},
            "offline": _offline(lines),
        }

    def _estop(self, latch: bool, reason: str | None, robot: str | None, who: str, now: float) -> dict[str, object]:
        """Latch (or release) the e-stop; at a fleet station that of ``robot``, or of every robot."""
        server = self._server
        fleet = server.fleet
        if fleet is not None and robot is not None:
            line = fleet.robots[robot]
            if latch:
                fleet.latch(line, who, reason, now)
            else:
                fleet.clear(line, who, now)
            state = line.safety.estop
        else:
            if latch:
                server.latch_estop(who, reason, now)
            else:
                server.clear_estop(who, now)
            state = server.safety.estop
        answer: dict[str, object] = {
            "estop": None if state is None else {"by": state.by, "at": state.at, "reason": state.reason}
        }
        if fleet is not None:
            answer["robots"] = {name: report["estop"] for name, report in fleet.report()["robots"].items()}
            answer["offline"] = _offline([fleet.robots[robot]] if robot is not None else list(fleet.robots.values()))
        return answer

    def refuse(
        self, status: int, why: str, request: Request | str, headers: dict[str, str] | None = None
    ) -> Response:
        """An error answer, counted; logged at DEBUG each time and at INFO once per status every 10 s."""
        self._server.stats.http_refused[status] += 1
        target = request if isinstance(request, str) else request.target
        peer = "?" if isinstance(request, str) or request.peer is None else request.peer[0]
        redacted = redact_target(target, self.tokens.secrets)
        if not self._note(status, "HTTP %d from %s for %s: %s", status, clean(peer), redacted, why):
            log.debug("HTTP %d from %s for %s: %s", status, clean(peer), redacted, why)
        body = _json({"type": "error", "status": status, "reason": why})
        return Response(status, body, _no_store({**_JSON, **(headers or {})}))

    def _note(self, key: object, message: str, *args: object) -> bool:
        """Log ``message`` at INFO unless one with this key was logged in the last 10 s (then count it)."""
        held_back = self._throttle.allow(key, self._server.clock())
        if held_back is None:
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(_LOG_INTERVAL, self._flush)
            return False
        more = f" (+{held_back} more like it since the last logged)" if held_back else ""
        log.info(message + "%s", *args, more)
        return True

    def _flush(self) -> None:
        """Say how many lines were held back, so a burst that stopped is still reported."""
        self._flush_timer = None
        for key, count in self._throttle.take_pending().items():
            what = f"HTTP {key} refusals" if isinstance(key, int) else f"{key} connection refusals"
            log.info("%d more %s in the last %.0f s (logged once per %.0f s)", count, what, _LOG_INTERVAL,
                     _LOG_INTERVAL)

    def stop(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None


def _offline(lines: list[RobotLine]) -> list[str]:
    """The robots among ``lines`` whose agent the station does not see: what it publishes may not reach them.

    Such a robot's agent stops it by itself when the station's commands stop arriving (its link timeout);
    the answer names them so nobody takes "stopped" for "heard".
    """
    return [line.name for line in lines if line.agent and not line.online]


def _valid_key(key: str | None) -> bool:
    if key is None:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def _host(request: Request) -> str | None:
    """The name the request is for: an absolute-form target's own, else the Host header (RFC 9112 section 3.2.2)."""
    return target_authority(request.target) or request.headers.get("host")


def _estop_reason(body: bytes) -> str | None:
    """The reason in ``{"reason": ...}``; any other body, as text; cut to ``MAX_REASON`` characters."""
    if not body.strip():
        return None
    try:
        parsed = json.loads(body)
        reason = parsed.get("reason") if isinstance(parsed, dict) else parsed
    except (ValueError, UnicodeDecodeError):
        reason = body.decode("utf-8", "replace")
    if reason is None:
        return None
    text = reason if isinstance(reason, str) else json.dumps(reason)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "\u2026"


def _ok(body: bytes, content_type: str) -> Response:
    return Response(200, body, _no_store({"Content-Type": content_type}))


def _no_store(headers: Mapping[str, str]) -> dict[str, str]:
    return {"Cache-Control": "no-store", **headers}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")

"""HTTP on the bridge's port: who may connect, and the small endpoints.

The :class:`~viewer_bridge.server.front.FrontDoor` parses each request head
and asks :meth:`HttpRoutes.front` what to do with it:

* a WebSocket upgrade on the viewer path, once the token, Origin and
  connection cap allow it, becomes an :class:`~viewer_bridge.server.front.Upgrade`
  carrying a new session (picows completes the handshake);
* ``/healthz`` (503 when the bridge is not taking commands, with the
  reasons), ``/metrics`` and ``/status`` answer with the token when one is set;
* anything else is the browser page's files, or an error (401, 403, 404,
  405, 426, 503) with a JSON body saying why.

Every refusal is counted by status and logged with the request target
redacted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from viewer_bridge.core.auth import check_origin, check_token, redact_target, split_target
from viewer_bridge.core.protocol import MAX_REASON
from viewer_bridge.server.front import Request, Response, Upgrade
from viewer_bridge.server.metrics import render_metrics

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.server.pump import AsyncRerunWebSocketServer

__all__ = ["HttpRoutes"]

log = logging.getLogger(__name__)

StaticResponder = Callable[[str, Mapping[str, str]], "tuple[bytes, dict[str, str]] | None"]

_READ_METHODS: Final = ("GET", "HEAD")
_JSON: Final = {"Content-Type": "application/json"}


class HttpRoutes:
    """The request router of one server (runs on its event loop)."""

    def __init__(self, server: AsyncRerunWebSocketServer) -> None:
        self._server = server
        self.static: StaticResponder | None = None

    def body_limit(self, request: Request) -> int:
        """The largest request body accepted (the endpoints here take none, or small JSON)."""
        return 4096

    def front(self, request: Request) -> Response | Upgrade:
        server = self._server
        config = server.config
        target = request.target
        path, query = split_target(target)
        headers = request.headers
        if "websocket" in headers.get("upgrade", "").lower():
            if path != config.path:
                return self.refuse(404, f"nothing to upgrade at {path}; the viewer endpoint is {config.path}", target)
            if request.method != "GET":
                return self.refuse(405, "a WebSocket upgrade is a GET", target, {"Allow": "GET"})
            if headers.get("sec-websocket-version") != "13":
                # RFC 6455 section 4.4: say which version we speak.
                return self.refuse(426, "WebSocket version 13 only", target, {"Sec-WebSocket-Version": "13"})
            if not check_token(server.token, query, headers):
                return self.refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if not check_origin(headers.get("origin"), headers.get("host"), config.allowed_origins, server.secure):
                return self.refuse(403, f"origin {headers.get('origin')!r} is not allowed", target)
            if server.client_count >= config.max_connections:
                return self.refuse(
                    503, f"connection limit reached ({config.max_connections})", target, {"Retry-After": "1"}
                )
            robot: str | None = None
            if server.fleet is not None:
                chosen = query.get("robot")
                robot = chosen[-1] if chosen else None
                if robot is not None and robot not in server.fleet.robots:
                    return self.refuse(404, f"unknown_robot: {server.fleet.unknown(robot)}", target)
            return Upgrade(server.new_session(robot))
        if path == config.path:
            return self.refuse(
                426, "this is the WebSocket endpoint: upgrade to websocket", target, {"Upgrade": "websocket"}
            )
        if path in ("/estop", "/estop/clear"):
            return self._estop(request, path, query)
        if request.method not in _READ_METHODS:
            return self.refuse(405, f"{request.method} is not supported at {path}", target, {"Allow": "GET, HEAD"})
        if path in ("/healthz", "/metrics", "/status"):
            if not check_token(server.token, query, headers):
                return self.refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if path == "/metrics":
                return _ok(render_metrics(server.registry), "text/plain; version=0.0.4; charset=utf-8")
            if path == "/healthz":
                health = server.health()
                return Response(200 if health["up"] else 503, _json(health), _no_store(_JSON))
            if server.fleet is not None:
                return _ok(_json(server.fleet.report()), "application/json")
            return _ok(_json(server.client_status()), "application/json")
        if self.static is not None:
            found = self.static(path, headers)
            if found is not None:
                body, response_headers = found
                return Response(200, body, response_headers)
        return self.refuse(404, f"nothing at {path}; the viewer endpoint is {config.path}", target)

    def _estop(self, request: Request, path: str, query: Mapping[str, list[str]]) -> Response:
        """``POST /estop`` (optional JSON body ``{"reason": ...}``) latches; ``POST /estop/clear`` releases."""
        server = self._server
        target = request.target
        if request.method != "POST":
            return self.refuse(405, f"{path} takes POST", target, {"Allow": "POST"})
        if not check_token(server.token, query, request.headers):
            return self.refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
        who = f"http:{request.peer[0]}" if request.peer else "http"
        now = server.clock()
        if path == "/estop":
            reason: str | None = None
            if request.body.strip():
                try:
                    body = json.loads(request.body)
                except (ValueError, UnicodeDecodeError):
                    return self.refuse(400, 'the body must be JSON: {"reason": "..."} (or empty)', target)
                reason = body.get("reason") if isinstance(body, dict) else None
                if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
                    return self.refuse(400, f"reason must be a string of at most {MAX_REASON} characters", target)
            server.latch_estop(who, reason, now)
        else:
            server.clear_estop(who, now)
        latch = server.safety.estop
        state = None if latch is None else {"by": latch.by, "at": latch.at, "reason": latch.reason}
        answer: dict[str, object] = {"estop": state}
        if server.fleet is not None:
            answer["robots"] = {name: robot["estop"] for name, robot in server.fleet.report()["robots"].items()}
        return Response(200, _json(answer), _no_store(_JSON))

    def refuse(self, status: int, why: str, target: str, headers: dict[str, str] | None = None) -> Response:
        self._server.stats.http_refused[status] += 1
        log.info("HTTP %d for %s: %s", status, redact_target(target), why)
        body = _json({"type": "error", "status": status, "reason": why})
        return Response(status, body, _no_store({**_JSON, **(headers or {})}))


def _ok(body: bytes, content_type: str) -> Response:
    return Response(200, body, _no_store({"Content-Type": content_type}))


def _no_store(headers: Mapping[str, str]) -> dict[str, str]:
    return {"Cache-Control": "no-store", **headers}


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")

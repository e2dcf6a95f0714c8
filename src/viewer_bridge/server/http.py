"""HTTP on the bridge's port, before any WebSocket upgrade: who may connect, and the small endpoints.

picows parses each request's head and calls :meth:`HttpRoutes.route`, which
returns either a session (the WebSocket path, once the token, Origin and
connection cap allow it) or a finished response: ``/healthz``, ``/metrics``
and ``/status`` (token required when one is set), the browser page's files,
or an error (401, 403, 404, 503) with a JSON body saying why. Every refusal
is counted by status and logged with the request target redacted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from picows import WSListener, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener

from viewer_bridge.core.auth import check_origin, check_token, redact_target, split_target
from viewer_bridge.server.metrics import render_metrics

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.server.pump import AsyncRerunWebSocketServer

__all__ = ["HttpRoutes"]

log = logging.getLogger(__name__)

StaticResponder = Callable[[str, Mapping[str, str]], "tuple[bytes, dict[str, str]] | None"]


class HttpRoutes:
    """The request router of one server (runs on its event loop)."""

    def __init__(self, server: AsyncRerunWebSocketServer) -> None:
        self._server = server
        self.static: StaticResponder | None = None

    def route(self, request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener:
        server = self._server
        config = server.config
        target = request.path.decode("latin-1")
        path, query = split_target(target)
        headers = request.headers
        if path == config.path:
            if not check_token(server.token, query, headers):
                return self.refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if not check_origin(headers.get("origin"), headers.get("host"), config.allowed_origins, server.secure):
                return self.refuse(403, f"origin {headers.get('origin')!r} is not allowed", target)
            if server.client_count >= config.max_connections:
                return self.refuse(
                    503, f"connection limit reached ({config.max_connections})", target, {"Retry-After": "1"}
                )
            return server.new_session()
        if path in ("/healthz", "/metrics", "/status"):
            if not check_token(server.token, query, headers):
                return self.refuse(401, "missing or wrong token", target, {"WWW-Authenticate": "Bearer"})
            if path == "/metrics":
                return _ok(render_metrics(server.registry), "text/plain; version=0.0.4; charset=utf-8")
            if path == "/healthz":
                health = server.health()
                status = 200 if health["up"] else 503
                return _respond(status, _json(health), {"Content-Type": "application/json"})
            return _ok(_json(server.client_status()), "application/json")
        if self.static is not None:
            found = self.static(path, headers)
            if found is not None:
                body, response_headers = found
                return WSUpgradeResponseWithListener(WSUpgradeResponse.create_ok_response(body, response_headers), None)
        return self.refuse(404, f"nothing at {path}; the viewer endpoint is {config.path}", target)

    def refuse(
        self, status: int, why: str, target: str, headers: dict[str, str] | None = None
    ) -> WSUpgradeResponseWithListener:
        self._server.stats.http_refused[status] += 1
        log.info("HTTP %d for %s: %s", status, redact_target(target), why)
        body = _json({"type": "error", "status": status, "reason": why})
        return _respond(status, body, {"Content-Type": "application/json", **(headers or {})})


def _ok(body: bytes, content_type: str) -> WSUpgradeResponseWithListener:
    return _respond(200, body, {"Content-Type": content_type})


def _respond(status: int, body: bytes, headers: dict[str, str]) -> WSUpgradeResponseWithListener:
    headers = {"Cache-Control": "no-store", **headers}
    if status == 200:
        response = WSUpgradeResponse.create_ok_response(body, headers)
    else:
        response = WSUpgradeResponse.create_error_response(status, body, headers)
    return WSUpgradeResponseWithListener(response, None)


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")

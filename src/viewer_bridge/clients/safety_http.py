"""Stopping over the bridge's plain-HTTP endpoints: ``POST /stop``, ``/estop``, ``/estop/clear``.

These are for a sender that cannot open a WebSocket: the bridge answers an
upgrade from an address over its connection budget with 429, but never holds
these three back for it (``docs/protocol.md``, "HTTP endpoints").
``viewer-bridge send`` falls back to them when its WebSocket is refused so.
The endpoints sit at the root of the bridge's host and port, whatever its
WebSocket path; the WebSocket URL's query (``?robot=``, ``?token=``) is kept.
"""

from __future__ import annotations

import asyncio
import json
import ssl as ssl_module
import urllib.error
import urllib.request
from email.message import Message
from typing import IO, Any, Final
from urllib.parse import urlsplit, urlunsplit

from viewer_bridge.clients.client import ClientError, redact_url

__all__ = ["SAFETY_PATHS", "HttpRefused", "http_url", "offline_robots", "post_safety", "unseen_note"]

SAFETY_PATHS: Final = ("/stop", "/estop", "/estop/clear")
_MAX_ANSWER: Final = 64 * 1024  # the bridge's answers are a few hundred bytes


class HttpRefused(ClientError):
    """The bridge answered the request with an HTTP error; ``status`` is its code, ``reason`` its words."""

    def __init__(self, message: str, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def http_url(ws_url: str, path: str) -> str:
    """The ``http(s)://`` URL of ``path`` on the bridge that ``ws_url`` (``ws://`` or ``wss://``) names."""
    parts = urlsplit(ws_url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL (ws://HOST:PORT/ws or wss://...): {ws_url!r}")
    return urlunsplit(parts._replace(scheme="https" if parts.scheme == "wss" else "http", path=path, fragment=""))


async def post_safety(
    ws_url: str,
    path: str,
    *,
    token: str | None = None,
    ssl: ssl_module.SSLContext | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """POST to one of :data:`SAFETY_PATHS` on the bridge of ``ws_url``; returns its JSON answer.

    Raises :class:`HttpRefused` for an HTTP error (401 token, 403 role, 404
    unknown robot, ...) and :class:`ClientError` when no answer came.
    """
    if path not in SAFETY_PATHS:
        raise ValueError(f"not a safety endpoint: {path!r} (one of {', '.join(SAFETY_PATHS)})")
    url = http_url(ws_url, path)
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # urllib blocks; a thread keeps the caller's loop free (and its timeout bounds the wait).
    return await asyncio.to_thread(_post, request, ssl, timeout)


def offline_robots(answer: dict[str, Any]) -> list[str]:
    """The robots a fleet station's safety answer names as offline (its agent not seen)."""
    offline = answer.get("offline")
    return [str(name) for name in offline] if isinstance(offline, list) else []


def unseen_note(robots: list[str], kind: str, short: bool = False) -> str:
    """What an operator must know when a safety request went to robots the station does not see."""
    names = ", ".join(robots)
    verb = "is" if len(robots) == 1 else "are"
    if short:
        return f"{names} {verb} offline: the {kind} may not reach {'it' if len(robots) == 1 else 'them'}"
    return (
        f"{names} {verb} offline (the station does not see its agent): the {kind} was published at the "
        "station but may not reach it; an agent that has lost the station stops its robot itself after its "
        "link timeout"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: urllib would turn the POST into a GET and take the token along."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _post(request: urllib.request.Request, context: ssl_module.SSLContext | None, timeout: float) -> dict[str, Any]:
    shown = f"POST {redact_url(request.full_url)}"
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout) as response:
            return _answer(shown, response.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        with exc:
            answer = exc.read(_MAX_ANSWER)
        location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
        if location is not None:
            reason = f"redirected to {redact_url(location)}; not followed: give the bridge's own address"
        else:
            try:
                reason = str(json.loads(answer)["reason"])
            except (ValueError, KeyError, TypeError):
                reason = answer[:200].decode("utf-8", "replace").strip() or str(exc.reason)
        raise HttpRefused(f"{shown}: HTTP {exc.code}: {reason}", exc.code, reason) from None
    except (urllib.error.URLError, OSError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise ClientError(f"{shown}: no answer: {why}") from None


def _answer(shown: str, raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ClientError(f"{shown}: the answer is not JSON: {raw[:100]!r}") from None
    if not isinstance(answer, dict):
        raise ClientError(f"{shown}: the answer is not a JSON object: {raw[:100]!r}")
    return answer

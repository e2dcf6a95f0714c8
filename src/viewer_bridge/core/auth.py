"""Who may connect, sans I/O: the shared-token check, the Origin check, and log redaction.

dimos-viewer can carry a secret only in the query string of its ``--ws-url``
(``?token=...``); other clients may use ``Authorization: Bearer ...``. Tokens
are compared in constant time, and query strings are redacted before anything
is logged so the token never reaches a log file.

The Origin check stops cross-site WebSocket hijacking: a web page on another
site can make a visitor's browser open a WebSocket to the bridge, and the
browser then sends that site's ``Origin``. Native clients (the viewer, the
Python client) send no Origin and are not affected.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlsplit

__all__ = ["check_origin", "check_token", "redact_target", "split_target"]


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split an HTTP request target into its path and parsed query."""
    parts = urlsplit(target)
    return parts.path or "/", parse_qs(parts.query, keep_blank_values=True)


def check_token(expected: str | None, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> bool:
    """True when no token is configured, or the request presents it."""
    if not expected:
        return True
    wanted = expected.encode("utf-8")
    offered: list[str] = list(query.get("token", []))
    authorization = headers.get("authorization") or headers.get("Authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
    ok = False
    for candidate in offered:
        # Compare every candidate so timing does not reveal which one matched.
        ok |= hmac.compare_digest(candidate.encode("utf-8"), wanted)
    return ok


def check_origin(origin: str | None, host: str | None, allowed: Iterable[str], secure: bool) -> bool:
    """True when ``origin`` may open a connection.

    Accepted: no Origin (a native client); the bridge's own origin (the page it
    serves, i.e. an Origin naming the same host:port as the ``Host`` header);
    any origin listed in ``allowed``, or anything when ``allowed`` has ``*``.
    """
    if origin is None:
        return True
    allowed = list(allowed)
    if "*" in allowed:
        return True
    normalized = origin.rstrip("/").lower()
    if normalized in (a.rstrip("/").lower() for a in allowed):
        return True
    if host:
        own = {f"http://{host.lower()}", f"https://{host.lower()}"}
        if normalized in own:
            return True
        # A browser omits the default port from Origin but some clients keep
        # it in Host (and vice versa).
        parts = urlsplit(normalized)
        scheme_default = 443 if parts.scheme == "https" else 80
        try:
            origin_port = parts.port or scheme_default
        except ValueError:
            return False
        host_parts = urlsplit(f"//{host.lower()}")
        try:
            host_port = host_parts.port or (443 if secure else 80)
        except ValueError:
            return False
        if parts.hostname == host_parts.hostname and origin_port == host_port:
            return True
    return False


def redact_target(target: str) -> str:
    """The request target with every query value replaced, safe to log."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    keys = [item.partition("=")[0] for item in query.split("&") if item]
    return path + "?" + "&".join(f"{k}=***" for k in keys)

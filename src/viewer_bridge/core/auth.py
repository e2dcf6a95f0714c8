"""Who may connect, sans I/O: tokens and their roles, the Host check, the Origin check.

dimos-viewer can carry a secret only in the query string of its ``--ws-url``
(``?token=...``); other clients may use ``Authorization: Bearer ...``. A
bridge has one shared token (``token``), a table of named tokens each with a
role (``tokens``, see :mod:`viewer_bridge.core.roles`), or both:
:class:`TokenTable` holds them and :meth:`TokenTable.match` says whose token
a request presents. Secrets are compared as SHA-256 digests with
:func:`hmac.compare_digest`, every offered candidate against every entry, so
neither the content nor the length of a secret shows in the timing. Only a
token's name ever reaches a log line, ``/status`` or a metric label.

The Host check stops DNS rebinding: a web page whose name the attacker
re-points at 127.0.0.1 talks to the bridge from the victim's browser with
its *own* name in ``Host`` (and a matching ``Origin``, so the Origin check
alone passes it). A request is answered only when ``Host`` names an IP
address, ``localhost``, the name the bridge was bound to, or a name the
operator listed (``allowed_hosts``): an attacker cannot make a browser send
any of those for a page of its own.

The Origin check stops cross-site WebSocket hijacking: a web page on another
site can make a visitor's browser open a WebSocket to the bridge, and the
browser then sends that site's ``Origin``. Native clients (the viewer, the
Python client) send no Origin and are not affected.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, urlsplit

from viewer_bridge.core.logsafe import redact_target
from viewer_bridge.core.roles import Role

__all__ = [
    "ANONYMOUS",
    "MIN_TOKEN_LENGTH",
    "NAME_PATTERN",
    "NamedToken",
    "Principal",
    "TokenTable",
    "check_host",
    "check_origin",
    "check_token",
    "host_name",
    "is_address",
    "offered_tokens",
    "parse_tokens_file",
    "redact_target",
    "split_target",
    "target_authority",
]

# 16 random characters from a 64-symbol alphabet are 96 bits: out of reach of
# guessing even without the failed-auth brake. `viewer-bridge token` prints 43.
MIN_TOKEN_LENGTH: Final = 16
# Token names appear in logs, metric labels and error frames: plain and short.
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
SHARED_NAME: Final = "shared"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request authenticated as: a token's ``name`` and ``role``.

    ``named`` is false for the single shared ``token`` and for a bridge with
    no token at all (:data:`ANONYMOUS`); only named tokens are shown to other
    clients (``"field-laptop is driving"``).
    """

    name: str
    role: Role
    named: bool = True


ANONYMOUS: Final = Principal("anonymous", Role.DRIVE, named=False)


@dataclass(frozen=True, slots=True)
class NamedToken:
    """One entry of the tokens table, as configured."""

    name: str
    role: Role
    secret: str = field(repr=False)


class TokenTable:
    """The tokens a bridge accepts, and who each one is."""

    __slots__ = ("_entries", "secrets")

    def __init__(self, shared: str | None = None, named: Iterable[NamedToken] = ()) -> None:
        """``shared`` is the ``token`` setting (role ``drive``); ``named`` the ``tokens`` table.

        Raises ``ValueError`` naming the entry (never showing a secret) for a
        short secret, a bad or repeated name, or one secret used twice.
        """
        entries: list[tuple[bytes, Principal]] = []
        names: set[str] = set()
        if shared is not None:
            _check_secret(shared, "token")
            entries.append((_digest(shared), Principal(SHARED_NAME, Role.DRIVE, named=False)))
        for entry in named:
            if not NAME_PATTERN.match(entry.name):
                raise ValueError(
                    f"token name {entry.name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                    "letter or digit"
                )
            if entry.name in names:
                raise ValueError(f"token name {entry.name!r} is used twice")
            names.add(entry.name)
            _check_secret(entry.secret, f"token {entry.name!r}")
            digest = _digest(entry.secret)
            if any(hmac.compare_digest(digest, known) for known, _ in entries):
                raise ValueError(f"token {entry.name!r} has the same secret as another token; give each its own")
            entries.append((digest, Principal(entry.name, Role(entry.role))))
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(entries)
        # Kept only to scrub them from anything logged.
        self.secrets: tuple[str, ...] = (
            *(() if shared is None else (shared,)),
            *(entry.secret for entry in named),
        )

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> list[Principal]:
        return [principal for _, principal in self._entries]

    def match(self, offered: Sequence[str]) -> Principal | None:
        """Whose token is among ``offered``: the principal, or ``None`` for no match.

        With no tokens configured everyone is :data:`ANONYMOUS` (a loopback bridge).
        """
        if not self._entries:
            return ANONYMOUS
        found: Principal | None = None
        for candidate in offered:
            digest = _digest(candidate)
            # Every candidate against every entry, so timing does not show which (if any) matched.
            for known, principal in self._entries:
                if hmac.compare_digest(digest, known) and found is None:
                    found = principal
        return found


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _check_secret(secret: str, what: str) -> None:
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"{what} is {len(secret)} characters long; use at least {MIN_TOKEN_LENGTH} "
            "(`viewer-bridge token` prints a strong one)"
        )
    if secret != secret.strip() or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise ValueError(f"{what} holds whitespace or control characters; clients could not send it")


def parse_tokens_file(text: str, source: str) -> list[NamedToken]:
    """A tokens file: one ``name role secret`` per line; blank lines and ``#`` comments are skipped.

    Errors name the file and line, never the secret.
    """
    tokens: list[NamedToken] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split()
        if len(fields) != 3:
            raise ValueError(f"{source} line {number}: expected 'name role secret' ({len(fields)} fields found)")
        name, role, secret = fields
        if role not in Role.__members__.values():
            raise ValueError(
                f"{source} line {number}: role {role!r} of token {name!r} is not one of "
                f"{', '.join(r.value for r in Role)}"
            )
        tokens.append(NamedToken(name, Role(role), secret))
    return tokens


def offered_tokens(query: Mapping[str, list[str]], headers: Mapping[str, str]) -> list[str]:
    """The tokens a request presents: ``?token=`` values and an ``Authorization: Bearer`` credential."""
    offered: list[str] = list(query.get("token", []))
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
    return offered


def host_name(host: str) -> str | None:
    """The name or address in a ``Host`` header (port and brackets removed, lower case), or None if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[1:end], host[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return name or None
    name, sep, port = host.partition(":")
    if sep and not port.isdigit():
        return None
    return name.rstrip(".") or None


def is_address(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 address literal (not a host name)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def check_host(host: str | None, allowed: Iterable[str], bound: Iterable[str] = ()) -> bool:
    """True when a request's ``Host`` header may be answered (the DNS-rebinding check).

    Accepted: an IP address, ``localhost``, a name in ``bound`` (the names the
    bridge was bound to and its own host name), or a name in ``allowed``
    (``.example.org`` allows its subdomains; ``*`` allows anything).
    """
    if host is None:
        return False
    name = host_name(host)
    if name is None:
        return False
    if name == "localhost" or is_address(name):
        return True
    for entry in (*allowed, *bound):
        entry = entry.strip().lower().rstrip(".")
        if entry == "*" or entry == name or (entry.startswith(".") and name.endswith(entry)):
            return True
    return False


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """Split an HTTP request target into its path and parsed query.

    The usual origin form (``/path?query``, RFC 9112 section 3.2.1) is split
    at its first ``?`` and nothing else: read as a URL, ``//stop`` would be a
    host named ``stop`` with an empty path, and ``//x/ws`` would reach
    ``/ws``. Only the absolute form (``http://host/path``) is read as a URL.
    """
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, parse_qs(query, keep_blank_values=True)
    parts = urlsplit(target)
    return parts.path or "/", parse_qs(parts.query, keep_blank_values=True)


def target_authority(target: str) -> str | None:
    """The ``host[:port]`` of an absolute-form request target (``http://host/path``); None for any other form.

    A server must take the host from such a target and ignore the Host
    header (RFC 9112 section 3.2.2), so that is the name to check.
    """
    if target.startswith("/"):
        return None
    return urlsplit(target).netloc or None


def check_token(expected: str | None, query: Mapping[str, list[str]], headers: Mapping[str, str]) -> bool:
    """True when no token is configured, or the request presents ``expected`` (compared in constant time)."""
    if not expected:
        return True
    wanted = _digest(expected)
    ok = False
    for candidate in offered_tokens(query, headers):
        # Compare every candidate so timing does not reveal which one matched.
        ok |= hmac.compare_digest(_digest(candidate), wanted)
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

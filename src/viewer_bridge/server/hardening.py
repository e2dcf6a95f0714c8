"""The server's defenses that need the operating system: name resolution, descriptor limits, log plumbing.

* :func:`prepare` runs once at start (on a worker thread: it resolves names
  and reads files). It resolves the bind host and decides *by address* whether
  the bridge is loopback-only (``127.evil.example`` is a name, and what it
  resolves to is what counts); the server then binds exactly the addresses
  that were checked, so a name that resolves differently a moment later
  changes nothing. It reads the tokens, and sizes the pre-auth connection cap
  to the process's file-descriptor limit. :func:`deepen_accept_queue` gives
  the listening sockets a long kernel queue, so a flood of connections does
  not make the kernel drop a viewer's.
* :class:`AcceptErrors` is installed as the event loop's exception handler
  while the server runs. At the descriptor limit ``accept()`` fails with
  EMFILE and asyncio reports it, with a traceback, every time it retries;
  under a connection flood that is thousands of lines. The handler turns it
  into one warning with a count every few seconds, drops pending
  (unauthenticated) connections to free descriptors, and passes every other
  error on unchanged.
* :class:`PicowsLog` is the logger picows is given: it never enables picows's
  below-DEBUG trace (which logs raw request bytes, token included), escapes
  and redacts what picows logs, and rate-limits its per-connection
  complaints.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import resource
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from viewer_bridge.config import BridgeConfig, ConfigError
from viewer_bridge.core.auth import TokenTable, is_address, parse_tokens_file
from viewer_bridge.core.logsafe import Throttle, clean, scrub

__all__ = ["ACCEPT_BATCH", "AcceptErrors", "PicowsLog", "SecuritySetup", "deepen_accept_queue", "prepare"]

log = logging.getLogger(__name__)

# asyncio accepts up to its ``backlog`` connections per loop turn, each a new
# descriptor before any protocol has seen it: this bounds that burst. The
# kernel's queue is made longer separately (deepen_accept_queue).
ACCEPT_BATCH: Final = 32
# A connection refused or dropped at the front door gives its descriptor back
# three loop turns after it was accepted (task, connection_made, close), with
# a new batch accepted on each turn: descriptors in flight, with a margin.
_IN_FLIGHT: Final = 6 * ACCEPT_BATCH
# Descriptors kept free for what is not a client: the listening sockets, bus
# transports, the event loop's own, files opened while running.
_FD_RESERVE: Final = 64
# The fewest pending connections the bridge will plan for, whatever the limit.
_MIN_PENDING: Final = 16
# The EMFILE warning is repeated at most this often.
_ACCEPT_LOG_INTERVAL: Final = 10.0
# Pending connections dropped each time accept() runs out of descriptors.
_SHED_ON_EMFILE: Final = 16
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class SecuritySetup:
    """What :func:`prepare` found: who may connect, where to bind, and how many may wait."""

    tokens: TokenTable
    shared_token: str | None
    bind_addresses: tuple[str, ...]
    """The addresses the host resolved to; the server binds exactly these."""
    loopback: bool
    """Every bind address is a loopback address."""
    host_names: tuple[str, ...]
    """Names a ``Host`` header may carry besides IP addresses and ``localhost``."""
    max_pending: int
    fd_limit: int | None


def prepare(config: BridgeConfig) -> SecuritySetup:
    """Resolve, read and size everything the defenses need. Blocking; raises ConfigError naming the problem."""
    shared = config.resolved_token()
    named = config.named_tokens()
    if config.tokens_file:
        try:
            text = Path(config.tokens_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read tokens_file {config.tokens_file!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"tokens_file {config.tokens_file!r} is not UTF-8 text") from None
        try:
            named += parse_tokens_file(text, f"tokens_file {config.tokens_file!r}")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    try:
        tokens = TokenTable(shared, named)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    addresses = resolve_bind(config.host, config.port)
    loopback = all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses)
    names = {config.host.lower()} if config.host and not is_address(config.host) else set()
    own = socket.gethostname().lower()
    if own:
        names |= {own, f"{own.split('.', 1)[0]}.local"}
    fd_limit = _fd_limit()
    max_pending = config.max_pending
    if fd_limit is not None:
        room = fd_limit - _open_fds() - config.max_connections - _FD_RESERVE - _IN_FLIGHT
        if room < max_pending:
            max_pending = max(_MIN_PENDING, room)
            log.info(
                "at most %d unauthenticated connections at a time (file-descriptor limit %d, %d connections)",
                max_pending, fd_limit, config.max_connections,
            )
    return SecuritySetup(
        tokens=tokens,
        shared_token=shared,
        bind_addresses=addresses,
        loopback=loopback,
        host_names=tuple(sorted(names)),
        max_pending=max_pending,
        fd_limit=fd_limit,
    )


def deepen_accept_queue(server: asyncio.Server) -> None:
    """Let the kernel queue up to ``SOMAXCONN`` connections for ``server`` (asyncio listens with its batch size).

    A connection flood fills a short queue, and the kernel then drops a
    viewer's SYN, which it resends only after a second; a long queue is
    drained at once instead, the flood's connections refused per address.
    """
    for listening in server.sockets:
        # A duplicate descriptor of the same socket: listen() on it changes the one queue they share.
        with socket.fromfd(listening.fileno(), listening.family, listening.type) as same:
            same.listen(socket.SOMAXCONN)


def resolve_bind(host: str, port: int) -> tuple[str, ...]:
    """The addresses ``host`` resolves to for listening (every interface for ``""``), in resolver order."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve host {host!r} to listen on: {exc.strerror}") from None
    addresses: list[str] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise ConfigError(f"host {host!r} resolves to no IPv4 or IPv6 address")
    return tuple(addresses)


def _fd_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - not Linux
        return _FD_RESERVE


class AcceptErrors:
    """The event loop's exception handler while a server runs: accept() at the fd limit, summarised.

    ``shed(n)`` is called with how many pending connections to drop when
    accept() fails for lack of descriptors. Other errors go to the handler
    that was installed before (or the loop's default).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, shed: Callable[[int], int], clock: Callable[[], float]) -> None:
        self._loop = loop
        self._shed = shed
        self._clock = clock
        self._previous = loop.get_exception_handler()
        self._active = True
        self._throttle = Throttle(_ACCEPT_LOG_INTERVAL)
        self.failures = 0
        self.shed_total = 0
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            self._active
            and isinstance(exc, OSError)
            and exc.errno in _RESOURCE_ERRNOS
            and "accept" in str(context.get("message", ""))
        ):
            self.failures += 1
            dropped = self._shed(_SHED_ON_EMFILE)
            self.shed_total += dropped
            held_back = self._throttle.allow("accept", self._clock())
            if held_back is not None:
                log.warning(
                    "cannot accept connections: %s (%s); dropped %d unauthenticated connections to make room "
                    "(%d more such failures since last logged)",
                    os.strerror(exc.errno or 0), errno.errorcode.get(exc.errno or 0, "?"), dropped, held_back,
                )
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def remove(self) -> None:
        """Restore the handler that was there before (or, if another was installed since, step aside)."""
        self._active = False
        if self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)


class PicowsLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to picows (not a ``logging.Logger``, so picows makes no per-socket child loggers).

    Levels below DEBUG are never enabled: picows's trace level logs every
    request's raw bytes, token included. Arguments are escaped and known
    secrets scrubbed; each warning or error message is logged at most once
    per interval with a count (one per bad connection would let a client
    flood the log).
    """

    def __init__(self, logger: logging.Logger, secrets: Sequence[str], clock: Callable[[], float]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(secrets)
        self._clock = clock
        self._throttle = Throttle(_ACCEPT_LOG_INTERVAL, max_keys=64)

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.DEBUG and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if level >= logging.WARNING:
            held_back = self._throttle.allow(str(msg), self._clock())
            if held_back is None:
                return
            if held_back:
                msg = f"{msg} ({held_back} more since last logged)"
        safe = tuple(a if isinstance(a, (int, float)) else scrub(clean(a), self._secrets) for a in args)
        self.logger.log(level, msg, *safe, **kwargs)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.INFO, msg, *args, **kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info, **kwargs)

"""The ``viewer-bridge`` command line: ``serve``, ``token``, and ``send``, ``teleop``, ``listen`` from their modules.

Every :class:`~viewer_bridge.config.BridgeConfig` setting is a ``serve`` flag
(``max_linear_x`` -> ``--max-linear-x``); lists are repeatable flags. Flags
override ``VIEWER_BRIDGE_*`` environment variables, which override the TOML
file given with ``--config``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

from viewer_bridge.bus import agent, listen
from viewer_bridge.bus.transports import TransportError
from viewer_bridge.clients import send, teleop
from viewer_bridge.config import BridgeConfig, ConfigError, add_flags, flag_values, load_config
from viewer_bridge.core.auth import NAME_PATTERN
from viewer_bridge.core.logsafe import escape
from viewer_bridge.core.roles import Role
from viewer_bridge.server.pump import AsyncRerunWebSocketServer, BindError, interface_addresses
from viewer_bridge.version import __version__

__all__ = ["main"]

log = logging.getLogger(__name__)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _TextFormatter(logging.Formatter):
    """One record, one line: control characters in the message are escaped whoever logged it.

    The bridge escapes what clients send where it logs it; this is the net
    under that, for a library's message that quotes client input. A
    traceback (the exception text) is still printed over several lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so a replaced stderr never breaks logging."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def setup_logging(level: str, fmt: str) -> None:
    handler = _StderrHandler()
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # picows logs every connection and handshake failure at INFO; the bridge
    # reports those itself, naming the client.
    for name in ("picows", "viewer_bridge.picows"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def add_serve_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        # No abbreviations: "--tokens SECRET..." must not be taken for --tokens-file (secrets stay out of argv).
        allow_abbrev=False,
        help="run the bridge",
        usage="%(prog)s [-h] [--config FILE] [-v] [--SETTING VALUE ...]",
        description="Accept dimos-viewer (and browser/terminal clients) and publish what they send. "
        "Every setting is also a VIEWER_BRIDGE_<SETTING> environment variable and a key in the --config "
        "file; flags override the environment, which overrides the file.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (top level or a [bridge] table)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (same as --log-level DEBUG)")
    add_flags(parser)
    parser.set_defaults(func=cmd_serve)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    values = flag_values(args)
    if args.verbose:
        values["log_level"] = "DEBUG"
    return values


def banner(server: AsyncRerunWebSocketServer, token_set: bool) -> list[str]:
    config = server.config
    hosts = interface_addresses() if config.host in ("0.0.0.0", "", "::") else [None]
    suffix = "?token=<your token>" if token_set else ""
    lines = [f"viewer-bridge {__version__} listening. Point dimos-viewer at:"]
    for host in hosts:
        lines.append(f"  dimos-viewer --ws-url {server.websocket_url(host)}{suffix}")
    if config.web:
        lines.append(f"Browser teleop page: {server.http_url('/', hosts[0])}")
    lines.append(f"Health: {server.http_url('/healthz', hosts[0])}  Metrics: {server.http_url('/metrics', hosts[0])}")
    lines.append("Streams:")
    for topic in server.topics:
        where = [f"in-process {topic.stream}"]
        for transport in server.transports:
            where.append(f"{transport.name} {transport.describe(topic)}")
        lines.append(f"  {topic.stream} ({topic.type_name}) -> " + ", ".join(where))
    if server.mux is not None:
        lines.extend(server.mux.describe(server.transports))
    return lines


async def _serve(config: BridgeConfig) -> int:
    # --echo prints from a thread of its own (see viewer_bridge.bus.echo): a stdout nobody reads holds up nothing.
    server = AsyncRerunWebSocketServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
    except (BindError, ConfigError, TransportError) as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, (BindError, TransportError)) else 2
    try:
        for line in banner(server, server.auth_required):
            print(line, file=sys.stderr)
        sys.stderr.flush()
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, flags=_flags(args))
    except ConfigError as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    return asyncio.run(_serve(config))


def add_token_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "token",
        help="print a new random token",
        description="Print a strong random token (256 bits, URL-safe). With --name, print a line for a "
        "tokens_file: 'NAME ROLE SECRET'.",
    )
    parser.add_argument("--name", help="the token's name (shown in logs, /status and metrics)")
    parser.add_argument(
        "--role", choices=[role.value for role in Role], default=Role.DRIVE.value,
        help="with --name: drive (default), stop (stop only) or view (status only)",
    )
    parser.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    secret = secrets.token_urlsafe(32)
    if args.name is None:
        print(secret)
        return 0
    if not NAME_PATTERN.match(args.name):
        print(f"viewer-bridge: token name {args.name!r} must be 1-64 letters, digits, '.', '_' or '-'", file=sys.stderr)
        return 2
    print(f"{args.name} {args.role} {secret}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="viewer-bridge", description="Drive a robot from dimos-viewer, a browser or a terminal, safely."
    )
    parser.add_argument("--version", action="version", version=f"viewer-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(sub)
    add_token_parser(sub)
    # Client commands live beside what they drive; each adds its own subcommand.
    send.register(sub)
    teleop.register(sub)
    listen.register(sub)
    agent.register(sub, setup_logging)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse reports a sub-command's unknown flag with the top-level usage;
        # the usage of the command that was typed is the one that helps.
        _deepest_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    result: int = args.func(args)
    return result


def _deepest_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser of the command in ``args``, e.g. ``send twist``'s."""
    current = parser
    while True:
        subparsers = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not subparsers:
            return current
        action = subparsers[0]
        chosen = getattr(args, action.dest, None) if action.dest != argparse.SUPPRESS else None
        if chosen is None or chosen not in action.choices:
            return current
        current = action.choices[chosen]

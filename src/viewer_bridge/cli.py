"""The ``viewer-bridge`` command line: ``serve``, plus ``send``, ``teleop`` and ``listen`` from their modules.

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
import signal
import sys
import typing
from collections.abc import Sequence
from typing import Any, Final

from viewer_bridge.bus import agent, listen
from viewer_bridge.bus.transports import TransportError
from viewer_bridge.clients import send, teleop
from viewer_bridge.config import BridgeConfig, ConfigError, field_docs, load_config, parse_remaps
from viewer_bridge.server.pump import AsyncRerunWebSocketServer, BindError, interface_addresses
from viewer_bridge.version import __version__

__all__ = ["main"]

log = logging.getLogger(__name__)

# Settings that get a hand-written flag (repeatable or renamed) instead of a generated one.
_SPECIAL: Final = {"transports", "allowed_origins", "zenoh_connect", "zenoh_listen", "remap", "log_level", "robots"}
_HELP: Final = {
    "host": "address to bind (default 127.0.0.1; anything else needs a token or --insecure)",
    "port": "TCP port (default 3030; 0 picks a free one)",
    "path": "the WebSocket path (default /ws)",
    "frame_id": "frame_id of published clicks (default world)",
    "echo": "print every published message: text or json (JSON lines on stdout)",
    "token": "shared secret clients must present (prefer --token-file or VIEWER_BRIDGE_TOKEN)",
    "token_file": "file whose first line is the token",
    "insecure": "allow a non-loopback bind without a token",
    "deadman_timeout": "seconds a non-zero command stays valid without a refresh (default 1.0)",
    "republish_hz": "re-send the command in force at this rate (default 0 = off)",
    "rerun_url": "Rerun gRPC URL (rerun+http://HOST:9876/proxy) for the web page's 3D view",
    "web": "serve the browser page at / (default on)",
    "rerun_connect": "log the bridge's status, goals, refusals and commands into this Rerun gRPC server "
    "(e.g. rerun+http://127.0.0.1:9877/proxy; needs viewer-bridge[rerun]; see docs/viewer-awareness.md)",
    "rerun_app_id": "Rerun application id to log under (default dimos)",
    "rerun_recording_id": "Rerun recording id to log into (default $RERUN_RECORDING_ID, else the SDK's own)",
    "rerun_prefix": "entity path of what the bridge logs (default bridge/; world/bridge/ for DimOS's 3D view)",
    "log_format": "text or json",
    "lcm_url": "LCM URL (default $LCM_DEFAULT_URL, else udpm://239.255.76.67:7667?ttl=0; ttl=1 reaches the LAN)",
    "zenoh_mode": "Zenoh session mode: peer (default) or client (through a zenohd router)",
    "zenoh_multicast_scouting": "find Zenoh peers by UDP multicast (default on)",
    "namespace": "prefix for every topic on the bus, e.g. robot1",
    "mux": "navigation Twist topic to mux with teleop (teleop wins), e.g. nav_cmd_vel",
    "mux_output": "topic the mux publishes (default cmd_vel)",
    "mux_cooldown": "seconds after the last teleop command before navigation passes again (default 1.0)",
}


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # picows logs every connection and handshake failure at INFO; the bridge
    # reports those itself, naming the client.
    logging.getLogger("picows").setLevel(max(logging.WARNING, root.level))


def _flag_type(annotation: Any) -> tuple[Any, dict[str, Any]]:
    """The argparse type and options for a config field's type (Optional is unwrapped)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    if annotation is bool:
        return None, {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(annotation) is typing.Literal:
        return str, {"choices": list(typing.get_args(annotation))}
    if annotation in (int, float):
        return annotation, {}
    return str, {}


def _help(name: str, docs: dict[str, str]) -> str:
    text = _HELP.get(name) or docs.get(name)
    if text is None and name.startswith("scale_"):
        text = f"factor applied to {name[6:]} before clamping (default 1.0)"
    elif text is None and name.startswith("max_"):
        text = f"clamp on |{name[4:]}| after scaling (default: none)"
    return (text or name).replace("%", "%%")


def add_serve_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the bridge",
        description="Accept dimos-viewer (and browser/terminal clients) and publish what they send.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    hints = typing.get_type_hints(BridgeConfig)
    docs = field_docs()
    for name in BridgeConfig.__struct_fields__:
        if name in _SPECIAL:
            continue
        flag_type, extra = _flag_type(hints[name])
        if flag_type is not None:
            extra["type"] = flag_type
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, help=_help(name, docs), **extra
        )
    parser.add_argument("--transport", dest="transports", action="append", help="lcm or zenoh (repeatable)")
    parser.add_argument(
        "--allowed-origin", dest="allowed_origins", action="append", help="extra allowed Origin (repeatable)"
    )
    parser.add_argument("--zenoh-connect", action="append", help="Zenoh endpoint to connect to (repeatable)")
    parser.add_argument("--zenoh-listen", action="append", help="Zenoh endpoint to listen on (repeatable)")
    parser.add_argument(
        "--remap", action="append", metavar="STREAM=TOPIC", help="rename a stream on the bus (repeatable)"
    )
    parser.set_defaults(func=cmd_serve)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in BridgeConfig.__struct_fields__:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if args.remap:
        values["remap"] = parse_remaps(args.remap)
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
        for line in banner(server, server.token is not None):
            print(line, file=sys.stderr)
        sys.stderr.flush()
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    return asyncio.run(_serve(config))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="viewer-bridge", description="Drive a robot from dimos-viewer, a browser or a terminal, safely."
    )
    parser.add_argument("--version", action="version", version=f"viewer-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(sub)
    # Client commands live beside what they drive; each adds its own subcommand.
    send.register(sub)
    teleop.register(sub)
    listen.register(sub)
    agent.register(sub, setup_logging)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result

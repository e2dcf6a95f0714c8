"""``viewer-bridge send``: send one message to a bridge and report whether it was accepted.

    viewer-bridge send click 1 2 0 --entity-path /world/map
    viewer-bridge send twist --linear-x 0.5 --duration 2
    viewer-bridge send stop --url ws://robot:3030/ws --token-file ~/.robot-token
    viewer-bridge send estop --reason "person in the aisle"
    viewer-bridge send estop-clear

The bridge answers only bad messages, so ``send`` closes the connection with
the close handshake after sending: the bridge handles a connection's frames
in order, so its error frame, if any, arrives before its answer to the close.
No grace period is guessed. Exit status: 0 accepted, 1 refused by the bridge
(its reason is printed), 2 bad arguments, 3 no connection or no answer.

``estop`` and ``estop-clear`` also wait (within ``--timeout``) for the status
frame that shows the change, and print the e-stop's state from it: who
latched it, when and why.

A ``stop``, ``estop`` or ``estop-clear`` whose WebSocket the bridge refuses
for being busy (429: this address over its connection budget; 503: every
connection taken) goes as ``POST /stop``, ``/estop`` or ``/estop/clear``
instead, which neither holds back.

The connection options here (``--url``, ``--token``, ``--token-file``,
``--cafile``, ``--no-verify``) are shared with ``viewer-bridge teleop``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from typing import Any, Final

import msgspec

from viewer_bridge.clients.client import (
    DEFAULT_URL,
    AsyncViewerClient,
    ClientError,
    ConnectError,
    ServerError,
)
from viewer_bridge.clients.safety_http import HttpRefused, offline_robots, post_safety, unseen_note
from viewer_bridge.config import ConfigError, read_token_file
from viewer_bridge.core.protocol import MAX_REASON, EstopState
from viewer_bridge.core.safety import AXES

__all__ = ["EXIT_NO_ANSWER", "EXIT_REJECTED", "add_connection_options", "client_options", "register"]

EXIT_REJECTED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ANSWER: Final = 3

# The env variables read for defaults: the viewer's own URL variable, and the
# token variable the bridge itself reads, so one export serves both ends.
URL_ENV: Final = "DIMOS_VIEWER_WS_URL"
TOKEN_ENV: Final = "VIEWER_BRIDGE_TOKEN"
# What ``send`` does over HTTP when the bridge refuses its WebSocket for being busy: this address over its
# connection budget (429) or every connection taken (503). Neither holds these endpoints back.
_OVER_HTTP: Final = {"stop": "/stop", "estop": "/estop", "estop-clear": "/estop/clear"}
_BUSY: Final = (429, 503)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def estop_reason(text: str) -> str:
    # Never a reason not to stop: a reason too long is cut (the bridge would cut it too), not refused.
    if len(text) > MAX_REASON:
        print(f"viewer-bridge send: --reason cut to {MAX_REASON} characters", file=sys.stderr)
        return text[: MAX_REASON - 1] + "\u2026"
    return text


def describe_estop(estop: EstopState | None) -> str:
    """One line for people: who latched the e-stop, when (local time) and why; or that it is released."""
    if estop is None:
        return "e-stop released"
    when = time.strftime("%H:%M:%S", time.localtime(estop.at))
    why = f": {estop.reason}" if estop.reason else ""
    return f"e-stop LATCHED by {estop.by} at {when}{why}"


def add_connection_options(parser: argparse.ArgumentParser, suppress_defaults: bool = False) -> None:
    """``--url``, ``--token``, ``--token-file``, ``--cafile``, ``--no-verify``, ``--timeout``.

    With ``suppress_defaults`` an absent option leaves no attribute, so the
    same options can be given both before and after a sub-command.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress_defaults else value

    group = parser.add_argument_group("connection")
    group.add_argument(
        "--url",
        default=default(None),
        help=f"the bridge's WebSocket URL (default ${URL_ENV} or {DEFAULT_URL}); wss:// for TLS",
    )
    group.add_argument(
        "--token", default=default(None), help=f"the bridge's token (default ${TOKEN_ENV}; prefer --token-file)"
    )
    group.add_argument("--token-file", default=default(None), metavar="FILE", help="file whose first line is the token")
    group.add_argument(
        "--cafile",
        default=default(None),
        metavar="PEM",
        help="CA certificate(s) to trust for wss:// (e.g. self-signed)",
    )
    group.add_argument(
        "--no-verify",
        action="store_true",
        default=default(False),
        help="wss:// without checking the certificate (unsafe: anyone on the path can drive)",
    )
    group.add_argument(
        "--robot",
        default=default(None),
        metavar="NAME",
        help="at a fleet station, the robot to drive (adds ?robot=NAME to the URL)",
    )
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=default(5.0),
        metavar="S",
        help="seconds to wait for the connection and for the bridge's answer (default 5)",
    )


def with_robot(url: str, robot: str) -> str:
    """``url`` asking a fleet station for ``robot`` (``?robot=NAME``, replacing one already there)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from viewer_bridge.core.fleet import check_name

    try:
        check_name("robot", robot)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "robot"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("robot", robot)])))


def client_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :class:`AsyncViewerClient` from the connection options and environment.

    Raises :class:`ClientError` for an unreadable token file.
    """
    url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    token = getattr(args, "token", None)
    token_file = getattr(args, "token_file", None)
    if token is None and token_file:
        try:
            token = read_token_file(token_file)
        except ConfigError as exc:
            raise ClientError(str(exc)) from None
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    robot = getattr(args, "robot", None)
    if robot is not None:
        url = with_robot(url, robot)
    timeout = getattr(args, "timeout", 5.0)
    options: dict[str, Any] = {
        "token": token,
        "open_timeout": timeout,
        "close_timeout": timeout,
    }
    if url.startswith("wss:"):
        options["cafile"] = getattr(args, "cafile", None)
        options["verify"] = not getattr(args, "no_verify", False)
    return {"url": url, **options}


def register(subparsers: Any) -> None:
    """Add ``send`` to the ``viewer-bridge`` command line."""
    parser = subparsers.add_parser(
        "send",
        help="send one message (click, twist, stop, estop, estop-clear, heartbeat) and report whether the bridge "
        "accepted it",
        description="Send one message to a bridge and report whether it was accepted. After sending, the "
        "connection is closed with the close handshake; the bridge handles frames in order, so its error (if "
        "any) arrives before its answer to the close: no waiting on a guessed grace period.",
        epilog="Exit status: 0 accepted, 1 refused by the bridge (reason printed), 2 bad arguments, "
        "3 no connection or no answer.",
    )
    add_connection_options(parser)
    parser.add_argument("-q", "--quiet", action="store_true", default=False, help="print nothing on success")
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="MESSAGE")
    # Each message parser takes the connection options too (so they may follow
    # the message, as people type them); they override the ones given before.
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common, suppress_defaults=True)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    click = kinds.add_parser("click", parents=[common], help="a click on a world point (published as clicked_point)")
    for axis in "xyz":
        click.add_argument(axis, type=finite_float, help=f"{axis} of the world point, in meters")
    click.add_argument("--entity-path", default="", help="the clicked entity, e.g. /world/map")
    click.add_argument("--timestamp-ms", type=int, default=None, help="epoch milliseconds (default now)")

    twist = kinds.add_parser(
        "twist",
        parents=[common],
        help="a velocity command (published on tele_cmd_vel)",
        description="Send a twist. Without --duration the bridge publishes it and then, when this command "
        "disconnects, a zero twist (its deadman stops a driver that leaves): a short pulse. With "
        "--duration the twist is re-sent at --rate for that long, then a stop is sent.",
    )
    for axis in AXES:
        unit = "m/s" if axis.startswith("linear") else "rad/s"
        kind, _, name = axis.partition("_")
        twist.add_argument(
            "--" + axis.replace("_", "-"),
            type=finite_float,
            default=0.0,
            metavar=unit.upper(),
            help=f"{kind}.{name} in {unit} (default 0)",
        )
    twist.add_argument("--duration", type=positive_float, default=None, metavar="S", help="drive for S seconds")
    twist.add_argument("--rate", type=positive_float, default=10.0, metavar="HZ", help="re-send rate (default 10)")

    kinds.add_parser("stop", parents=[common], help="stop whoever is driving (a zero twist)")
    estop = kinds.add_parser(
        "estop",
        parents=[common],
        help="latch the e-stop: one zero twist, then no driving or goals from anyone until estop-clear",
        description="Latch the bridge's emergency stop: it publishes one zero twist and estop=true, and refuses "
        "every twist and click (estopped) until someone sends estop-clear, whoever latched it and whether or "
        "not they are still connected. Prints who latched it, when and why.",
    )
    estop.add_argument("--reason", type=estop_reason, default=None, help=f"why, shown to every operator "
                       f"(cut to {MAX_REASON} characters)")
    kinds.add_parser(
        "estop-clear",
        parents=[common],
        help="release a latched e-stop (whoever drove when it latched must let go before driving again)",
    )
    heartbeat = kinds.add_parser("heartbeat", parents=[common], help="liveness only; publishes nothing")
    heartbeat.add_argument("--timestamp-ms", type=int, default=None, help="epoch milliseconds (default now)")
    parser.set_defaults(func=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    try:
        options = client_options(args)
    except ClientError as exc:
        print(f"viewer-bridge send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(_send(args, options))
    except KeyboardInterrupt:
        return 130


async def _send(args: argparse.Namespace, options: dict[str, Any]) -> int:
    try:
        client = AsyncViewerClient(reconnect=False, **options)
    except ValueError as exc:
        print(f"viewer-bridge send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        await client.connect()
    except ConnectError as exc:
        if exc.status in _BUSY and args.kind in _OVER_HTTP:
            return await _send_over_http(args, client, exc)
        print(f"viewer-bridge send: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    what = args.kind
    try:
        try:
            what = await _send_message(client, args)
        finally:
            # Cancellation-safe: whatever happened, a --duration drive ends
            # with the connection closing, which the bridge's deadman answers
            # with a zero twist even if the explicit stop never left.
            async with asyncio.timeout(args.timeout + 1.0):
                confirmed = await client.close()
    except ServerError as exc:
        more = f" (and {len(exc.more)} more)" if exc.more else ""
        field = f" [field {exc.field}]" if exc.field else ""
        print(f"viewer-bridge send: rejected: {exc.reason}: {exc.detail}{field}{more}", file=sys.stderr)
        return EXIT_REJECTED
    except (ClientError, TimeoutError) as exc:
        print(f"viewer-bridge send: {exc or 'timed out'}", file=sys.stderr)
        return EXIT_NO_ANSWER
    if not confirmed:
        print(
            f"viewer-bridge send: the connection ended before the bridge confirmed the {args.kind}; "
            "it may or may not have been handled",
            file=sys.stderr,
        )
        return EXIT_NO_ANSWER
    if not args.quiet:
        print(f"viewer-bridge send: {what}: accepted", file=sys.stderr)
    return 0


async def _send_message(client: AsyncViewerClient, args: argparse.Namespace) -> str:
    """Send what ``args`` asks for; returns a short description of it."""
    kind = args.kind
    if kind == "click":
        await client.click(args.x, args.y, args.z, args.entity_path, args.timestamp_ms)
        return f"click ({args.x:g}, {args.y:g}, {args.z:g})"
    if kind == "stop":
        await client.stop()
        return "stop"
    if kind == "heartbeat":
        await client.heartbeat(args.timestamp_ms)
        return "heartbeat"
    if kind in ("estop", "estop-clear"):
        return await _send_estop(client, args)
    axes = {name: getattr(args, name) for name in AXES}
    shown = " ".join(f"{name}={value:g}" for name, value in axes.items() if value) or "zero"
    if args.duration is None:
        await client.twist(**axes)
        return f"twist {shown}"
    loop = asyncio.get_running_loop()
    end = loop.time() + args.duration
    period = 1.0 / args.rate
    sends = 0
    try:
        while True:
            await client.twist(**axes)
            sends += 1
            remaining = end - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(period, remaining))
    finally:
        if client.connected:
            await client.stop()
    return f"twist {shown} for {args.duration:g} s ({sends} sends) then stop"


async def _send_estop(client: AsyncViewerClient, args: argparse.Namespace) -> str:
    """Latch or clear; then the e-stop's state from the status frame that shows the change."""
    latch = args.kind == "estop"
    if latch:
        await client.estop(args.reason)
    else:
        await client.estop_clear()
    # A refusal (e.g. an older bridge without the e-stop: unknown_type) is raised here, before waiting.
    await client.sync(args.timeout)
    try:
        status = await client.wait_status(lambda s: (s.estop is not None) == latch, args.timeout)
    except TimeoutError:
        shown = client.status
        state = describe_estop(shown.estop) if shown is not None else "no status from the bridge"
        return f"{args.kind} (but the bridge still reports: {state})"
    return f"{args.kind} ({describe_estop(status.estop)})"


async def _send_over_http(args: argparse.Namespace, client: AsyncViewerClient, refused: ConnectError) -> int:
    """A stop or e-stop whose WebSocket was refused as busy: the same over its HTTP endpoint, never held back so."""
    path = _OVER_HTTP[args.kind]
    print(f"viewer-bridge send: {refused}; sending the {args.kind} as POST {path} instead", file=sys.stderr)
    reason = getattr(args, "reason", None)
    body = {"reason": reason} if args.kind == "estop" and reason is not None else None
    try:
        answer = await post_safety(
            client.url, path, token=client.token, ssl=client.ssl, body=body, timeout=args.timeout
        )
        what = _http_outcome(args.kind, answer)
    except HttpRefused as exc:
        print(f"viewer-bridge send: rejected: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except ClientError as exc:
        print(f"viewer-bridge send: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    if not args.quiet:
        print(f"viewer-bridge send: {what}: accepted", file=sys.stderr)
    unseen = offline_robots(answer)
    if unseen:
        # Said even with --quiet: "accepted" must not be read as "the robot heard it".
        print(f"viewer-bridge send: warning: {unseen_note(unseen, args.kind)}", file=sys.stderr)
    return 0


def _http_outcome(kind: str, answer: dict[str, Any]) -> str:
    """A short description of what ``POST /stop`` or ``/estop[/clear]`` answered."""
    try:
        if kind == "stop":
            robots = answer.get("robots")
            if isinstance(robots, dict):
                stopped = ", ".join(f"{robot} (driver {driver or 'none'})" for robot, driver in robots.items())
                return f"stop over HTTP: {stopped or 'no robot'}"
            return f"stop over HTTP (driver was {answer['driver'] or 'nobody'})"
        estop = msgspec.convert(answer["estop"], EstopState | None)
    except (KeyError, msgspec.ValidationError) as exc:
        raise ClientError(f"the bridge's answer to the {kind} is unexpected ({exc}): {answer!r:.200}") from None
    return f"{kind} over HTTP ({describe_estop(estop)})"

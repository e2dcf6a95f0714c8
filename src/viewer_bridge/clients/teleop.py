"""``viewer-bridge teleop``: drive the robot from a terminal, locally or over SSH.

    viewer-bridge teleop --url ws://robot:3030/ws --token-file ~/.robot-token

Keys as in dimos-viewer (see :mod:`viewer_bridge.clients.keys` for the timing
rules), plus X to latch the bridge's e-stop (Ctrl-R then Y releases it). The
robot is never left moving on purpose: ``stop`` is sent when a key stops
repeating, on Space, on quit (Esc, Ctrl-C), when the terminal loses focus, and
on SIGTERM, SIGHUP (the SSH session dropped) and SIGINT. If this process dies
without a word its connection closes, and the bridge's own deadman stops
whoever was driving on that connection.

This module stays light (the CLI imports it to register the command); the
Textual UI is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from typing import Any, Final

from viewer_bridge.clients.client import AsyncViewerClient, ClientError
from viewer_bridge.clients.keys import KeyTeleop, StopWhy
from viewer_bridge.clients.send import EXIT_USAGE, add_connection_options, client_options, positive_float
from viewer_bridge.extras import missing_extra

__all__ = ["register", "run_teleop"]

# After a signal the stop is sent first; if the UI then cannot shut down
# (a terminal that hung up can wedge it), the process ends anyway after this.
_SIGNAL_EXIT_GRACE: Final = 3.0


def register(subparsers: Any) -> None:
    """Add ``teleop`` to the ``viewer-bridge`` command line."""
    parser = subparsers.add_parser(
        "teleop",
        help="drive the robot from the terminal (full screen; works over SSH)",
        description="Drive the robot with the keyboard: W/S forward/back, Q/E left/right, A/D turn, Shift x2, "
        "+/- speed, Space stop, X latch the e-stop (Ctrl-R then Y releases it), Esc or Ctrl-C quit. The screen "
        "shows who drives, the command in force after the bridge's limits, the e-stop, the round trip and the "
        "speed factor the link allows.",
    )
    add_connection_options(parser)
    parser.add_argument(
        "--key-timeout",
        type=positive_float,
        default=0.5,
        metavar="S",
        help="a held key counts as released this long after its last auto-repeat (default 0.5)",
    )
    parser.add_argument(
        "--first-timeout",
        type=positive_float,
        default=0.8,
        metavar="S",
        help="the same after a key's first press, covering the OS key-repeat delay (default 0.8; "
        "raise it if a held key stutters)",
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=10.0,
        metavar="HZ",
        help="re-send a held command this often (default 10)",
    )
    parser.add_argument("--speed", type=positive_float, default=1.0, help="initial speed scale, 0.1 to 2 (default 1.0)")
    parser.set_defaults(func=cmd_teleop)


def cmd_teleop(args: argparse.Namespace) -> int:
    try:
        options = client_options(args)
        keys = KeyTeleop(
            key_timeout=args.key_timeout,
            first_timeout=max(args.first_timeout, args.key_timeout),
            resend_interval=1.0 / args.rate,
            speed=args.speed,
        )
        client = AsyncViewerClient(**options)
    except (ClientError, ValueError) as exc:
        print(f"viewer-bridge teleop: {exc}", file=sys.stderr)
        return EXIT_USAGE
    problem = missing_extra("teleop")
    if problem is not None:
        print(f"viewer-bridge teleop: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        print("viewer-bridge teleop: needs a terminal (stdin and stdout must be a TTY)", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(run_teleop(client, keys))


async def run_teleop(client: AsyncViewerClient, keys: KeyTeleop) -> int:
    """Run the full-screen teleop until the user quits; returns the exit status."""
    from viewer_bridge.clients.teleop_ui import TeleopApp

    app = TeleopApp(client, keys)
    client.on_error = app.server_error
    client.on_state = app.connection_state
    client.on_status = app.bridge_status
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, _on_signal, app, signum)
    client.start()
    try:
        result = await app.run_async()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        client.on_error = client.on_state = client.on_status = None  # the screen is gone
        # Normally the app has stopped already; this covers it dying while driving.
        if keys.halt(StopWhy.QUIT) is not None and client.connected:
            try:
                await client.stop()
            except ClientError:
                pass
        try:
            await client.close()
        except ClientError:
            pass  # server errors were shown on screen already
    for note in app.exit_notes:
        print(f"viewer-bridge teleop: {note}", file=sys.stderr)
    return result if result is not None else 1


def _on_signal(app: Any, signum: int) -> None:
    watchdog = threading.Timer(_SIGNAL_EXIT_GRACE, os._exit, (128 + signum,))
    watchdog.daemon = True
    watchdog.start()
    app.call_later(app.quit_teleop, 128 + signum)

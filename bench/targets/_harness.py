"""The process shell every target runs in: timing, readiness, control, lifetime.

A target module supplies a :class:`Target` (import, construct, start, stop)
and calls :func:`main`. The shell times each step, checks that the port
accepts a TCP connection, prints one JSON "ready" line on stdout, then serves
the control channel on the main thread until told to stop.

Standard library only, like :mod:`bench.control`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import traceback
from typing import Any, Protocol

from bench.control import ControlServer, Recorder, now, raise_nofile_limit

HOST = "127.0.0.1"


class Target(Protocol):
    def load(self) -> None:
        """Import the server's modules (timed apart from construction)."""

    def construct(self, recorder: Recorder, kwargs: dict[str, Any]) -> None:
        """Build the server and subscribe ``recorder`` to its outputs."""

    def start(self) -> int:
        """Start serving on HOST with an ephemeral port; return the bound port."""

    def stop(self) -> None:
        """Stop serving and release the port."""


def _parse_kwarg(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=JSON, got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        # Bare words are strings, so `--kwarg transport=lcm` works unquoted.
        return name, raw


def _wait_listening(port: int, timeout: float) -> None:
    deadline = now() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1.0):
                return
        except OSError:
            if now() > deadline:
                raise
            time.sleep(0.0005)


def _exit_when_parent_goes() -> None:
    # The harness holds our stdin open; EOF means it died without cleaning up,
    # so nobody will ever send "stop" and this process must not linger.
    try:
        while sys.stdin.buffer.read(1):
            pass
    finally:
        os._exit(3)


def main(target: Target, argv: list[str] | None = None) -> None:
    """Run ``target`` until told to stop; any failure exits at once with status 1."""
    try:
        _main(target, argv)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        # Not sys.exit: the parent watchdog thread sits in a blocking read of
        # stdin, which would hang interpreter shutdown.
        os._exit(1)


def _main(target: Target, argv: list[str] | None) -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark target server.")
    parser.add_argument(
        "--kwarg",
        action="append",
        default=[],
        type=_parse_kwarg,
        help="extra constructor argument NAME=JSON (repeatable), e.g. transport=lcm",
    )
    parser.add_argument("--max-seconds", type=float, default=900.0, help="lifetime bound")
    args = parser.parse_args(argv)

    # The harness reads exactly one line from our stdout and then stops
    # reading, so a library that logs to stdout (DimOS does, per connection)
    # would fill the pipe and block the server. Keep the pipe for the ready
    # line alone and send everything else written to fd 1 to stderr.
    ready_fd = os.dup(1)
    os.dup2(2, 1)

    raise_nofile_limit()
    threading.Thread(target=_exit_when_parent_goes, daemon=True, name="parent-watch").start()
    # The lifetime bound holds even if the control loop is stuck in a call.
    killer = threading.Timer(args.max_seconds + 30.0, os._exit, args=(4,))
    killer.daemon = True
    killer.start()

    recorder = Recorder()
    t0 = now()
    target.load()
    t1 = now()
    target.construct(recorder, dict(args.kwarg))
    t2 = now()
    port = target.start()
    t3 = now()
    _wait_listening(port, timeout=30.0)
    t4 = now()

    control = ControlServer(recorder, target.stop, max_seconds=args.max_seconds)
    ready = {
        "event": "ready",
        "pid": os.getpid(),
        "ws_port": port,
        "control_port": control.port,
        "import_s": t1 - t0,
        "construct_s": t2 - t1,
        "start_s": t3 - t2,
        # Constructor call to the first accepted TCP connection.
        "listen_s": t4 - t1,
    }
    os.write(ready_fd, json.dumps(ready).encode() + b"\n")
    os.close(ready_fd)
    control.serve()
    print(json.dumps({"event": "stopped", "stop_s": control.stop_s}), file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: a library's leftover non-daemon thread must
    # not keep a finished target alive, and stop() was already measured.
    os._exit(0)

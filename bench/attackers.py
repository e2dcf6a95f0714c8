"""Misbehaving peers for the attack scenarios, each run as a process of its own.

``flood``: connections that send one kind of abusive traffic as fast as the
bridge takes it (or at ``--rate`` messages per second), never read a byte,
and reconnect when cut off, as a determined attacker would:

* ``valid``: well-formed 3D clicks, the viewer's own message;
* ``heartbeat``: ``{"type":"heartbeat"}``, the cheapest valid message;
* ``malformed``: a twist with a string for a number, and bytes that are no JSON;
* ``fragments``: messages of 102 empty frames each, every one invalid JSON;
* ``pings``: 100-byte pings whose pongs are never read;
* ``connect``: WebSocket handshakes completed and closed at once, over and
  over (a client stuck in a reconnect loop, or a connection storm); a
  refusal (the bridge's per-address ``connect_rate``) is retried at once;
* ``download``: not WebSocket at all: plain HTTP GETs of the page's 43 MB
  Rerun Wasm, read as fast as loopback allows, one after the other (a bridge
  started with ``--rerun-url`` serves it). Not abuse, just someone opening
  the page's 3D view: what it costs the robot's commands.

``zenoh-stuck``: a Zenoh subscriber to the bridge's clicks whose callback
never returns, so Zenoh's buffers towards it fill and its publisher pushes back.

They run apart from the measuring process (:mod:`bench.attack`) so that
their Python work does not compete with its timestamps for one interpreter
lock. Each prints ``{"event": ...}`` lines on stdout: ``connected`` /
``subscribed`` / ``stuck`` when it is in place, and on SIGTERM a ``stats``
line, then exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from typing import Any

from bench.load import CLICK, open_connections

FLOOD_SOURCE = "127.0.0.2"

TEXT, CONT, PING = 0x1, 0x0, 0x9


def frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 section 5.2) with a random key."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def _units() -> dict[str, tuple[bytes, int]]:
    """Per flood kind: one unit of frames, and how many messages (or pings) it holds."""
    fragments = [frame(TEXT, b"", fin=False), *(frame(CONT, b"", fin=False) for _ in range(100)), frame(CONT, b"")]
    return {
        "valid": (frame(TEXT, CLICK), 1),
        "heartbeat": (frame(TEXT, b'{"type":"heartbeat"}'), 1),
        "malformed": (frame(TEXT, b'{"type":"twist","linear_x":"fast"}') + frame(TEXT, b"\x00nope"), 2),
        "fragments": (b"".join(fragments), 1),
        "pings": (frame(PING, b"p" * 100), 1),
    }


KINDS = ("valid", "heartbeat", "malformed", "fragments", "pings", "connect", "download")
# Where the page says its Rerun files are (its config script), for ``download``.
_ASSETS = re.compile(rb'"rerunAssets":\s*"([^"]+)"')
# One sendall's worth of flood: enough that syscalls cost the flooder nothing per frame.
CHUNK_BYTES = 64 * 1024


class Flooder:
    """``connections`` threads, each sending ``unit`` over and over on a connection of its own."""

    def __init__(self, port: int, kind: str, connections: int, rate: float) -> None:
        self.download = _wasm_request(port) if kind == "download" else None
        self.reconnect = kind == "connect"
        # connect and download send no frames (b""): their unit is a connection, a handshake or a GET.
        unit, per_unit = _units().get(kind, (b"", 1))
        self.port = port
        self.rate = rate
        self.per_unit = per_unit
        self.unit = unit
        self.chunk = unit * max(1, CHUNK_BYTES // len(unit)) if unit else b""
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.connects = 0
        self.connect_failures: Counter[str] = Counter()
        self.cut_offs: Counter[str] = Counter()
        self.first_round = threading.Barrier(connections + 1)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _connect(self) -> socket.socket | None:
        try:
            if self.download is not None:
                # Plain HTTP: a connection per GET (the bridge answers with Connection: close).
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30, source_address=(FLOOD_SOURCE, 0))
            else:
                # From another loopback address than the measured clients': the bridge gives each remote
                # address one message budget, which a flood from the driver's own address would spend.
                (sock,) = open_connections(self.port, 1, source=FLOOD_SOURCE)
                # Blocking sends: a bridge that stops reading us holds us in sendall, as TCP should.
                sock.settimeout(None)
        except (OSError, ConnectionError) as exc:
            with self.lock:
                self.connect_failures[type(exc).__name__] += 1
            return None
        with self.lock:
            self.connects += 1
        return sock

    def _run(self) -> None:
        first = True
        while True:
            sock = self._connect()
            if first:
                first = False
                self.first_round.wait()
            if sock is None:
                # A storm of handshakes retries at once (a refusal is what it is measuring); the others pause.
                if not self.reconnect:
                    time.sleep(0.05)
                continue
            try:
                self._use(sock)
            except OSError as exc:
                with self.lock:
                    self.cut_offs[type(exc).__name__] += 1
            finally:
                sock.close()

    def _use(self, sock: socket.socket) -> None:
        """One connection's worth of the flood; returns (or raises) when it is over."""
        if self.download is not None:
            sock.sendall(self.download)
            while chunk := sock.recv(1 << 20):
                with self.lock:
                    self.bytes_sent += len(chunk)  # for this kind: bytes received
        elif self.reconnect:
            return  # the handshake was the unit: closed, and again
        elif self.rate > 0:
            self._paced(sock)
        else:
            while True:
                sock.sendall(self.chunk)
                with self.lock:
                    self.bytes_sent += len(self.chunk)

    def _paced(self, sock: socket.socket) -> None:
        # Batches every 10 ms: the rate holds on average without a syscall per message.
        period = 0.01
        per_batch = self.rate * period / self.per_unit
        owed = 0.0
        t_next = time.monotonic()
        while True:
            owed += per_batch
            n = int(owed)
            owed -= n
            if n:
                sock.sendall(self.unit * n)
                with self.lock:
                    self.bytes_sent += len(self.unit) * n
            t_next += period
            delay = t_next - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "bytes_sent": self.bytes_sent,
                "units_sent": self.bytes_sent // len(self.unit) if self.unit else self.connects,
                "messages_per_unit": self.per_unit,
                "connects": self.connects,
                "connect_failures": dict(self.connect_failures),
                "cut_offs": dict(self.cut_offs),
            }


def _wasm_request(port: int) -> bytes:
    """The GET for the Rerun Wasm of the bridge on ``port``, at the path its page names."""
    host = f"127.0.0.1:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        page = b""
        while chunk := sock.recv(1 << 16):
            page += chunk
    match = _ASSETS.search(page)
    if match is None:
        raise SystemExit("the bridge's page names no Rerun files: start it with --rerun-url")
    path = match.group(1).decode() + "re_viewer_bg.wasm"
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n".encode()


def _say(record: dict[str, Any]) -> None:
    os.write(1, json.dumps(record).encode() + b"\n")


def _until_term(max_seconds: float, on_term: Any) -> None:
    """Block until SIGTERM or ``max_seconds``, then report with ``on_term`` and exit at once."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait(max_seconds)
    on_term()
    # Threads may be blocked in sendall or in a callback that never returns: do not wait for them.
    os._exit(0)


def cmd_flood(args: argparse.Namespace) -> None:
    flooder = Flooder(args.port, args.kind, args.connections, args.rate)
    flooder.start()
    flooder.first_round.wait(timeout=30)
    _say({"event": "connected", "connections": flooder.connects})
    _until_term(args.max_seconds, lambda: _say({"event": "stats", **flooder.stats()}))


def cmd_zenoh_stuck(args: argparse.Namespace) -> None:
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", '"peer"')
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("listen/endpoints", "[]")
    config.insert_json5("connect/endpoints", json.dumps([args.connect]))
    session = zenoh.open(config)
    hold = threading.Event()
    seen = [0]

    def stuck(_sample: Any) -> None:
        seen[0] += 1
        if seen[0] == 1:
            _say({"event": "stuck"})
        hold.wait(args.max_seconds)

    subscriber = session.declare_subscriber(args.key, stuck)
    _say({"event": "subscribed", "key": str(subscriber.key_expr)})
    _until_term(args.max_seconds, lambda: _say({"event": "stats", "samples": seen[0]}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    flood = sub.add_parser("flood", help="flood a bridge from N connections")
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument("--kind", choices=KINDS, required=True)
    flood.add_argument("--connections", type=int, default=1)
    flood.add_argument("--rate", type=float, default=0.0, help="messages/s per connection (0: as fast as taken)")
    flood.add_argument("--max-seconds", type=float, default=120.0, help="lifetime bound")
    flood.set_defaults(func=cmd_flood)
    stuck = sub.add_parser("zenoh-stuck", help="a Zenoh subscriber whose callback never returns")
    stuck.add_argument("--connect", required=True, help="the bridge's Zenoh endpoint, e.g. tcp/127.0.0.1:7447")
    stuck.add_argument("--key", default="dimos/clicked_point/**")
    stuck.add_argument("--max-seconds", type=float, default=120.0, help="lifetime bound")
    stuck.set_defaults(func=cmd_zenoh_stuck)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

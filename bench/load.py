"""Load generator: one scenario against one running target, result as JSON on stdout.

A WebSocket client library would be the bottleneck (the ``websockets``
client tops out near 100k messages/s), so this does the HTTP upgrade on a raw
socket and then writes pre-built, masked text frames, hundreds per ``send``.
The target's control channel (:mod:`bench.control`) says how many messages
its subscriber saw and when; the target's CPU and RSS are read from /proc.

Every message is the viewer's W+A twist (linear_x 0.5, angular_z 0.8), so
every target publishes it unchanged in meaning. Latency pairs the i-th send
with the i-th subscriber call instead of carrying a timestamp in a field:
a safety layer may clamp or validate any field, but it cannot reorder one
TCP stream, and a count check guards the pairing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import resource
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from bench.control import ControlClient, now, proc_cpu_ns, proc_rss_bytes, raise_nofile_limit

HOST = "127.0.0.1"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
# Exactly what dimos-viewer sends for W+A held (serde prints 0.0, not 0).
TWIST = b'{"type":"twist","linear_x":0.5,"linear_y":0.0,"linear_z":0.0,"angular_x":0.0,"angular_y":0.0,"angular_z":0.8}'
# A 3D click as the viewer sends it: f32 coordinates widened to f64.
CLICK = (
    b'{"type":"click","x":1.2345678806304932,"y":-3.4567890167236328,'
    b'"z":0.009999999776482582,"entity_path":"/world/map","timestamp_ms":1764089000000}'
)
MESSAGES = {"twist": TWIST, "click": CLICK}
# ~64 KiB of frames per send: large enough that syscalls cost nothing per
# message, small enough to interleave 8 clients fairly.
FRAMES_PER_BATCH = 512
SOCKET_TIMEOUT = 30.0


def text_frame(payload: bytes) -> bytes:
    """One masked, final text frame (RFC 6455 section 5.2), with a random key."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, 0x80 | n))
    elif n < 1 << 16:
        header = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    # Section 5.3: clients must mask. A real random key per frame keeps servers
    # from hitting an all-zero-key shortcut the viewer would never trigger.
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(n, "little")
    return header + key + masked


def close_frame() -> bytes:
    """A masked close frame with status 1000 (normal closure)."""
    key = os.urandom(4)
    code = (1000).to_bytes(2, "big")
    return bytes((0x88, 0x80 | 2)) + key + bytes(c ^ k for c, k in zip(code, key[:2], strict=True))


def _handshake_request(port: int, path: str) -> tuple[bytes, bytes]:
    key = base64.b64encode(os.urandom(16))
    # The same five headers the viewer sends, nothing more.
    req = (
        (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
    )
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    return req, accept


def _read_handshake_response(sock: socket.socket, accept: bytes) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed during the WebSocket handshake")
        buf += chunk
        if len(buf) > 16384:
            raise ConnectionError("oversized handshake response")
    head = buf.split(b"\r\n\r\n", 1)[0]
    status = head.split(b"\r\n", 1)[0]
    if b" 101 " not in status + b" ":
        raise ConnectionError(f"handshake refused: {status!r}")
    if accept not in head:
        raise ConnectionError("handshake response lacks the right Sec-WebSocket-Accept")


def open_connections(
    port: int, n: int, path: str = "/ws", batch: int = 50, source: str | None = None
) -> list[socket.socket]:
    """Open ``n`` upgraded connections, ``batch`` handshakes in flight at a time, from ``source`` if given.

    Batching keeps the server's accept backlog (asyncio's default is 100)
    from overflowing, which would stall a connect for a 1 s SYN retry.
    """
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            pending: list[tuple[socket.socket, bytes]] = []
            for _ in range(min(batch, n - len(socks))):
                s = socket.create_connection(
                    (HOST, port), timeout=SOCKET_TIMEOUT, source_address=(source, 0) if source else None
                )
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socks.append(s)
                req, accept = _handshake_request(port, path)
                s.sendall(req)
                pending.append((s, accept))
            for s, accept in pending:
                _read_handshake_response(s, accept)
    except BaseException:
        close_all(socks, graceful=False)
        raise
    return socks


def close_all(socks: Sequence[socket.socket], graceful: bool = True) -> None:
    for s in socks:
        try:
            if graceful:
                s.sendall(close_frame())
        except OSError:
            pass
        finally:
            s.close()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_stats_us(samples_s: Sequence[float]) -> dict[str, float]:
    values = sorted(x * 1e6 for x in samples_s)
    return {
        "n": float(len(values)),
        "p50_us": percentile(values, 50),
        "p90_us": percentile(values, 90),
        "p99_us": percentile(values, 99),
        "max_us": values[-1] if values else math.nan,
        "mean_us": sum(values) / len(values) if values else math.nan,
    }


def _cpu_self_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _blast(socks: Sequence[socket.socket], per_client: int, payload: bytes) -> tuple[float, list[str]]:
    """Send ``per_client`` messages on every socket, one thread each; return send time."""
    frames = [text_frame(payload) for _ in range(FRAMES_PER_BATCH)]
    blob = b"".join(frames)
    full, rest = divmod(per_client, FRAMES_PER_BATCH)
    tail = b"".join(frames[:rest])
    errors: list[str] = []

    def send(sock: socket.socket) -> None:
        try:
            for _ in range(full):
                sock.sendall(blob)
            if tail:
                sock.sendall(tail)
        except OSError as exc:  # a stalled or dead server: report, don't hang
            errors.append(repr(exc))

    threads = [threading.Thread(target=send, args=(s,), daemon=True) for s in socks]
    t0 = now()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SOCKET_TIMEOUT * 2)
    return now() - t0, errors


def scenario_throughput(args: argparse.Namespace, ctl: ControlClient) -> dict[str, Any]:
    clients: int = args.clients
    payload = MESSAGES[args.message]
    socks = open_connections(args.ws_port, clients)
    try:
        # Warm-up: first-call paths, allocator growth and socket buffer
        # autotuning settle before the measured phase, and its rate sizes
        # that phase so that every target runs for about --seconds.
        warm = max(1, args.warmup // clients)
        ctl.call("arm", expect=warm * clients, record=False)
        t_warm = now()
        _blast(socks, warm, payload)
        res = ctl.call("wait", timeout=args.timeout, idle=args.idle)
        if not res["done"]:
            raise RuntimeError(f"warm-up lost messages: {res}")
        warm_rate = warm * clients / max(1e-9, res["t_done"] - t_warm)
        total = args.count or int(warm_rate * args.seconds)
        total = min(max(total, args.min_count), args.max_count)
        per_client = max(1, total // clients)
        total = per_client * clients

        ctl.call("arm", expect=total, record=False)
        cpu0, self0 = proc_cpu_ns(args.pid), _cpu_self_s()
        t_start = now()
        send_s, errors = _blast(socks, per_client, payload)
        self1 = _cpu_self_s()
        res = ctl.call("wait", timeout=args.timeout, idle=args.idle)
        cpu1 = proc_cpu_ns(args.pid)
    finally:
        close_all(socks)
    received = int(res["count"])
    t_end = res["t_done"] if res["done"] else res["t_last_change"]
    duration = max(1e-9, t_end - t_start)
    return {
        "clients": clients,
        "message": args.message,
        "sent": total,
        "received": received,
        "lost": total - received,
        "complete": bool(res["done"]),
        "duration_s": duration,
        "msgs_per_s": received / duration,
        "cpu_us_per_msg": (cpu1 - cpu0) / 1000.0 / max(1, received),
        "server_cpu_pct": (cpu1 - cpu0) / 1e9 / duration * 100.0,
        # Below 100 % the load generator was waiting on the server, not the
        # other way round.
        "load_cpu_pct": (self1 - self0) / max(1e-9, send_s) * 100.0,
        "send_s": send_s,
        "warmup_msgs_per_s": warm_rate,
        "errors": errors,
    }


def _paced_probe(
    sock: socket.socket, ctl: ControlClient, n: int, rate: float, warm: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Send ``warm + n`` twists at ``rate``/s on one socket; pair sends with arrivals."""
    total = warm + n
    frames = [text_frame(TWIST) for _ in range(total)]
    sent_at: list[float] = []
    ctl.call("arm", expect=total, record=True)
    period = 1.0 / rate
    t_next = now()
    for frame in frames:
        delay = t_next - now()
        if delay > 0:
            time.sleep(delay)
        sent_at.append(now())
        sock.sendall(frame)
        t_next += period
    res = ctl.call("wait", timeout=args.timeout, idle=args.idle)
    arrived = ctl.call("times")["times"]
    out: dict[str, Any] = {"sent": total, "received": len(arrived), "lost": total - len(arrived)}
    if len(arrived) != total or not res["done"]:
        # Without equal counts the i-th arrival may not be the i-th send.
        out["error"] = "count mismatch: latency pairing not possible"
        return out
    lat = [a - s for a, s in zip(arrived[warm:], sent_at[warm:], strict=True)]
    out.update(latency_stats_us(lat))
    out["negative"] = sum(1 for x in lat if x < 0)
    return out


def scenario_latency(args: argparse.Namespace, ctl: ControlClient) -> dict[str, Any]:
    n = max(1, int(args.rate * args.seconds))
    (sock,) = open_connections(args.ws_port, 1)
    try:
        cpu0, t0 = proc_cpu_ns(args.pid), now()
        out = _paced_probe(sock, ctl, n, args.rate, warm=20, args=args)
        cpu1, t1 = proc_cpu_ns(args.pid), now()
    finally:
        close_all([sock])
    out["rate"] = args.rate
    out["server_cpu_pct"] = (cpu1 - cpu0) / 1e9 / (t1 - t0) * 100.0
    return out


def scenario_idle(args: argparse.Namespace, ctl: ControlClient) -> dict[str, Any]:
    n: int = args.connections
    (probe,) = open_connections(args.ws_port, 1)
    idle: list[socket.socket] = []
    try:
        # A few messages first, so code paths and buffers that any traffic
        # allocates are in the baseline and not charged to idle connections.
        _paced_probe(probe, ctl, 20, 200.0, warm=0, args=args)
        time.sleep(args.settle)
        rss0 = proc_rss_bytes(args.pid)
        t0 = now()
        idle = open_connections(args.ws_port, n)
        connect_s = now() - t0
        time.sleep(args.settle)
        rss1 = proc_rss_bytes(args.pid)
        cpu0, t_cpu0 = proc_cpu_ns(args.pid), now()
        time.sleep(args.seconds)
        cpu1, t_cpu1 = proc_cpu_ns(args.pid), now()
        probe_res = _paced_probe(probe, ctl, args.probes, args.rate, warm=0, args=args)
    finally:
        close_all(idle, graceful=False)
        close_all([probe])
    return {
        "connections": n,
        "connect_s": connect_s,
        "connects_per_s": n / max(1e-9, connect_s),
        "rss_before_mb": rss0 / 2**20,
        "rss_after_mb": rss1 / 2**20,
        "rss_kb_per_conn": (rss1 - rss0) / 1024.0 / n,
        "idle_cpu_pct": (cpu1 - cpu0) / 1e9 / (t_cpu1 - t_cpu0) * 100.0,
        "probe": probe_res,
    }


SCENARIOS = {
    "throughput": scenario_throughput,
    "latency": scenario_latency,
    "idle": scenario_idle,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Drive one running target; print a JSON result.")
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--ws-port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="target pid, for /proc CPU and RSS")
    p.add_argument("--clients", type=int, default=1, help="throughput: connections")
    p.add_argument("--message", choices=sorted(MESSAGES), default="twist", help="throughput: what to send")
    p.add_argument("--count", type=int, default=0, help="throughput: messages in all (0: size by --seconds)")
    p.add_argument("--warmup", type=int, default=20_000, help="throughput: warm-up messages in all")
    p.add_argument("--min-count", type=int, default=50_000, help="throughput: lower bound")
    p.add_argument("--max-count", type=int, default=5_000_000, help="throughput: upper bound")
    p.add_argument("--rate", type=float, default=200.0, help="latency: messages per second")
    p.add_argument("--seconds", type=float, default=5.0, help="throughput phase / latency phase / idle-CPU window")
    p.add_argument("--connections", type=int, default=500, help="idle: connections")
    p.add_argument("--probes", type=int, default=200, help="idle: probe twists, sent at --rate")
    p.add_argument("--settle", type=float, default=0.5, help="idle: pause before RSS reads")
    p.add_argument("--timeout", type=float, default=120.0, help="bound on any one wait")
    p.add_argument("--idle", type=float, default=5.0, help="give up after this long w/o progress")
    args = p.parse_args(argv)

    raise_nofile_limit(args.connections + 256)
    with ControlClient(args.control_port, timeout=args.timeout + 30.0) as ctl:
        result = SCENARIOS[args.scenario](args, ctl)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Under attack: how late the bridge's safety actions are while something misbehaves.

One scenario = one bridge process on a private LCM URL, one disturbance, and
this process measuring from outside, as the robot would see it:

* an independent LCM listener (plain ``lcm`` and ``dimos_lcm``, no
  viewer_bridge code) stamps every ``/tele_cmd_vel`` message when it
  reaches the bus;
* a normal client, which reads what it is sent and answers pings as the
  viewer does, sends a twist every 50 ms, each with its own ``linear_x``
  (over ``angular_z`` = 1, a ratio the bridge's slow-link speed factor
  keeps), so that every send is paired with its own arrival on the bus (a
  twist that never arrives is counted lost, unless this process, held up,
  sent the next one right behind it: the bridge rightly sends only the newer);
* a drive is four segments: a second client stops the first two 25 ms
  after their last twist (send -> the next zero on the bus), and a sender
  without a WebSocket stops the third with ``POST /stop`` on a new TCP
  connection (connect -> the next zero); each time the driver lets go (a
  zero twist: someone else's stop holds it until it does) and drives on;
  after the fourth it falls silent, and the deadman's zero is timed against
  (last twist sent + ``deadman_timeout``); every zero beyond one per
  silence is counted;
* a new client opens a WebSocket every 0.6 s: TCP connect -> ``101``;
* the bridge's RSS is read from /proc every 20 ms (and its high-water mark);
* the CPU time of the bridge, of the disturbance and of everything else on
  the machine over the measured window: on a shared machine, the last says
  how much of a delay may be other people's work.

Disturbances, each in processes of their own (:mod:`bench.attackers`), so
their work does not compete with these timestamps for one interpreter lock:

* ``flood-KIND-N``: N connections flooding with one kind of traffic
  (valid clicks, heartbeats, malformed messages, empty fragments, pings
  whose pongs are never read), reconnecting when cut off; ``connect``:
  handshakes closed as soon as they complete, over and over; or ``download``:
  GETs of the page's 43 MB Rerun Wasm, one after the other (the bridge then
  has ``--rerun-url``). The bridge is a real
  ``viewer-bridge serve --transport lcm`` with its default limits.
  ``quiet`` is the same measurement with no flood, for comparison.
* ``stall-asyncio`` / ``stall-threaded``: the last twist of the drive makes
  an in-process subscriber block for 5 s (:mod:`bench.targets.stall_server`),
  inline on the event loop of the asyncio server, on the subscribers' own
  thread in the threaded one.
* ``stall-zenoh``: ``serve --transport lcm --transport zenoh`` with a Zenoh
  subscriber whose callback never returns, while a client clicks 10,000
  times a second, until the bridge's Zenoh click lane is backed up.
* ``stall-stdout``: ``serve --echo text`` whose stdout is a pipe nobody
  reads, filled by the same clicks until the echo lane overflows.

    .venv/bin/python -m bench.attack flood-heartbeat-8     # one scenario, JSON on stdout
    .venv/bin/python -m bench.run --attack                 # all of them, with a report
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import random
import re
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from bench.control import now, proc_cpu_ns, proc_rss_bytes
from bench.load import _handshake_request, close_all, open_connections, percentile, text_frame
from bench.procs import kill_group, read_json_line, wait_for_text

ROOT = Path(__file__).resolve().parent.parent
TELE_CMD_VEL = "/tele_cmd_vel#.*"
DEADMAN = 0.5
TWIST_PERIOD = 0.05
HANDSHAKE_PERIOD = 0.6
RSS_PERIOD = 0.02
BLOCK_SECONDS = 5.0
# Twists at or above this make the stall target's subscriber block; the driver's ordinary twists stay far below.
BLOCK_FROM = 0.75
CLICKS_PER_S = 10_000.0
LISTENER_RCVBUF = 4 * 1024 * 1024
# How each segment of a drive but the last ends: stopped by the other client's WebSocket, or by a
# POST /stop from a sender without one. The last segment ends in silence.
STOP_WAYS = ("ws", "ws", "http")
# How long a stop's zero is waited for before the driver lets go and drives on.
STOP_WAIT = 2.0
# Two twists sent closer than this are one command as far as the bridge is concerned.
SUPERSEDED_WITHIN = 0.005
# The stall scenarios that need a fast clicker lift the per-client limits, as a trusted operator's setup might.
LIFTED = ("--rate-limit", "1000000", "--rate-burst", "1000000", "--frame-budget", "1000000")
FLOOD_KINDS = ("valid", "heartbeat", "malformed", "fragments", "pings", "connect", "download")
# The page's Rerun files are served only with a Rerun URL; nothing needs to listen there.
SERVE_WASM = ("--rerun-url", "rerun+http://127.0.0.1:9/proxy")

# The targets on a 2-core machine; reported against, never asserted.
TARGETS: dict[str, float] = {
    "twist_p99_ms": 20.0,
    "stop_max_ms": 20.0,
    "http_stop_max_ms": 20.0,
    "deadman_late_max_ms": 100.0,
    "handshake_max_ms": 100.0,
    "rss_growth_mb": 20.0,
}
STALL_TARGETS: dict[str, float] = {"deadman_late_max_ms": 100.0}


@dataclass(frozen=True)
class AttackScenario:
    name: str
    group: str  # "flood" or "stall"
    bridge: str = "serve"  # serve | asyncio | threaded (the last two: the stall target)
    flood: str | None = None
    connections: int = 0
    serve_args: tuple[str, ...] = ()
    zenoh_stuck: bool = False
    clicker: bool = False
    unread_stdout: bool = False
    block: bool = False  # the last twist of each drive makes the bridge's subscriber block
    drives: int = 3
    drive_s: float = 1.5
    stops: bool = True
    handshakes: bool = True
    note: str = ""

    @property
    def targets(self) -> dict[str, float]:
        return TARGETS if self.group == "flood" else STALL_TARGETS


def attack_scenarios() -> list[AttackScenario]:
    out = [AttackScenario("quiet", "flood", note="no flood: the same measurement, for comparison")]
    for kind in FLOOD_KINDS:
        for n in (1, 8):
            serve_args = SERVE_WASM if kind == "download" else ()
            out.append(AttackScenario(f"flood-{kind}-{n}", "flood", flood=kind, connections=n, serve_args=serve_args))
    # The blocking stalls get one drive: the block lasts 5 s, and what is measured is the zero during it.
    out += [
        AttackScenario(
            "stall-asyncio", "stall", bridge="asyncio", block=True, stops=False, handshakes=False,
            drives=1, drive_s=1.0,
            note="asyncio server, a subscriber inline on the loop blocks 5 s",
        ),
        AttackScenario(
            "stall-threaded", "stall", bridge="threaded", block=True, drives=1, drive_s=1.0,
            note="threaded server, a subscriber blocks its thread 5 s",
        ),
        AttackScenario(
            "stall-zenoh", "stall", zenoh_stuck=True, clicker=True, serve_args=LIFTED,
            note=f"a Zenoh subscriber that never returns, {CLICKS_PER_S:,.0f} clicks/s",
        ),
        AttackScenario(
            "stall-stdout", "stall", unread_stdout=True, clicker=True, serve_args=("--echo", "text", *LIFTED),
            note=f"`serve --echo text` into a pipe nobody reads, {CLICKS_PER_S:,.0f} clicks/s",
        ),
    ]  # fmt: skip
    return out


SCENARIOS = {s.name: s for s in attack_scenarios()}


# -- the independent observer ------------------------------------------------------------


# What the listener saw: (arrival, twist_key, angular_z = the speed factor applied, is_zero).
Seen = tuple[float, "int | None", float, bool]


class BusListener:
    """A plain ``lcm.LCM`` subscriber to ``/tele_cmd_vel``, stamping each message on arrival.

    Decoded with ``dimos_lcm``'s own class, not viewer_bridge's: a bug in the
    bridge's encoding cannot hide behind the same bug in the checker.
    """

    def __init__(self, url: str) -> None:
        import lcm
        from dimos_lcm.geometry_msgs import Twist

        self._decode = Twist.lcm_decode
        # A deep receive buffer: the stall scenarios put 10,000 clicks a second on the same group, and a
        # datagram the kernel drops for want of room here would look like a twist the bridge never sent.
        self.lc = lcm.LCM(f"{url}&recv_buf_size={LISTENER_RCVBUF}")
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.lc.subscribe(TELE_CMD_VEL, self._on)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="bus-listener", daemon=True)
        self._thread.start()

    def _on(self, _channel: str, data: bytes) -> None:
        t = now()
        m = self._decode(data)
        values = (m.linear.x, m.linear.y, m.linear.z, m.angular.x, m.angular.y, m.angular.z)
        with self.lock:
            self.seen.append((t, twist_key(m.linear.x, m.angular.z), float(m.angular.z), not any(values)))

    def _run(self) -> None:
        fd = self.lc.fileno()
        while True:
            readable, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            self.lc.handle_timeout(0)

    def snapshot(self) -> list[Seen]:
        with self.lock:
            return list(self.seen)

    def wait_for(self, pred: Callable[[Seen], bool], timeout: float) -> float | None:
        """Arrival time of the first message matching ``pred``, waiting up to ``timeout`` s."""
        deadline = now() + timeout
        while True:
            for item in self.snapshot():
                if pred(item):
                    return item[0]
            if now() > deadline:
                return None
            time.sleep(0.005)

    def close(self) -> None:
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        os.close(self._wake_r)
        os.close(self._wake_w)


def private_lcm_url() -> str:
    """A multicast group and port of this run's own (not DimOS's default 239.255.76.67:7667), TTL 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"udpm://239.255.{random.randint(1, 254)}.{random.randint(1, 254)}:{port}?ttl=0"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes -----------------------------------------------------------------------------


@dataclass
class Running:
    """A bridge process and what the scenario started beside it."""

    pid: int
    port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Child stdout pipes the scenario reads JSON lines from, by role.
    pipes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # The work tree's code, whether or not the venv has it installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def _spawn(cmd: list[str], log: IO[bytes], stdout: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=_env(), stdin=subprocess.PIPE, stdout=stdout, stderr=log, start_new_session=True
    )


def start_bridge(sc: AttackScenario, url: str, log_path: Path, log: IO[bytes]) -> Running:
    if sc.bridge in ("asyncio", "threaded"):
        cmd = [
            sys.executable, "-m", "bench.targets.stall_server", "--max-seconds", "300",
            "--kwarg", f"server={sc.bridge}", "--kwarg", 'transports=["lcm"]', "--kwarg", f"lcm_url={url}",
            "--kwarg", f"deadman_timeout={DEADMAN}", "--kwarg", f"block_from={BLOCK_FROM}",
            "--kwarg", f"block_seconds={BLOCK_SECONDS}",
        ]  # fmt: skip
        proc = _spawn(cmd, log)
        assert proc.stdout is not None
        ready = read_json_line(proc.stdout, timeout=60)
        return Running(pid=int(ready["pid"]), port=int(ready["ws_port"]), procs=[proc])
    cmd = [
        sys.executable, "-m", "viewer_bridge", "serve", "--port", "0", "--transport", "lcm", "--lcm-url", url,
        "--deadman-timeout", str(DEADMAN), *sc.serve_args,
    ]  # fmt: skip
    zenoh_endpoint = ""
    if sc.zenoh_stuck:
        zenoh_endpoint = f"tcp/127.0.0.1:{free_tcp_port()}"
        cmd += ["--transport", "zenoh", "--zenoh-listen", zenoh_endpoint, "--no-zenoh-multicast-scouting"]
    # stdout: a pipe nobody reads (stall-stdout), or nowhere.
    proc = _spawn(cmd, log, stdout=subprocess.PIPE if sc.unread_stdout else subprocess.DEVNULL)
    line = wait_for_text(log_path, "dimos-viewer --ws-url", timeout=60, proc=proc)
    match = re.search(r":(\d+)/ws", line)
    if match is None:
        raise RuntimeError(f"no port in the banner line {line!r}")
    running = Running(pid=proc.pid, port=int(match.group(1)), procs=[proc])
    if zenoh_endpoint:
        stuck = _spawn([sys.executable, "-m", "bench.attackers", "zenoh-stuck", "--connect", zenoh_endpoint], log)
        running.procs.append(stuck)
        running.pipes["zenoh"] = stuck
        _expect(stuck, "subscribed", 30)
    return running


def _expect(proc: subprocess.Popen[bytes], event: str, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    record = read_json_line(proc.stdout, timeout=timeout)
    if record.get("event") != event:
        raise RuntimeError(f"expected {event!r} from a helper, got {record}")
    return record


def start_flood(port: int, kind: str, connections: int, rate: float, log: IO[bytes]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "bench.attackers", "flood", "--port", str(port), "--kind", kind,
        "--connections", str(connections), "--rate", str(rate),
    ]  # fmt: skip
    proc = _spawn(cmd, log)
    _expect(proc, "connected", 30)
    return proc


def stop_helper(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """SIGTERM a helper, read its stats line, and make sure it is gone."""
    stats: dict[str, Any] = {}
    try:
        proc.terminate()
        if proc.stdout is not None:
            stats = read_json_line(proc.stdout, timeout=5)
    except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
        stats = {"error": repr(exc)}
    finally:
        kill_group(proc)
    stats.pop("event", None)
    return stats


# -- what the bridge says about itself ----------------------------------------------------------

_METRIC = re.compile(r"^(viewer_bridge_\w+?)(?:\{([^}]*)\})? (\S+)$")


def scrape(port: int, timeout: float = 5.0) -> dict[str, Any]:
    """A few of the bridge's own counters from /metrics: what it did about the attack."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError as exc:
        return {"error": repr(exc)}
    out: dict[str, Any] = {}
    lag: list[tuple[float, float]] = []
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m is None:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name in (
            "viewer_bridge_flood_closes_total", "viewer_bridge_paused_clients", "viewer_bridge_watchdog_zeros_total",
            "viewer_bridge_connections_total", "viewer_bridge_loop_lag_seconds_count",
        ):  # fmt: skip
            out[name.removeprefix("viewer_bridge_")] = value
        elif name in (
            "viewer_bridge_zero_twists_total",
            "viewer_bridge_rejects_total",
            "viewer_bridge_lane_dropped_total",
        ):
            key = name.removeprefix("viewer_bridge_").removesuffix("_total")
            out.setdefault(key, {})[labels.split('"')[1] if '"' in labels else ""] = value
        elif name == "viewer_bridge_loop_lag_seconds_bucket":
            le = labels.split('"')[1]
            lag.append((float("inf") if le == "+Inf" else float(le), value))
    if lag and lag[-1][1]:
        total = lag[-1][1]
        # The smallest bucket bound under which 99 % (and all) of the loop's timer runs fell.
        out["loop_lag_p99_le_ms"] = next(le for le, c in lag if c >= 0.99 * total) * 1e3
        out["loop_lag_max_le_ms"] = next(le for le, c in lag if c >= total) * 1e3
    return out


# -- the measurement -----------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped because a socket's receive buffer was full."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1], strict=True))["RcvbufErrors"])


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """The bridge's RSS every 20 ms on a thread; its maximum, and the kernel's high-water mark."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = proc_rss_bytes(pid)
        self.hwm_before = _hwm(pid)
        self.peak = self.before
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(RSS_PERIOD):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, proc_rss_bytes(self.pid))

    def finish(self) -> dict[str, float]:
        self.stop_event.set()
        self.thread.join(timeout=5)
        hwm = _hwm(self.pid)
        # The high-water mark catches a peak between two samples, but only counts if it rose during the run
        # (otherwise it may be a peak of start-up, before the baseline).
        peak = max(self.peak, hwm) if hwm > self.hwm_before else self.peak
        return {
            "rss_before_mb": self.before / 2**20,
            "rss_peak_mb": peak / 2**20,
            "rss_growth_mb": (peak - self.before) / 2**20,
        }


def _hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Handshakes:
    """A new client every ``HANDSHAKE_PERIOD`` s on a thread: TCP connect -> ``101 Switching Protocols``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.times: list[float] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="handshakes", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(HANDSHAKE_PERIOD):
            t0 = now()
            try:
                socks = open_connections(self.port, 1)
            except (OSError, ConnectionError) as exc:
                self.errors.append(repr(exc))
                continue
            self.times.append(now() - t0)
            close_all(socks)

    def finish(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=40)


def _twist_frame(linear_x: float, angular_z: float = 1.0) -> bytes:
    body = (
        f'{{"type":"twist","linear_x":{linear_x!r},"linear_y":0.0,"linear_z":0.0,'
        f'"angular_x":0.0,"angular_y":0.0,"angular_z":{angular_z!r}}}'
    )
    return text_frame(body.encode())


def twist_key(linear_x: float, angular_z: float) -> int | None:
    """Which twist this is: ``linear_x / angular_z`` in 4096ths.

    The bridge may scale a whole twist down (its speed factor for a slow
    link), never one axis alone, so the ratio survives where the value would
    not; ``angular_z`` is always sent as 1.0.
    """
    return round(linear_x / angular_z * 4096) if angular_z else None


STOP_FRAME = b'{"type":"stop"}'
RELEASE_FRAME = _twist_frame(0.0, 0.0)


class Client:
    """A WebSocket client that behaves like the viewer: it reads what it is sent and answers pings.

    The bridge pings every client and slows down, then refuses, a driver
    whose pongs do not come; a measuring client must not look like a dead
    link. Sends and pongs share a lock, so a pong never lands inside a frame.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request, accept = _handshake_request(port, "/ws")
        self.sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("server closed during the WebSocket handshake")
            head += chunk
        response, _, leftover = head.partition(b"\r\n\r\n")
        if b" 101 " not in response.split(b"\r\n", 1)[0] + b" " or accept not in response:
            raise ConnectionError(f"handshake refused: {response[:200]!r}")
        # The bridge pings (and sends its status) at once: those frames may have come with the 101.
        self._leftover = leftover
        self.sock.settimeout(None)
        self.lock = threading.Lock()
        self.pings = 0
        self.thread = threading.Thread(target=self._read, name="client-reader", daemon=True)
        self.thread.start()

    def send(self, frame: bytes) -> float:
        with self.lock:
            t = now()
            self.sock.sendall(frame)
        return t

    def _read(self) -> None:
        buf, chunk = b"", self._leftover
        try:
            while True:
                if not chunk:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        return
                buf, chunk = buf + chunk, b""
                while True:
                    parsed = _server_frame(buf)
                    if parsed is None:
                        break
                    opcode, payload, buf = parsed
                    if opcode == 0x9:
                        self.pings += 1
                        self.send(_pong(payload))
                    elif opcode == 0x8:
                        return
        except OSError:
            return

    def close(self) -> None:
        with self.lock:
            close_all([self.sock])
        self.thread.join(timeout=5)


def _server_frame(buf: bytes) -> tuple[int, bytes, bytes] | None:
    """One unmasked server frame off the front of ``buf``: (opcode, payload, rest), or None if incomplete."""
    if len(buf) < 2:
        return None
    opcode, n, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, offset = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, offset = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < offset + n:
        return None
    return opcode, buf[offset : offset + n], buf[offset + n :]


def _pong(payload: bytes) -> bytes:
    key = os.urandom(4)
    return bytes((0x8A, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _sleep_until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        time.sleep(delay)


@dataclass
class Timeline:
    twists: list[tuple[float, float]] = field(default_factory=list)  # (sent, linear_x)
    stops: list[float] = field(default_factory=list)
    http_stops: list[float] = field(default_factory=list)  # POST /stop: when its TCP connect began
    http_stop_answers: list[str] = field(default_factory=list)  # each one's status line
    silences: list[float] = field(default_factory=list)  # the last twist of each drive, when sent
    silence_ends: list[float] = field(default_factory=list)  # when the next drive (or the run) began
    # How late this process sent anything against its own schedule: when it is, the machine held it up.
    slip: float = 0.0


class Driver:
    """The normal client and the stopping client, on one thread, to a fixed schedule."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.driver, self.stopper = Client(port), Client(port)
        self.seq = 0

    def next_value(self, marker: bool = False) -> float:
        # Exact binary fractions: the value read off the bus is the very double that was sent.
        self.seq += 1
        return (BLOCK_FROM if marker else 0.0) + self.seq / 4096

    def twist(self, value: float) -> float:
        return self.driver.send(_twist_frame(value))

    def stop(self) -> float:
        return self.stopper.send(text_frame(STOP_FRAME))

    def stop_over_http(self) -> tuple[float, socket.socket]:
        """``POST /stop`` on a new connection, as ``send stop`` does when its WebSocket is refused."""
        t = now()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=STOP_WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(f"POST /stop HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: 0\r\n\r\n".encode())
        return t, sock

    def _twists(self, n: int, timeline: Timeline, marker_last: bool) -> None:
        t0 = now() + 0.01
        for i in range(n):
            _sleep_until(t0 + i * TWIST_PERIOD)
            value = self.next_value(marker=marker_last and i == n - 1)
            sent = self.twist(value)
            timeline.twists.append((sent, value))
            timeline.slip = max(timeline.slip, sent - (t0 + i * TWIST_PERIOD))

    def drive(self, sc: AttackScenario, bus: BusListener, timeline: Timeline) -> None:
        """Drive segments that the other client stops, then one that ends in silence (the deadman's)."""
        ways = STOP_WAYS if sc.stops else ()
        n = max(2, round(sc.drive_s / TWIST_PERIOD / (len(ways) + 1)))
        for way in ways:
            self._twists(n, timeline, marker_last=False)
            _sleep_until(timeline.twists[-1][0] + TWIST_PERIOD / 2)
            if way == "http":
                sent, sock = self.stop_over_http()
                timeline.http_stops.append(sent)
            else:
                sent = self.stop()
                timeline.stops.append(sent)
            # A stop from someone else holds the driver until it lets go (a zero twist), and the zero it
            # sends must not be taken for the stop's: wait for the stop's on the bus first.
            bus.wait_for(_zero_after(sent), timeout=STOP_WAIT)
            if way == "http":
                timeline.http_stop_answers.append(_status_line(sock))
            self.driver.send(RELEASE_FRAME)
            time.sleep(TWIST_PERIOD)
        self._twists(n, timeline, marker_last=sc.block)
        last = timeline.twists[-1][0]
        timeline.silences.append(last)
        # The deadman's zero, or a stop's that came later than the last twist (it ended the drive instead).
        bus.wait_for(_zero_after(last), timeout=DEADMAN + 5.0)
        if sc.block:
            # Let the block end and the bridge catch up: any second zero would come now.
            _sleep_until(last + BLOCK_SECONDS + 0.5)
        time.sleep(0.2)
        timeline.silence_ends.append(now())

    def close(self) -> None:
        self.driver.close()
        self.stopper.close()


def _status_line(sock: socket.socket) -> str:
    """The first line of the answer on ``sock`` (which is then closed), or what went wrong."""
    head = b""
    try:
        with sock:
            while b"\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return f"no answer: {exc}"
    return head.split(b"\r\n", 1)[0].decode("latin-1") or "no answer: closed"


def _ms_stats(samples: list[float], prefix: str) -> dict[str, float]:
    values = sorted(x * 1e3 for x in samples)
    return {
        f"{prefix}_n": float(len(values)),
        f"{prefix}_p50_ms": percentile(values, 50),
        f"{prefix}_p99_ms": percentile(values, 99),
        f"{prefix}_max_ms": values[-1] if values else float("nan"),
    }


def analyse(timeline: Timeline, seen: list[Seen]) -> dict[str, Any]:
    """Pair every send with its arrival on the bus."""
    arrivals: dict[int | None, float] = {}
    zeros: list[float] = []
    factors: list[float] = []
    for t, key, factor, zero in seen:
        if zero:
            zeros.append(t)
        else:
            arrivals.setdefault(key, t)
            factors.append(factor)
    keys = [round(v * 4096) for _, v in timeline.twists]
    twist_delays = [arrivals[k] - t for (t, _), k in zip(timeline.twists, keys, strict=True) if k in arrivals]
    # A twist that never reached the bus because this process, held up, sent the next one right behind it
    # was replaced on the bridge's command lane, as designed (the newest command wins): not a loss.
    sends = [t for t, _ in timeline.twists]
    superseded = sum(
        1
        for i, (t, k) in enumerate(zip(sends, keys, strict=True))
        if k not in arrivals and i + 1 < len(sends) and sends[i + 1] - t < SUPERSEDED_WITHIN
    )
    out: dict[str, Any] = {
        "twists_sent": len(timeline.twists),
        "twists_lost": len(timeline.twists) - len(twist_delays) - superseded,
        "twists_superseded": superseded,
        "sender_slip_ms": timeline.slip * 1e3,
        # Below 1: the bridge slowed the driver down for a slow link (its pongs came late).
        "speed_factor_min": min(factors, default=math.nan),
    }
    out.update(_ms_stats(twist_delays, "twist"))

    for prefix, sent in (("stop", timeline.stops), ("http_stop", timeline.http_stops)):
        delays: list[float] = []
        for t in sent:
            i = bisect.bisect_right(zeros, t)
            if i < len(zeros):
                delays.append(zeros[i] - t)
        out[f"{prefix}s_sent"] = len(sent)
        out[f"{prefix}s_unanswered"] = len(sent) - len(delays)
        out.update(_ms_stats(delays, prefix))
    # A POST /stop that was not answered 200 did not do what it was timed for.
    out["http_stops_refused"] = sum(1 for line in timeline.http_stop_answers if " 200 " not in f"{line} ")

    late: list[float] = []
    extra = preempted = 0
    for last, end in zip(timeline.silences, timeline.silence_ends, strict=True):
        # The deadman's zero cannot legitimately come before its deadline; an earlier zero is a stop's,
        # delayed past the drive's last twist: the stop ended that drive, and there was nothing to time.
        if any(last < z <= last + DEADMAN * 0.9 for z in zeros):
            preempted += 1
            extra += sum(1 for z in zeros if last + DEADMAN * 0.9 < z <= end)
            continue
        in_silence = [z for z in zeros if last + DEADMAN * 0.9 < z <= end]
        if in_silence:
            late.append(in_silence[0] - (last + DEADMAN))
        extra += max(0, len(in_silence) - 1)
    out["deadman_n"] = float(len(late))
    out["deadman_preempted"] = preempted
    out["deadman_missing"] = len(timeline.silences) - len(late) - preempted
    out["deadman_late_ms"] = [x * 1e3 for x in late]
    out["deadman_late_max_ms"] = max(late) * 1e3 if late else float("nan")
    out["extra_zeros"] = extra
    return out


def verdicts(result: dict[str, Any], targets: dict[str, float]) -> dict[str, bool]:
    """Per target: met or not (a missing measurement, e.g. a lost twist or stop, is not met)."""
    out: dict[str, bool] = {}
    for key, bound in targets.items():
        value = result.get(key)
        ok = isinstance(value, (int, float)) and value == value and value < bound
        if key == "twist_p99_ms":
            ok = ok and result.get("twists_lost") == 0
        if key == "stop_max_ms":
            ok = ok and result.get("stops_unanswered") == 0
        if key == "http_stop_max_ms":
            ok = ok and result.get("http_stops_unanswered") == 0 and result.get("http_stops_refused") == 0
        if key == "deadman_late_max_ms":
            ok = ok and result.get("deadman_missing") == 0 and result.get("extra_zeros") == 0
        out[key] = bool(ok)
    return out


def _zero_after(t: float) -> Callable[[Seen], bool]:
    return lambda m: m[3] and m[0] > t


def _is_value(value: float) -> Callable[[Seen], bool]:
    key = round(value * 4096)
    return lambda m: m[1] == key and not m[3]


@contextlib.contextmanager
def _cleanup(procs: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in reversed(procs):
            kill_group(proc)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


def run_scenario(sc: AttackScenario, log_dir: Path) -> dict[str, Any]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"attack-{sc.name}.log"
    url = private_lcm_url()
    procs: list[subprocess.Popen[bytes]] = []
    result: dict[str, Any] = {"scenario": sc.name, "group": sc.group, "flood": sc.flood,
                              "connections": sc.connections, "note": sc.note, "deadman_timeout_s": DEADMAN}  # fmt: skip
    t_start = now()
    bus = BusListener(url)
    try:
        with open(log_path, "wb") as log, _cleanup(procs):
            running = start_bridge(sc, url, log_path, log)
            procs += running.procs
            driver = Driver(running.port)
            try:
                # The route to the bus works, and the first-call paths are warm, before anything is timed.
                timeline = Timeline()
                for _ in range(3):
                    value = driver.next_value()
                    driver.twist(value)
                    if bus.wait_for(_is_value(value), timeout=10) is None:
                        raise RuntimeError(f"a twist never reached the LCM bus {url} (see {log_path})")
                    time.sleep(TWIST_PERIOD)
                t_stop = driver.stop()
                if bus.wait_for(_zero_after(t_stop), timeout=10) is None:
                    raise RuntimeError("the warm-up stop's zero never reached the LCM bus")
                driver.driver.send(RELEASE_FRAME)  # the other client's stop holds the driver until it lets go
                time.sleep(TWIST_PERIOD)
                driver.twist(driver.next_value())
                t_stop, sock = driver.stop_over_http()
                if bus.wait_for(_zero_after(t_stop), timeout=10) is None:
                    raise RuntimeError("the warm-up POST /stop's zero never reached the LCM bus")
                if " 200 " not in (answer := _status_line(sock)) + " ":
                    raise RuntimeError(f"the warm-up POST /stop was answered {answer!r}")
                driver.driver.send(RELEASE_FRAME)
                time.sleep(0.3)
                sampler = Sampler(running.pid)

                flood_proc = None
                if sc.flood:
                    flood_proc = start_flood(running.port, sc.flood, sc.connections, 0.0, log)
                    procs.append(flood_proc)
                    # Long enough to spend a budget's burst: the flood is being held back, not warming up.
                    time.sleep(0.5)
                clicker = None
                if sc.clicker:
                    clicker = start_flood(running.port, "valid", 1, CLICKS_PER_S, log)
                    procs.append(clicker)
                if sc.zenoh_stuck:
                    _expect(running.pipes["zenoh"], "stuck", 30)
                    result["stuck_after_s"] = _wait_lane_backed_up(running.port, "zenoh-clicks", 60)
                if sc.unread_stdout:
                    t0 = now()
                    wait_for_text(log_path, "echo: more than", timeout=30, proc=running.procs[0])
                    result["stuck_after_s"] = now() - t0

                helpers = [p for p in (flood_proc, clicker, running.pipes.get("zenoh")) if p is not None]
                cpu0, t_cpu0 = proc_cpu_ns(running.pid), now()
                helper_cpu0 = [proc_cpu_ns(p.pid) for p in helpers]
                busy0, self0, udp0 = machine_busy_s(), _self_cpu_s(), udp_rcvbuf_errors()
                handshakes = Handshakes(running.port) if sc.handshakes else None
                try:
                    for _ in range(sc.drives):
                        driver.drive(sc, bus, timeline)
                finally:
                    if handshakes is not None:
                        handshakes.finish()
                cpu1, t_cpu1 = proc_cpu_ns(running.pid), now()
                busy1, self1 = machine_busy_s(), _self_cpu_s()
                # Datagrams dropped for a full receive buffer, machine-wide: if any, the listener may have missed some.
                result["udp_rcvbuf_errors"] = udp_rcvbuf_errors() - udp0
                window = t_cpu1 - t_cpu0
                bridge_s = (cpu1 - cpu0) / 1e9
                helpers_s = sum((proc_cpu_ns(p.pid) - c0) / 1e9 for p, c0 in zip(helpers, helper_cpu0, strict=True))
                result["bridge_cpu_pct"] = bridge_s / window * 100.0
                result["attacker_cpu_pct"] = helpers_s / window * 100.0
                result["measure_cpu_pct"] = (self1 - self0) / window * 100.0
                # Whatever else ran on the machine meanwhile (other people's work): the noise in these figures.
                result["others_cpu_pct"] = max(
                    0.0, (busy1 - busy0 - bridge_s - helpers_s - (self1 - self0)) / window * 100.0
                )
                result["loadavg"] = os.getloadavg()[0]
                result.update(sampler.finish())
                result["bridge_metrics"] = scrape(running.port)
                if flood_proc is not None:
                    result["flood_stats"] = stop_helper(flood_proc)
                if clicker is not None:
                    result["clicker_stats"] = stop_helper(clicker)
                if "zenoh" in running.pipes:
                    result["zenoh_stats"] = stop_helper(running.pipes["zenoh"])
            finally:
                driver.close()
            seen = bus.snapshot()
            result.update(analyse(timeline, seen))
            # Everything the figures come from, relative to the first twist, for a closer look.
            base = timeline.twists[0][0] if timeline.twists else t_start
            result["raw"] = {
                "twists": [(round(t - base, 6), v) for t, v in timeline.twists],
                "stops": [round(t - base, 6) for t in timeline.stops],
                "http_stops": [round(t - base, 6) for t in timeline.http_stops],
                "http_stop_answers": timeline.http_stop_answers,
                "silences": [round(t - base, 6) for t in timeline.silences],
                "bus": [(round(t - base, 6), key, factor, zero) for t, key, factor, zero in seen],
            }
            if handshakes is not None:
                result.update(_ms_stats(handshakes.times, "handshake"))
                result["handshake_errors"] = handshakes.errors[:5]
    finally:
        bus.close()
    result["targets"] = sc.targets
    result["met"] = verdicts(result, sc.targets)
    result["wall_s"] = now() - t_start
    return result


def _wait_lane_backed_up(port: int, lane: str, timeout: float) -> float:
    """Seconds until the bridge's /metrics shows messages waiting on ``lane``."""
    t0 = now()
    pattern = re.compile(rf'^viewer_bridge_lane_pending\{{lane="{re.escape(lane)}"\}} (\S+)$', re.M)
    while now() - t0 < timeout:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                m = pattern.search(response.read().decode())
            if m and float(m.group(1)) > 0:
                return now() - t0
        time.sleep(0.2)
    raise TimeoutError(f"the {lane} lane never backed up within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--log-dir", type=Path, help="bridge and helper logs (default: a temporary folder)")
    p.add_argument("--drives", type=int, help="at most this many drives (a quick run: 1)")
    args = p.parse_args(argv)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="bench-attack-"))
    sc = SCENARIOS[args.scenario]
    if args.drives:
        sc = replace(sc, drives=min(sc.drives, args.drives))
    result = run_scenario(sc, log_dir)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

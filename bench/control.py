"""Control channel between the harness and a target server process.

Standard library only: the DimOS target imports this from its own venv.

A target listens on a loopback TCP port for newline-delimited JSON requests,
one connection at a time, and answers each with one JSON line. The load
process arms a :class:`Recorder` before a phase, sends over WebSocket, then
asks the target to ``wait`` until the recorder has seen everything.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

# time.monotonic() is CLOCK_MONOTONIC on Linux, which is one clock for the whole
# machine: a timestamp taken in the load process can be subtracted from one
# taken in the target process. Checked once here rather than trusted.
if time.get_clock_info("monotonic").implementation != "clock_gettime(CLOCK_MONOTONIC)":
    raise RuntimeError("the benchmark needs a system-wide CLOCK_MONOTONIC (Linux)")
now = time.monotonic

CONTROL_HOST = "127.0.0.1"
# A reply carries at most one phase's arrival times; a request is a few bytes.
_MAX_LINE = 1 << 16


def raise_nofile_limit(want: int = 8192) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (1000 idle sockets need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class Recorder:
    """Counts what the target's subscriber callback sees.

    ``hit`` runs on the server's hot path, so it does the least it can: an
    increment, an optional timestamp, and one comparison. Reset happens only
    between phases, when no traffic flows, so no lock is needed beyond the GIL.
    """

    __slots__ = ("count", "done", "expect", "record", "t_done", "times")

    def __init__(self) -> None:
        self.count = 0
        self.expect = -1
        self.record = False
        self.times: list[float] = []
        self.t_done: float | None = None
        self.done = threading.Event()

    def arm(self, expect: int, record: bool) -> None:
        self.done.clear()
        self.count = 0
        self.expect = expect
        self.record = record
        self.times = []
        self.t_done = None

    def hit(self, _msg: object = None) -> None:
        self.count += 1
        if self.record:
            self.times.append(now())
        if self.count == self.expect:
            self.t_done = now()
            self.done.set()

    def wait(self, timeout: float, idle: float) -> dict[str, Any]:
        """Block until ``expect`` messages arrived, or progress stalls for ``idle`` s."""
        deadline = now() + timeout
        last_count = self.count
        last_change = now()
        # Polling at 20 Hz keeps the stall detector cheap: a few microseconds of
        # the target's CPU per second, against seconds of measured work.
        while not self.done.wait(0.05):
            t = now()
            count = self.count
            if count != last_count:
                last_count, last_change = count, t
            elif t - last_change > idle or t > deadline:
                return {"done": False, "count": count, "t_done": None, "t_last_change": last_change}
        return {"done": True, "count": self.count, "t_done": self.t_done, "t_last_change": self.t_done}


class ControlServer:
    """Serves the control protocol for one target process, on the calling thread."""

    def __init__(self, recorder: Recorder, stop: Callable[[], None], max_seconds: float) -> None:
        self._recorder = recorder
        self._stop = stop
        self._deadline = now() + max_seconds
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((CONTROL_HOST, 0))
        self._sock.listen(4)
        # Accept in slices so the lifetime bound is checked even with no client.
        self._sock.settimeout(0.5)
        self.port: int = self._sock.getsockname()[1]
        self.stop_s: float | None = None

    def serve(self) -> None:
        """Answer requests until a ``stop`` request or the lifetime bound."""
        try:
            while self.stop_s is None and now() < self._deadline:
                try:
                    conn, _ = self._sock.accept()
                except TimeoutError:
                    continue
                with conn:
                    self._serve_conn(conn)
        finally:
            self._sock.close()

    def _serve_conn(self, conn: socket.socket) -> None:
        conn.settimeout(max(1.0, self._deadline - now()))
        reader = conn.makefile("rb")
        while self.stop_s is None:
            try:
                line = reader.readline(_MAX_LINE)
            except (TimeoutError, OSError):
                return
            if not line:
                return
            reply = self._handle(json.loads(line))
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def _handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        rec = self._recorder
        if cmd == "arm":
            rec.arm(int(req["expect"]), bool(req.get("record", False)))
            return {"ok": True}
        if cmd == "wait":
            return rec.wait(float(req.get("timeout", 30.0)), float(req.get("idle", 3.0)))
        if cmd == "times":
            return {"times": rec.times}
        if cmd == "count":
            return {"count": rec.count}
        if cmd == "stop":
            t0 = now()
            self._stop()
            self.stop_s = now() - t0
            return {"stop_s": self.stop_s}
        return {"error": f"unknown command {cmd!r}"}


class ControlClient:
    """The harness side of the control channel."""

    def __init__(self, port: int, timeout: float = 120.0) -> None:
        self._sock = socket.create_connection((CONTROL_HOST, port), timeout=timeout)
        self._reader = self._sock.makefile("rb")

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        self._sock.sendall(json.dumps({"cmd": cmd, **kwargs}).encode() + b"\n")
        line = self._reader.readline()
        if not line:
            raise ConnectionError(f"target closed the control channel during {cmd!r}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def proc_cpu_ns(pid: int) -> int:
    """CPU time (user + system) of every live thread of ``pid``, in nanoseconds.

    Per-thread schedstat counts in nanoseconds; /proc/PID/stat's utime+stime
    counts in 10 ms ticks, too coarse for a sub-second phase. The fallback is
    used where schedstat is missing.
    """
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the parenthesised command name; utime and stime are 14 and 15.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def proc_rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")

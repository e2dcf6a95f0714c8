"""The fleet benchmark: one station, one Zenoh router, N robot agents, up to 10 drivers.

What it measures, for N in 5, 10, 25, 50 robots (``--sizes``):

* command latency from the WebSocket to each robot's own LCM bus: a driver's
  twist is stamped just before it is written to the station's socket, and
  again when a plain ``lcm`` subscriber on that robot's bus receives it
  (CLOCK_MONOTONIC, one clock for every process); the twist's ``linear_y``
  carries a sequence number that pairs the two (the station's refreshes of
  the same twist arrive later and are not counted);
* the station's CPU time per driver message (all its threads; its
  refreshes of each command in force are part of that cost), and the
  router's;
* how both grow from 5 to 50 robots. Robots nobody drives still cost: each
  agent holds a Zenoh session, a liveliness token, and publishes its state
  every second.

Each driver drives its own robot at ``--rate`` twists per second, as a held
key does. Every process runs on this machine on loopback: station
(``viewer-bridge serve`` with a ``robots`` table), router (a Zenoh session in
router mode), agents (real ``RobotAgent``s, ten per process), load (this
process).

    .venv/bin/python -m bench.fleet --quick          # sizes 5 and 10, 3 s each
    .venv/bin/python -m bench.fleet --docs docs      # full run, also the Fleet section of docs/performance.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench.control import now, proc_cpu_ns  # noqa: E402
from bench.load import close_all, latency_stats_us, open_connections, text_frame  # noqa: E402
from bench.report import pyplot  # noqa: E402

AGENTS_PER_PROCESS = 10
BEGIN, END = "<!-- fleet:begin -->", "<!-- fleet:end -->"
PLOT = "performance-fleet.png"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """A child process spoken to by lines on stdin and JSON lines on stdout."""

    def __init__(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
        # Its log is read all the time: a child blocked on a full stderr pipe would distort everything.
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            self.log.append(text.rstrip("\n"))

    def line(self, stream: IO[str] | None = None, timeout: float = 120.0) -> str:
        import selectors

        stream = stream or self.proc.stdout
        assert stream is not None
        with selectors.DefaultSelector() as sel:
            sel.register(stream, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"{self.name}: no output within {timeout} s")
        text = stream.readline()
        if not text:
            raise RuntimeError(f"{self.name} exited ({self.proc.wait()}): " + "\n".join(self.log[-20:]))
        return text

    def json(self, timeout: float = 120.0) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.line(timeout=timeout))
        return result

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_log(self, marker: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in text for text in self.log):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): " + "\n".join(self.log[-20:]))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {marker!r} not logged within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send("quit")
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def fleet(n: int, workdir: Path) -> Iterator[tuple[Child, Child, list[Child], int, list[str]]]:
    """Router, agents and station for ``n`` robots; yields (router, station, hosts, station port, robots)."""
    children: list[Child] = []
    try:
        router_ep = f"tcp/127.0.0.1:{free_port()}"
        router = Child([sys.executable, "-m", "bench.fleet_agents", "router", "--listen", router_ep], "router")
        children.append(router)
        assert router.json() == {"ready": True}
        robots = [f"r{i:02d}" for i in range(n)]
        base = random.randint(20, 200)
        urls = {robot: f"udpm://239.255.{base + i // 200}.{i % 200 + 1}:{7700 + i}?ttl=0" for i, robot in
                enumerate(robots)}
        hosts: list[Child] = []
        for start in range(0, n, AGENTS_PER_PROCESS):
            chunk = robots[start : start + AGENTS_PER_PROCESS]
            argv = [sys.executable, "-m", "bench.fleet_agents", "agents", "--router", router_ep]
            for robot in chunk:
                argv += ["--robot", f"{robot}={urls[robot]}"]
            host = Child(argv, f"agents {chunk[0]}..{chunk[-1]}")
            children.append(host)
            hosts.append(host)
        for host in hosts:
            assert host.json(timeout=300) == {"ready": True}
        config = workdir / f"station-{n}.toml"
        config.write_text('station = "bench"\n' + "".join(f"[robots.{robot}]\n" for robot in robots))
        port = free_port()
        station = Child(
            [sys.executable, "-m", "viewer_bridge", "serve", "--config", str(config), "--port", str(port),
             "--no-link-limits", "--no-web", "--zenoh-mode", "client", "--zenoh-connect", router_ep,
             "--no-zenoh-multicast-scouting"],
            "station",
            env={"VIEWER_BRIDGE_LOG_LEVEL": "WARNING"},
        )  # fmt: skip
        children.append(station)
        station.wait_log("listening. Point dimos-viewer at")
        deadline = time.monotonic() + 120
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
                status = json.loads(response.read())
            if all(robot["online"] for robot in status["robots"].values()):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"robots never all online: {status['robots']}")
            time.sleep(0.2)
        yield router, station, hosts, port, robots
    finally:
        for child in reversed(children):
            child.stop()


def twist(seq: int) -> bytes:
    return text_frame(json.dumps({"type": "twist", "linear_x": 0.5, "linear_y": float(seq)}).encode())


def drive(socks: list[socket.socket], rate: float, seconds: float, first_seq: int) -> dict[int, tuple[int, float]]:
    """Each socket sends one twist per 1/rate s for ``seconds``; returns seq -> (driver, send time)."""
    sent: dict[int, tuple[int, float]] = {}
    seq = first_seq
    period = 1.0 / rate
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for i, sock in enumerate(socks):
            frame = twist(seq)
            sent[seq] = (i, now())
            sock.sendall(frame)
            seq += 1
        tick += 1
        delay = start + tick * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def _discard(socks: list[socket.socket], stop: threading.Event) -> None:
    import select

    while not stop.is_set():
        readable, _, _ = select.select(socks, [], [], 0.1)
        for sock in readable:
            with contextlib.suppress(OSError, BlockingIOError):
                sock.recv(65536, socket.MSG_DONTWAIT)


def collect(hosts: list[Child], zeros: dict[str, list[float]] | None = None) -> dict[str, dict[int, float]]:
    """Arrivals on every robot's bus since the last collect (and the zeros' arrival times into ``zeros``)."""
    arrivals: dict[str, dict[int, float]] = {}
    for host in hosts:
        host.send("report")
    for host in hosts:
        report = host.json()
        for robot, seen in report["arrivals"].items():
            arrivals[robot] = {int(k): v for k, v in seen.items()}
        if zeros is not None:
            for robot, times in report["zeros"].items():
                zeros.setdefault(robot, []).extend(times)
    return arrivals


class Holding(threading.Thread):
    """Drivers holding their keys in the background (until :meth:`release`)."""

    def __init__(self, socks: list[socket.socket], rate: float) -> None:
        super().__init__(daemon=True)
        self.socks, self.rate = socks, rate
        self.released = threading.Event()

    def run(self) -> None:
        seq = 1
        while not self.released.wait(1.0 / self.rate):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.sendall(twist(seq))
                seq += 1

    def release(self) -> None:
        self.released.set()
        self.join()


def run_failover(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Two robots driven; the router frozen (SIGSTOP), then the station killed (SIGKILL): time to each zero."""
    import signal

    result: dict[str, Any] = {}
    with fleet(2, workdir) as (router, station, hosts, port, robots):
        socks = [open_connections(port, 1, path=f"/ws?robot={robot}")[0] for robot in robots]
        stop_reading = threading.Event()
        reader = threading.Thread(target=_discard, args=(socks, stop_reading), daemon=True)
        reader.start()
        holding = Holding(socks, args.rate)
        holding.start()
        try:
            for phase, act, undo in (
                ("router_frozen", lambda: router.proc.send_signal(signal.SIGSTOP),
                 lambda: router.proc.send_signal(signal.SIGCONT)),
                ("station_killed", lambda: station.proc.send_signal(signal.SIGKILL), lambda: None),
            ):
                deadline = time.monotonic() + 30
                while True:
                    # One report for both robots: each collect() takes what the hosts have seen so far.
                    seen = collect(hosts)
                    if all(seen.get(robot) for robot in robots):
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{phase}: the robots are not being driven")
                    time.sleep(0.2)
                collect(hosts)
                started = now()
                act()
                time.sleep(1.5)
                undo()
                zeros: dict[str, list[float]] = {}
                collect(hosts, zeros)
                result[phase] = {robot: (min(t for t in zeros.get(robot, []) if t >= started) - started)
                                 if any(t >= started for t in zeros.get(robot, [])) else None for robot in robots}
        finally:
            holding.release()
            stop_reading.set()
            reader.join()
            close_all(socks, graceful=False)
    return result


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    drivers = min(args.drivers, n)
    with fleet(n, workdir) as (router, station, hosts, port, robots):
        driven = robots[:drivers]
        socks = [open_connections(port, 1, path=f"/ws?robot={robot}")[0] for robot in driven]
        # The station sends status frames (and pings) back: read and drop them, as a client would.
        stop_reading = threading.Event()
        reader = threading.Thread(target=_discard, args=(socks, stop_reading), daemon=True)
        reader.start()
        try:
            # Warm-up: every driven robot's bus has heard its driver (Zenoh routes declared, caches hot).
            for _ in range(50):
                drive(socks, args.rate, 0.5, 1)
                got = collect(hosts)
                if all(got.get(robot) for robot in driven):
                    break
            else:
                raise RuntimeError("warm-up: some driven robot never heard its driver")
            station_cpu = proc_cpu_ns(station.proc.pid)
            router_cpu = proc_cpu_ns(router.proc.pid)
            started = time.monotonic()
            sent = drive(socks, args.rate, args.seconds, 1_000_000)
            elapsed = time.monotonic() - started
            station_cpu = proc_cpu_ns(station.proc.pid) - station_cpu
            router_cpu = proc_cpu_ns(router.proc.pid) - router_cpu
            time.sleep(1.0)  # the last twists reach their buses
            arrivals = collect(hosts)
            warnings = [text for text in station.log if " WARNING " in text or " ERROR " in text]
        finally:
            stop_reading.set()
            reader.join()
            close_all(socks)
    samples: list[float] = []
    superseded = 0
    for seq, (driver, at) in sent.items():
        arrived = arrivals.get(driven[driver], {}).get(seq)
        if arrived is None:
            superseded += 1
        else:
            samples.append(arrived - at)
    stats = latency_stats_us(samples)
    return {
        "robots": n,
        "drivers": drivers,
        "messages": len(sent),
        "rate_per_driver": args.rate,
        "seconds": elapsed,
        "superseded": superseded,
        "latency": stats,
        "station_cpu_per_msg_us": station_cpu / 1000 / len(sent),
        "router_cpu_per_msg_us": router_cpu / 1000 / len(sent),
        "station_cpu_percent": station_cpu / 1e9 / elapsed * 100,
        "station_warnings": warnings[-10:],
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds for each size."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        by_size.setdefault(run["robots"], []).append(run)
    summary: dict[str, Any] = {}
    for n, rounds in sorted(by_size.items()):
        summary[str(n)] = {
            "drivers": rounds[0]["drivers"],
            "messages": sum(r["messages"] for r in rounds),
            "superseded": sum(r["superseded"] for r in rounds),
            "p50_us": statistics.median(r["latency"]["p50_us"] for r in rounds),
            "p99_us": statistics.median(r["latency"]["p99_us"] for r in rounds),
            "max_us": max(r["latency"]["max_us"] for r in rounds),
            "station_cpu_per_msg_us": statistics.median(r["station_cpu_per_msg_us"] for r in rounds),
            "router_cpu_per_msg_us": statistics.median(r["router_cpu_per_msg_us"] for r in rounds),
            "station_cpu_percent": statistics.median(r["station_cpu_percent"] for r in rounds),
        }
    return summary


def render_markdown(results: dict[str, Any], plot: str | None = PLOT) -> str:
    env = results["env"]
    plan = results["plan"]
    lines = [
        BEGIN,
        "## Fleet: one station, one router, many robots",
        "",
        f"Measured by `bench/fleet.py` on {env['cpu']}, {env['cores']} cores, {env['when']}. {plan['rounds']} "
        f"round(s) of {plan['seconds']:g} s per size; up to {plan['drivers']} drivers, each driving its own robot "
        f"at {plan['rate']:g} twists/s (a held key). Latency is from the write to the station's WebSocket to the "
        "arrival on that robot's own LCM bus (a plain `lcm` subscriber): WebSocket, station, Zenoh to the router, "
        "router to the agent, agent to LCM. CPU per message is the process's CPU time (all threads) over the "
        "drivers' messages; the station's includes re-sending each command in force at 10 Hz. Superseded: "
        "twists that never reached the bus because a newer one of the same driver overtook them on the way "
        "(each hop keeps only the newest velocity command; latency counts only those that arrived).",
        "",
        "| Robots | Drivers | Messages | Superseded | Latency p50 (µs) | p99 (µs) | max (µs) | Station CPU / msg (µs) "
        "| Station CPU (%) | Router CPU / msg (µs) |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for n, s in results["summary"].items():
        lines.append(
            f"| {n} | {s['drivers']} | {s['messages']:,} | {s['superseded']} | {s['p50_us']:,.0f} | "
            f"{s['p99_us']:,.0f} | {s['max_us']:,.0f} | {s['station_cpu_per_msg_us']:,.1f} | "
            f"{s['station_cpu_percent']:.1f} | "
            f"{s['router_cpu_per_msg_us']:,.1f} |"
        )
    if plot:
        lines += ["", f"![Fleet latency and CPU against the number of robots]({plot})"]
    failovers = results.get("failovers") or []
    if failovers:
        lines += [
            "",
            f"Failures, while two robots are driven ({len(failovers)} round(s); time from the failure to the zero "
            "on each robot's LCM bus; agents' link timeout 0.5 s, the station refreshing at 10 Hz):",
            "",
            "| Failure | What stops the robot | median (ms) | max (ms) | zeros missing |",
            "|---|---|--:|--:|--:|",
        ]
        why = {
            "router_frozen": ("router frozen (SIGSTOP): nothing reaches the agents", "the agent's link timeout"),
            "station_killed": ("station killed (SIGKILL) while driving", "the station's liveliness token gone"),
        }
        for phase, (what, stops) in why.items():
            times = [v for f in failovers for v in f.get(phase, {}).values()]
            got = [v * 1000 for v in times if v is not None]
            median = f"{statistics.median(got):,.0f}" if got else "-"
            worst = f"{max(got):,.0f}" if got else "-"
            lines.append(f"| {what} | {stops} | {median} | {worst} | {len(times) - len(got)} |")
    lines += [
        "",
        "Every process ran on this one 2-core machine (station, router, agents ten to a process, load): at 50 "
        "robots the agents alone are six Python processes, so the numbers show the software's cost, not a "
        "network's. Robots nobody drives still cost the station their states (one a second each) and their "
        "liveliness.",
        "",
        f"- versions: {env['versions']}",
        f"- wall time {results['wall_s']:.0f} s; 1-minute load average {env['load_average']:.2f} at the start, "
        f"{env.get('load_average_end', float('nan')):.2f} at the end (above 2 on 2 cores, other work shared the "
        "machine)",
        END,
    ]
    return "\n".join(lines) + "\n"


def render_plot(results: dict[str, Any], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    summary = results["summary"]
    sizes = [int(n) for n in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("p50_us", "p50"), ("p99_us", "p99")):
        left.plot(sizes, [summary[str(n)][key] / 1000 for n in sizes], marker="o", label=label)
    left.set_title("WebSocket -> robot's LCM bus")
    left.set_xlabel("robots")
    left.set_ylabel("ms")
    left.legend()
    left.grid(alpha=0.3)
    for key, label in (("station_cpu_per_msg_us", "station"), ("router_cpu_per_msg_us", "router")):
        right.plot(sizes, [summary[str(n)][key] for n in sizes], marker="o", label=label)
    right.set_title("CPU per driver message")
    right.set_xlabel("robots")
    right.set_ylabel("µs")
    right.legend()
    right.grid(alpha=0.3)
    fig.suptitle(f"viewer-bridge fleet: up to {results['plan']['drivers']} drivers, medians of "
                 f"{results['plan']['rounds']} round(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_docs(docs: Path, results: dict[str, Any]) -> None:
    """Put the Fleet section into docs/performance.md (replacing the last one), and its plot beside it."""
    page = docs / "performance.md"
    text = page.read_text() if page.exists() else "# Performance\n"
    section = render_markdown(results, PLOT if render_plot(results, docs / PLOT) else None)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    page.write_text(text)


def environment() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    versions = ", ".join(f"{p} {version(p)}" for p in ("eclipse-zenoh", "lcm", "picows", "msgspec"))
    return {
        "load_average": os.getloadavg()[0],
        "cpu": cpu,
        "cores": os.cpu_count(),
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "versions": f"python {platform.python_version()}, {versions}",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--sizes", default="5,10,25,50", help="robot counts (default 5,10,25,50)")
    p.add_argument("--drivers", type=int, default=10)
    p.add_argument("--rate", type=float, default=20.0, help="twists per second per driver (default 20)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per size (default 10)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--failovers", type=int, default=5, help="rounds of the failure timings (default 5)")
    p.add_argument("--quick", action="store_true", help="sizes 5,10; 3 s; 1 round; 1 failover")
    p.add_argument("--docs", type=Path, help="also write the Fleet section of DOCS/performance.md and its plot")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.seconds, args.rounds, args.failovers = "5,10", 3.0, 1, 1
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.monotonic()
    env = environment()
    runs: list[dict[str, Any]] = []
    out = ROOT / ".bench" / "results" / ("fleet-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for round_ in range(args.rounds):
            for n in sizes:
                run = run_size(n, args, Path(tmp))
                run["round"] = round_
                runs.append(run)
                lat = run["latency"]
                print(f"round {round_ + 1}/{args.rounds}, {n} robots: p50 {lat['p50_us']:.0f} µs, p99 "
                      f"{lat['p99_us']:.0f} µs, superseded {run['superseded']}, "
                      f"station {run['station_cpu_per_msg_us']:.1f} µs/msg",
                      flush=True)
    failovers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for round_ in range(args.failovers):
            failover = run_failover(args, Path(tmp))
            failovers.append(failover)
            print(f"failover {round_ + 1}/{args.failovers}: " + ", ".join(
                f"{phase} -> zero " + "/".join("-" if v is None else f"{v * 1000:.0f} ms" for v in times.values())
                for phase, times in failover.items()), flush=True)
    results = {
        "failovers": failovers,
        "plan": {"sizes": sizes, "drivers": args.drivers, "rate": args.rate, "seconds": args.seconds,
                 "rounds": args.rounds},
        "env": env,
        "runs": runs,
        "summary": summarize(runs),
        "wall_s": time.monotonic() - started,
    }
    results["env"]["load_average_end"] = os.getloadavg()[0]
    (out / "fleet.json").write_text(json.dumps(results, indent=1))
    (out / "fleet.md").write_text(render_markdown(results, PLOT if render_plot(results, out / PLOT) else None))
    if args.docs:
        write_docs(args.docs, results)
    print(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

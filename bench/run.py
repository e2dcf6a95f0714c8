"""Benchmark orchestrator: targets in their own processes, load from another.

Every (round, scenario, target) gets a fresh target process, so no scenario
inherits another's heap or connections, and every spawn adds a start/stop
sample. Targets are interleaved inside each scenario (A B C A B C ...), so
slow drift of the machine hits all of them alike; results are medians over
rounds, and ratios are taken against the baseline measured in the same run.

The "under attack" scenarios (:mod:`bench.attack`) measure the bridge alone,
once each, after the others: how late its safety actions are while it is
flooded or something it feeds is stuck.

    .venv/bin/python -m bench.run --quick --targets dimos,floor
    .venv/bin/python -m bench.run --docs docs         # full run, ~8 min on 2 cores
    .venv/bin/python -m bench.run --attack            # the attack scenarios alone, ~3 min
    .venv/bin/python -m bench.run --scenarios flood-pings-8,stall-zenoh
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as `python bench/run.py`: make the `bench` package importable.
    sys.path.insert(0, str(ROOT))

from bench.attack import attack_scenarios, machine_busy_s  # noqa: E402
from bench.control import ControlClient, proc_cpu_ns  # noqa: E402
from bench.procs import end_child, kill_group, read_json_line, read_line, start_child  # noqa: E402
from bench.report import render_markdown, render_plot, summarize  # noqa: E402

DIMOS_VENV = ROOT / ".bench" / "dimos-venv"
# The recording the sink target logs into (its server is tests/rerun_server.py, as in the sink's tests).
RERUN_RECORDING = "bench"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    label: str
    module: str
    python: str
    env: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    # A command that exits 0 when the target can run at all (checked first).
    check: str = ""
    # Logs into a Rerun recording: the run starts a gRPC server for it and passes its URL (rerun_connect).
    rerun_sink: bool = False


def builtin_targets() -> dict[str, TargetSpec]:
    src = str(ROOT / "src")
    floor = TargetSpec(
        name="floor",
        label="picows floor",
        module="bench.targets.floor_server",
        python=sys.executable,
        check="import picows",
    )
    bridge = TargetSpec(
        name="bridge",
        label="viewer-bridge",
        module="bench.targets.bridge_server",
        python=sys.executable,
        # The work tree's code, whether or not the venv has it installed.
        env={"PYTHONPATH": src},
        # DimOS has no per-client or per-host rate limit, frame budget,
        # connection caps or link limits; the bridge's defaults (200 msg/s
        # and 2000 frames/s per client, 400 msg/s per host, 256
        # connections, 32 handshakes in flight and 20 new connections a
        # second, 100 at once, per address) would turn the
        # throughput and idle scenarios, all from one loopback address,
        # into tests of those limits, and the load generator answers no
        # pings, which the link limits take for a dead link (twists
        # refused after 1.5 s).
        args=(
            "--kwarg",
            "rate_limit=1e9",
            "--kwarg",
            "rate_burst=1e9",
            "--kwarg",
            "host_rate_limit=0",
            "--kwarg",
            "frame_budget=1e9",
            "--kwarg",
            "max_connections=4096",
            "--kwarg",
            "max_pending_per_address=4096",
            "--kwarg",
            "connect_rate=0",
            "--kwarg",
            "link_limits=false",
        ),
        check="from viewer_bridge import RerunWebSocketServer",
    )
    return {
        "dimos": TargetSpec(
            name="dimos",
            label="DimOS 0.0.15",
            module="bench.targets.dimos_server",
            python=str(DIMOS_VENV / "bin" / "python"),
            # Its RPC session would otherwise scout for Zenoh peers by
            # multicast; the benchmark keeps all traffic on loopback TCP.
            env={"ZENOH_MULTICAST": "false"},
            check="import dimos.visualization.rerun.websocket_server",
        ),
        "floor": floor,
        # The floor plus the least a bridge with issue 9's isolation must do: parse each message into a
        # typed event and hand it to the subscriber on a thread of its own. No rule at all.
        "floor-iso": replace(
            floor,
            name="floor-iso",
            label="isolation floor",
            env={"PYTHONPATH": src},
            args=("--kwarg", "parse=true", "--kwarg", "handoff=true"),
        ),
        "bridge": bridge,
        # Issue 13's sink on, logging into a live Rerun gRPC server's recording (started by the run).
        "bridge-rerun": replace(
            bridge,
            name="bridge-rerun",
            label="viewer-bridge (Rerun sink)",
            args=(*bridge.args, "--kwarg", f'rerun_recording_id="{RERUN_RECORDING}"'),
            check="import rerun; from viewer_bridge import RerunWebSocketServer",
            rerun_sink=True,
        ),
        # A variant is a base target plus constructor kwargs, e.g. from the
        # command line: --variant bridge-lcm:bridge:transport=lcm
    }


@dataclass(frozen=True)
class Scenario:
    name: str
    load: tuple[str, ...]
    timeout: float


@dataclass(frozen=True)
class Plan:
    rounds: int
    tp_seconds: float
    latency_seconds: float
    idle_seconds: float
    idle_connections: tuple[int, ...]
    twist8: bool = False

    def scenarios(self) -> list[Scenario]:
        def tp(name: str, clients: int, message: str) -> Scenario:
            load = ("throughput", "--clients", str(clients), "--message", message)
            return Scenario(name, (*load, "--seconds", str(self.tp_seconds)), self.tp_seconds * 20 + 60)

        # Twists from 8 clients at once are not a fair test: viewer-bridge lets
        # one client drive at a time and refuses the others' twists by design.
        # Clicks are published from every client by every target, so the
        # multi-client scenario sends clicks ("tp8", twists, is opt-in).
        out = [tp("tp1", 1, "twist"), tp("click1", 1, "click"), tp("click8", 8, "click")]
        if self.twist8:
            out.append(tp("tp8", 8, "twist"))
        out.append(
            Scenario(
                "lat200",
                ("latency", "--rate", "200", "--seconds", str(self.latency_seconds)),
                timeout=self.latency_seconds * 2 + 60,
            )
        )
        out += [
            Scenario(
                f"idle{n}",
                ("idle", "--connections", str(n), "--seconds", str(self.idle_seconds)),
                timeout=self.idle_seconds * 2 + 90,
            )
            for n in self.idle_connections
        ]
        return out


FULL = Plan(rounds=5, tp_seconds=3.0, latency_seconds=6.0, idle_seconds=3.0, idle_connections=(500, 1000))
QUICK = Plan(rounds=1, tp_seconds=1.0, latency_seconds=3.0, idle_seconds=1.0, idle_connections=(500, 1000))


@contextlib.contextmanager
def target_process(spec: TargetSpec, log_path: Path, max_seconds: float) -> Iterator[dict[str, Any]]:
    """Start one target; yield its ready record; stop it (timed) and reap it."""
    env = {**os.environ, **spec.env}
    if "PYTHONPATH" in spec.env and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = spec.env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    cmd = [spec.python, "-m", spec.module, *spec.args, "--max-seconds", str(max_seconds)]
    with open(log_path, "ab") as log:
        t0 = time.monotonic()
        proc = start_child(cmd, ROOT, log, env)  # stdin stays open for the target's parent watchdog
        try:
            assert proc.stdout is not None
            ready = read_json_line(proc.stdout, timeout=60.0)
            ready["spawn_ready_s"] = time.monotonic() - t0
            yield ready
            # stop() is measured with no clients left: after a scenario the
            # server may still be reaping a thousand dropped connections.
            _wait_quiet(int(ready["pid"]))
            with ControlClient(int(ready["control_port"]), timeout=30.0) as ctl:
                ready["stop_s"] = ctl.call("stop")["stop_s"]
            proc.wait(timeout=15.0)
        finally:
            end_child(proc)


@contextlib.contextmanager
def rerun_recording(log_path: Path) -> Iterator[str]:
    """A Rerun gRPC server holding the recording a sink target logs into, for the whole run; yields its URL.

    It is ``tests/rerun_server.py``, the server the sink's own tests read
    back from; it serves until its stdin closes.
    """
    with open(log_path, "ab") as log:
        proc = start_child(
            [sys.executable, str(ROOT / "tests" / "rerun_server.py"), "--recording-id", RERUN_RECORDING], ROOT, log
        )
    try:
        assert proc.stdout is not None
        yield read_line(proc.stdout, timeout=120.0).decode().strip()
    finally:
        end_child(proc)


def _wait_quiet(pid: int, window: float = 0.1, limit: float = 3.0) -> None:
    """Return once ``pid`` used under 2 % of a core over ``window`` s, or after ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu0 = proc_cpu_ns(pid)
        time.sleep(window)
        if proc_cpu_ns(pid) - cpu0 < window * 0.02 * 1e9:
            return


def run_load(scenario: Scenario, ready: dict[str, Any], log_path: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.load",
        *scenario.load,
        "--ws-port",
        str(ready["ws_port"]),
        "--control-port",
        str(ready["control_port"]),
        "--pid",
        str(ready["pid"]),
    ]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            result = read_json_line(proc.stdout, timeout=scenario.timeout)
            proc.wait(timeout=10.0)
            return result
        finally:
            kill_group(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def run_attack(name: str, logs: Path, drives: int | None, timeout: float = 180.0) -> dict[str, Any]:
    """One attack scenario in a measuring process of its own; its JSON result."""
    cmd = [sys.executable, "-m", "bench.attack", name, "--log-dir", str(logs)]
    if drives:
        cmd += ["--drives", str(drives)]
    with open(logs / f"attack-{name}.measure.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True
        )
        try:
            assert proc.stdout is not None
            result = read_json_line(proc.stdout, timeout=timeout)
            proc.wait(timeout=30.0)
            return result
        finally:
            kill_group(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def wait_for_quiet(max_wait: float, busy_below: float = 30.0, window: float = 0.5) -> dict[str, float]:
    """Wait (up to ``max_wait`` s) for a ``window`` in which the machine's cores are busy under ``busy_below`` %
    of one core, so that an attack scenario does not start in the middle of someone else's burst."""
    t0 = time.monotonic()
    busy = math.nan
    while True:
        b0 = machine_busy_s()
        time.sleep(window)
        busy = (machine_busy_s() - b0) / window * 100.0
        if busy < busy_below or time.monotonic() - t0 >= max_wait:
            return {"quiet_wait_s": time.monotonic() - t0, "busy_before_pct": busy}


def select_scenarios(text: str | None, attack: bool, plan: Plan) -> tuple[Plan, list[Scenario], list[str]]:
    """``--scenarios`` (names and groups) and ``--attack`` -> the plan, its scenarios, and the attack scenarios."""
    every = replace(plan, twist8=True).scenarios()
    attacks = attack_scenarios()
    groups = {
        "default": [s.name for s in plan.scenarios()],
        "attack": [s.name for s in attacks],
        "floods": [s.name for s in attacks if s.group == "flood"],
        "stalls": [s.name for s in attacks if s.group == "stall"],
    }
    tokens = [t for t in (text or "").split(",") if t] or ([] if attack else ["default"])
    if attack:
        tokens.append("attack")
    wanted: set[str] = set()
    known = {s.name for s in every} | set(groups["attack"])
    for token in tokens:
        if token in groups:
            wanted.update(groups[token])
        elif token in known:
            wanted.add(token)
        else:
            sys.exit(f"unknown scenario {token!r}; known: {', '.join([*groups, *sorted(known)])}")
    plan = replace(plan, twist8="tp8" in wanted)
    return plan, [s for s in plan.scenarios() if s.name in wanted], [n for n in groups["attack"] if n in wanted]


def _versions(python: str, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        res = subprocess.run([python, "-c", code], capture_output=True, timeout=60, check=True)
        versions: dict[str, str] = json.loads(res.stdout)
        return versions
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return {}


def _machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        # Other work on the machine shows up as noise; the reader should know.
        "loadavg_start": os.getloadavg()[0],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        # Started under `nice -n -10` (say), the benchmark runs ahead of other work on a shared machine.
        "nice": os.nice(0),
    }


def preflight(specs: list[TargetSpec], setup: bool) -> None:
    for spec in specs:
        if spec.python == str(DIMOS_VENV / "bin" / "python"):
            if setup:
                # Idempotent, and instant when the venv is up to date.
                subprocess.run(["bash", str(ROOT / "bench" / "setup_dimos.sh")], check=True)
            elif not Path(spec.python).exists():
                sys.exit(f"{spec.name}: {DIMOS_VENV} is missing; run bench/setup_dimos.sh")
        if not spec.check:
            continue
        env = {**os.environ, **spec.env}
        res = subprocess.run([spec.python, "-c", spec.check], cwd=ROOT, env=env, capture_output=True, timeout=120)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()[-1:]
            sys.exit(
                f"target {spec.name!r} cannot run ({spec.check!r}: {' '.join(err)}); "
                "choose others with --targets, e.g. --targets dimos,floor"
            )


def parse_variant(text: str, targets: dict[str, TargetSpec]) -> TargetSpec:
    """NAME:BASE:KW=V[,KW=V...] -> BASE's spec, renamed, with --kwarg arguments."""
    try:
        name, base, kwargs = text.split(":", 2)
    except ValueError:
        raise SystemExit(f"--variant wants NAME:BASE:KW=V[,KW=V], got {text!r}") from None
    if base not in targets:
        raise SystemExit(f"--variant {text!r}: unknown base target {base!r}")
    extra: list[str] = []
    for kv in filter(None, kwargs.split(",")):
        extra += ["--kwarg", kv]
    spec = targets[base]
    return replace(spec, name=name, label=f"{spec.label} ({kwargs})", args=spec.args + tuple(extra))


def main(argv: list[str] | None = None) -> int:
    targets = builtin_targets()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default="dimos,floor,bridge", help="comma-separated, in round order")
    p.add_argument("--baseline", default="dimos", help="target that ratios are taken against")
    p.add_argument("--quick", action="store_true", help="1 round, short phases (~1 minute)")
    p.add_argument("--rounds", type=int, help="override the plan's round count")
    p.add_argument(
        "--scenarios",
        help="comma-separated names or groups: tp1,click1,click8,tp8,lat200,idle500,idle1000; "
        "flood-KIND-N, quiet, stall-{asyncio,threaded,zenoh,stdout}; groups default (all but tp8 "
        "and the attack), attack, floods, stalls (default: default)",
    )
    p.add_argument("--attack", action="store_true", help="run the under-attack scenarios (alone, unless --scenarios)")
    p.add_argument("--attack-rounds", type=int, default=1, help="rounds of the attack scenarios (default 1)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=5.0,
        help="before each attack scenario, wait up to this many seconds for other work on the machine to pause",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="extra target NAME:BASE:KW=V[,KW=V] (constructor kwargs as JSON or bare strings)",
    )
    p.add_argument(
        "--target-arg",
        action="append",
        default=[],
        metavar="TARGET=ARG",
        help="append one argument to a target's command line (repeatable)",
    )
    p.add_argument("--out-dir", type=Path, help="default: .bench/results/<timestamp>")
    p.add_argument("--docs", type=Path, help="also write performance.md + .png into this folder")
    p.add_argument("--no-setup", action="store_true", help="do not create the DimOS venv")
    args = p.parse_args(argv)

    for v in args.variant:
        spec = parse_variant(v, targets)
        targets[spec.name] = spec
    for ta in args.target_arg:
        name, _, arg = ta.partition("=")
        if name not in targets:
            sys.exit(f"--target-arg: unknown target {name!r}")
        targets[name] = replace(targets[name], args=(*targets[name].args, arg))
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    plan, scenarios, attacks = select_scenarios(args.scenarios, args.attack, plan)
    # The attack scenarios run the bridge themselves: no target list for them alone.
    names = [n for n in args.targets.split(",") if n] if scenarios else []
    unknown = [n for n in names if n not in targets]
    if unknown:
        sys.exit(f"unknown targets {unknown}; known: {sorted(targets)}")
    specs = [targets[n] for n in names]

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir: Path = (args.out_dir or ROOT / ".bench" / "results" / stamp).resolve()
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    # DimOS writes a JSON log file per process; keep it with this run.
    for spec in specs:
        if spec.module.endswith("dimos_server"):
            spec.env.setdefault("DIMOS_RUN_LOG_DIR", str(logs / "dimos"))

    # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C, so every finally
    # block below gets to kill its child process group.
    def on_term(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    preflight(specs, setup=not args.no_setup)
    servers = contextlib.ExitStack()
    if any(spec.rerun_sink for spec in specs):
        url = servers.enter_context(rerun_recording(logs / "rerun-server.log"))
        specs = [
            replace(spec, args=(*spec.args, "--kwarg", f'rerun_connect="{url}"')) if spec.rerun_sink else spec
            for spec in specs
        ]
    if os.getloadavg()[0] > 1.0:
        print(f"note: load average {os.getloadavg()[0]:.1f}: other work is running, expect noise", flush=True)

    results: dict[str, Any] = {
        "machine": _machine(),
        "versions": {
            "harness": _versions(sys.executable, ["picows", "msgspec", "viewer-bridge", "matplotlib"]),
            **(
                {"dimos": _versions(str(DIMOS_VENV / "bin" / "python"), ["dimos", "websockets", "pydantic"])}
                if any(s.name == "dimos" for s in specs)
                else {}
            ),
        },
        "plan": {**plan.__dict__, "scenarios": [s.name for s in scenarios], "attack": attacks},
        "targets": {s.name: {"label": s.label, "args": list(s.args)} for s in specs},
        "baseline": args.baseline if args.baseline in names or not names else names[0],
        "runs": [],
        "attack": [],
    }
    max_seconds = max((s.timeout for s in scenarios), default=0.0) + 120.0
    t_run = time.monotonic()
    failures = 0
    try:
        for rnd in range(plan.rounds):
            for sc in scenarios:
                for spec in specs:
                    unit: dict[str, Any] = {"round": rnd, "scenario": sc.name, "target": spec.name}
                    log_path = logs / f"r{rnd}-{sc.name}-{spec.name}.log"
                    t_unit = time.monotonic()
                    try:
                        with target_process(spec, log_path, max_seconds) as ready:
                            unit["metrics"] = run_load(sc, ready, log_path)
                        unit["lifecycle"] = ready
                    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                        failures += 1
                        unit["error"] = f"{exc!r}; log: {log_path}: {_last_line(log_path)}"
                    results["runs"].append(unit)
                    print(_progress_line(unit, time.monotonic() - t_unit), flush=True)
        if attacks:
            # The attack part may be re-run alone and merged in (bench.report --attack-from): it keeps its own date.
            results["attack_machine"] = {
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "loadavg_start": os.getloadavg()[0],
                "nice": os.nice(0),
            }
        for rnd in range(args.attack_rounds if attacks else 0):
            for name in attacks:
                unit = {"round": rnd, "scenario": name, "target": "attack"}
                t_unit = time.monotonic()
                try:
                    unit["quiet"] = wait_for_quiet(args.quiet_wait)
                    unit["metrics"] = run_attack(name, logs, drives=1 if args.quick else None)
                except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                    failures += 1
                    log_path = logs / f"attack-{name}.measure.log"
                    unit["error"] = f"{exc!r}; log: {log_path}: {_last_line(log_path)}"
                results["attack"].append(unit)
                print(_progress_line(unit, time.monotonic() - t_unit), flush=True)
    except KeyboardInterrupt:
        print("interrupted: writing partial results", file=sys.stderr)
        results["interrupted"] = True
    finally:
        servers.close()
    results["wall_s"] = time.monotonic() - t_run
    results["machine"]["loadavg_end"] = os.getloadavg()[0]
    if "attack_machine" in results:
        results["attack_machine"]["loadavg_end"] = os.getloadavg()[0]
    results["summary"] = summarize(results)

    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    md = render_markdown(results, plot_name="performance.png")
    (out_dir / "performance.md").write_text(md)
    plotted = render_plot(results, out_dir / "performance.png")
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        (args.docs / "performance.md").write_text(md)
        if plotted:
            render_plot(results, args.docs / "performance.png")
    latest = ROOT / ".bench" / "results" / "latest"
    if out_dir.parent == latest.parent:
        with contextlib.suppress(OSError):
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(out_dir.name)
    print()
    print(md)
    print(f"results: {out_dir}  ({results['wall_s']:.0f} s, {failures} failed units)")
    return 1 if failures or results.get("interrupted") else 0


def _last_line(path: Path) -> str:
    """The last non-empty line of a log, where a failing child says why."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _progress_line(unit: dict[str, Any], seconds: float) -> str:
    head = f"[r{unit['round']} {unit['scenario']:>8} {unit['target']:>10}] {seconds:5.1f}s "
    if "error" in unit:
        return f"{head}ERROR {unit['error']}"
    m = unit["metrics"]
    if "msgs_per_s" in m:
        return head + f"{m['msgs_per_s']:>10,.0f} msg/s {m['cpu_us_per_msg']:6.2f} us/msg lost {m['lost']}"
    if "p50_us" in m:
        return head + f"p50 {m['p50_us']:.0f} us p99 {m['p99_us']:.0f} us max {m['max_us']:.0f} us"
    if "met" in m:
        met = m["met"]
        return head + (
            f"twist p99 {m.get('twist_p99_ms', math.nan):.1f} ms, stop max {m.get('stop_max_ms', math.nan):.1f} ms "
            f"(HTTP {m.get('http_stop_max_ms', math.nan):.1f} ms), "
            f"deadman +{m.get('deadman_late_max_ms', math.nan):.1f} ms, handshake max "
            f"{m.get('handshake_max_ms', math.nan):.1f} ms, RSS +{m.get('rss_growth_mb', math.nan):.1f} MB: "
            f"{sum(met.values())}/{len(met)} targets met"
        )
    if "rss_kb_per_conn" in m:
        return head + f"{m['rss_kb_per_conn']:.1f} KB/conn idle CPU {m['idle_cpu_pct']:.2f} %"
    return head + json.dumps(m)[:120]


if __name__ == "__main__":
    sys.exit(main())

"""Turn a results.json from bench/run.py into medians, ratios, markdown and a plot.

Re-render without re-running: ``python -m bench.report RESULTS.json --out DIR``.
matplotlib is optional: without it there is no PNG, everything else works.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Metric:
    key: str  # "<scenario>.<field>[.<field>]", or "life.<field>" over every spawn
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 1
    scale: float = 1.0
    total: bool = False  # report the sum over rounds (message loss), not a median


METRICS: tuple[Metric, ...] = (
    Metric("tp1.msgs_per_s", "Twist throughput, 1 client", "msg/s", True, 0),
    Metric("tp1.cpu_us_per_msg", "Server CPU per twist, 1 client", "µs", False, 2),
    Metric("tp1.lost", "Twists lost, 1 client (sum)", "", False, 0, total=True),
    Metric("click1.msgs_per_s", "Click throughput, 1 client", "msg/s", True, 0),
    Metric("click1.cpu_us_per_msg", "Server CPU per click, 1 client", "µs", False, 2),
    Metric("click1.lost", "Clicks lost, 1 client (sum)", "", False, 0, total=True),
    Metric("click8.msgs_per_s", "Click throughput, 8 clients", "msg/s", True, 0),
    Metric("click8.cpu_us_per_msg", "Server CPU per click, 8 clients", "µs", False, 2),
    Metric("click8.lost", "Clicks lost, 8 clients (sum)", "", False, 0, total=True),
    Metric("tp8.msgs_per_s", "Throughput, 8 clients", "msg/s", True, 0),
    Metric("tp8.cpu_us_per_msg", "Server CPU per message, 8 clients", "µs", False, 2),
    Metric("tp8.lost", "Messages lost, 8 clients (sum)", "", False, 0, total=True),
    Metric("lat200.p50_us", "Latency at 200 msg/s, p50", "µs", False, 0),
    Metric("lat200.p99_us", "Latency at 200 msg/s, p99", "µs", False, 0),
    Metric("lat200.max_us", "Latency at 200 msg/s, max", "µs", False, 0),
    Metric("idle500.rss_kb_per_conn", "RSS per idle connection (500)", "KB", False, 1),
    Metric("idle500.idle_cpu_pct", "CPU with 500 idle connections", "%", False, 2),
    Metric("idle500.probe.p50_us", "Probe latency with 500 idle, p50", "µs", False, 0),
    Metric("idle500.probe.max_us", "Probe latency with 500 idle, max", "µs", False, 0),
    Metric("idle500.connects_per_s", "Connection setup rate (500)", "conn/s", True, 0),
    Metric("idle1000.rss_kb_per_conn", "RSS per idle connection (1000)", "KB", False, 1),
    Metric("idle1000.idle_cpu_pct", "CPU with 1000 idle connections", "%", False, 2),
    Metric("idle1000.probe.p50_us", "Probe latency with 1000 idle, p50", "µs", False, 0),
    Metric("idle1000.probe.max_us", "Probe latency with 1000 idle, max", "µs", False, 0),
    Metric("idle1000.connects_per_s", "Connection setup rate (1000)", "conn/s", True, 0),
    Metric("life.listen_s", "Constructor + start() to listening", "ms", False, 2, scale=1e3),
    Metric("life.stop_s", "stop()", "ms", False, 2, scale=1e3),
    Metric("life.import_s", "Import of the server module", "ms", False, 0, scale=1e3),
    Metric("life.spawn_ready_s", "Process spawn to listening", "ms", False, 0, scale=1e3),
)


def _dig(obj: Any, path: list[str]) -> float | None:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or math.isnan(obj):
        return None
    return float(obj)


def metric_values(results: dict[str, Any], target: str, metric: Metric) -> list[float]:
    scenario, *path = metric.key.split(".")
    out: list[float] = []
    for unit in results.get("runs", []):
        if unit["target"] != target or "error" in unit:
            continue
        if scenario == "life":
            value = _dig(unit.get("lifecycle"), path)
        elif unit["scenario"] == scenario:
            value = _dig(unit.get("metrics"), path)
        else:
            continue
        if value is not None:
            out.append(value * metric.scale)
    return out


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Per target and metric: median (or sum), min, max, n; ratios to the baseline."""
    stats: dict[str, dict[str, dict[str, float]]] = {}
    for target in results["targets"]:
        stats[target] = {}
        for m in METRICS:
            values = metric_values(results, target, m)
            if not values:
                continue
            center = sum(values) if m.total else statistics.median(values)
            stats[target][m.key] = {
                "value": center,
                "min": min(values),
                "max": max(values),
                "n": float(len(values)),
            }
    base = results["baseline"]
    ratios: dict[str, dict[str, float]] = {}
    for target in results["targets"]:
        if target == base:
            continue
        ratios[target] = {}
        for m in METRICS:
            a, b = stats[target].get(m.key), stats.get(base, {}).get(m.key)
            if a and b and not m.total and b["value"]:
                ratios[target][m.key] = a["value"] / b["value"]
    return {"stats": stats, "ratios": ratios}


def _fmt(value: float, digits: int) -> str:
    return f"{value:,.{digits}f}"


def render_markdown(results: dict[str, Any], plot_name: str | None = "performance.png") -> str:
    machine = results["machine"]
    lines = ["# Performance", ""]
    if results.get("interrupted"):
        lines += ["**Interrupted run: partial results.**", ""]
    if results.get("targets"):
        lines += _render_main(results, plot_name)
    if results.get("attack"):
        lines += render_attack(results)
    lines += ["## Environment", ""]
    for venv, versions in results.get("versions", {}).items():
        if versions:
            pkgs = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
            lines.append(f"- {venv}: {pkgs}")
    lines.append(f"- Wall time of the run: {results.get('wall_s', 0):.0f} s")
    if "loadavg_start" in machine:
        lines.append(
            f"- 1-minute load average at start {machine['loadavg_start']:.2f}, at end "
            f"{machine.get('loadavg_end', math.nan):.2f} (the run itself keeps about one core busy; "
            "more means other work shared the machine and widened the spread)"
        )
    if machine.get("nice"):
        lines.append(f"- Niceness {machine['nice']}: {_nice_words(machine['nice'])}")
    lines.append("")
    return "\n".join(lines)


def _nice_words(nice: int) -> str:
    if nice < 0:
        return "the benchmark's processes ran ahead of other work on the shared machine"
    return "the benchmark's processes gave way to other work on the machine"


def _render_main(results: dict[str, Any], plot_name: str | None) -> list[str]:
    summary = results.get("summary") or summarize(results)
    stats, ratios = summary["stats"], summary["ratios"]
    targets: dict[str, Any] = results["targets"]
    base = results["baseline"]
    base_label = targets[base]["label"]
    plan = results["plan"]
    machine = results["machine"]
    rounds = plan["rounds"]

    lines = [
        f"Measured by `bench/run.py` on {machine['cpu'] or 'an unnamed CPU'}, "
        f"{machine['cores']} cores, Linux {machine['kernel']}, {machine['date']}. "
        f"{rounds} round{'s' if rounds != 1 else ''}; each cell is the median over rounds "
        "with [min-max] beneath it when rounds differ. "
        f"Ratio = target ÷ {base_label}, both measured in this run: "
        "↑ marks metrics where higher is better, ↓ where lower is better.",
        "",
    ]
    header = ["Metric", ""]
    for t in targets:
        header.append(targets[t]["label"])
        if t != base:
            header.append(f"÷ {base_label}")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---", ":-:"] + ["--:"] * (len(header) - 2)) + "|")
    for m in METRICS:
        if not any(m.key in stats.get(t, {}) for t in targets):
            continue
        unit = f" ({m.unit})" if m.unit else ""
        row = [m.label + unit, "↑" if m.higher_is_better else "↓"]
        for t in targets:
            s = stats.get(t, {}).get(m.key)
            if s is None:
                cell = "-"
            else:
                cell = _fmt(s["value"], m.digits)
                if not m.total and s["n"] > 1 and s["min"] != s["max"]:
                    cell += f" [{_fmt(s['min'], m.digits)}-{_fmt(s['max'], m.digits)}]"
            row.append(cell)
            if t != base:
                r = ratios.get(t, {}).get(m.key)
                row.append(f"{r:.2f}x" if r is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines += _headlines(stats, ratios, targets, base)
    if plot_name:
        lines += [f"![Benchmark medians, error bars min-max over rounds]({plot_name})", ""]

    failed = [u for u in results.get("runs", []) if "error" in u]
    if failed:
        lines += ["Failed units (excluded above):", ""]
        lines += [f"- round {u['round']} {u['scenario']} {u['target']}: `{u['error']}`" for u in failed]
        lines.append("")

    settings = [
        f"- {v['label']} ran with `{' '.join(v['args'])}`"
        + (
            ": DimOS has no per-client or per-host rate limit, frame budget, connection caps or link limits, "
            "so the bridge's are lifted to compare like with like (the attack scenarios below keep them)."
            if "rate_limit=1e9" in v["args"]
            else "."
        )
        for name, v in targets.items()
        if v.get("args")
    ]
    lines += [
        "## Method",
        "",
        *settings,
        "- Every target runs in its own process; a separate load process drives it over "
        "loopback. Each (round, scenario, target) gets a fresh target process, and targets "
        "alternate within each scenario (A B C A B C ...), so drift hits all alike.",
        f"- Targets: {', '.join('**' + v['label'] + '**' for v in targets.values())}."
        + (
            " The floor is a picows server that only counts text frames: no parsing, no "
            "messages, no subscribers; no Python server on this machine can beat it."
            if "floor" in targets
            else ""
        )
        + (
            " The isolation floor is the floor plus the least a bridge with issue 9's isolation "
            "must do: each message parsed by the bridge's own `parse_message` and handed to the "
            "subscriber on a thread of its own (a `queue.SimpleQueue`); no check, limit, lease, "
            "watchdog or metric."
            if "floor-iso" in targets
            else ""
        ),
        "- Twists are the viewer's W+A twist, "
        '`{"type":"twist","linear_x":0.5,...,"angular_z":0.8}`, each in a masked text frame. '
        "The load generator does the HTTP upgrade on a raw socket and writes pre-built "
        "frames, 512 per `send`, so it outruns every server (its CPU use is in results.json).",
        "- Throughput: twists from 1 client; clicks "
        '(`{"type":"click","x":1.2345678806304932,...,"entity_path":"/world/map",...}`) from 1 '
        "and from 8 clients. Multi-client throughput uses clicks because viewer-bridge lets "
        "one client drive at a time and refuses the others' twists, by design. Clients send as "
        f"fast as the server takes them, for about {plan['tp_seconds']:g} s after a "
        "20k-message warm-up. Rate = messages seen by the "
        "server's subscriber ÷ (last arrival - first send). CPU per message = the server "
        "process's CPU time (all threads, /proc schedstat) ÷ messages. Lost = sent - "
        "received, and must be 0.",
        f"- Latency: one client sends 200 msg/s for {plan['latency_seconds']:g} s; the i-th "
        "send is paired with the i-th subscriber call (TCP keeps order; counts must match), "
        "both stamped with CLOCK_MONOTONIC, which is one clock for all processes.",
        f"- Idle: {' and '.join(str(n) for n in plan['idle_connections'])} upgraded "
        "connections that send nothing. RSS per connection = RSS growth ÷ connections; idle "
        f"CPU over {plan['idle_seconds']:g} s; then 200 probe twists at 200 msg/s (1 s) on a "
        "connection opened before the idle ones.",
        "- Start: constructor + `start()` until a TCP connect to the port succeeds, timed "
        "in the target process; stop: `stop()` with no clients left. Spawn to listening "
        "includes interpreter start and imports.",
        "",
    ]
    return lines


# The throughput floors, as multiples of DimOS's server: (target, metric, floor).
_RATIO_FLOORS = (
    ("bridge", "tp1.msgs_per_s", 3.5),
    ("bridge", "click8.msgs_per_s", 3.5),
    ("bridge-lcm", "tp1.msgs_per_s", 2.5),
    ("bridge-lcm", "click8.msgs_per_s", 2.5),
    ("bridge-rerun", "tp1.msgs_per_s", 3.0),  # issue 13: with the Rerun sink on
    ("bridge-rerun", "click8.msgs_per_s", 3.0),
)


def _headlines(
    stats: dict[str, dict[str, dict[str, float]]],
    ratios: dict[str, dict[str, float]],
    targets: dict[str, Any],
    base: str,
) -> list[str]:
    """CPU per twist with and without LCM, and the throughput floors, when the run has those targets."""
    out: list[str] = []
    cpu = [
        f"{targets[t]['label']} {stats[t]['tp1.cpu_us_per_msg']['value']:.2f} µs"
        for t in ("bridge", "bridge-lcm", "bridge-rerun")
        if t in targets and "tp1.cpu_us_per_msg" in stats.get(t, {})
    ]
    if cpu:
        out.append("- Server CPU per twist (1 client): " + "; ".join(cpu) + ".")
    if base == "dimos":
        for target, key, floor in _RATIO_FLOORS:
            r = ratios.get(target, {}).get(key)
            if r is None:
                continue
            label = next(m.label for m in METRICS if m.key == key)
            mark = "✓" if r >= floor else "✗"
            out.append(f"- {label}, {targets[target]['label']}: {r:.2f}x DimOS (floor {floor:g}x) {mark}")
    return [*out, ""] if out else []


# (title, unit, metric keys, series labels, log scale)
_PANELS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], bool], ...] = (
    (
        "Throughput",
        "msg/s",
        ("tp1.msgs_per_s", "click1.msgs_per_s", "click8.msgs_per_s"),
        ("twist, 1 client", "click, 1 client", "click, 8 clients"),
        True,
    ),
    (
        "Server CPU per message",
        "µs",
        ("tp1.cpu_us_per_msg", "click1.cpu_us_per_msg", "click8.cpu_us_per_msg"),
        ("twist, 1 client", "click, 1 client", "click, 8 clients"),
        True,
    ),
    (
        "Latency at 200 msg/s",
        "µs",
        ("lat200.p50_us", "lat200.p99_us", "lat200.max_us"),
        ("p50", "p99", "max"),
        True,
    ),
    (
        "RSS per idle connection",
        "KB",
        ("idle500.rss_kb_per_conn", "idle1000.rss_kb_per_conn"),
        ("500", "1000"),
        False,
    ),
    (
        "Probe latency among idle connections (p50)",
        "µs",
        ("idle500.probe.p50_us", "idle1000.probe.p50_us"),
        ("500 idle", "1000 idle"),
        False,
    ),
    ("Start and stop", "ms", ("life.listen_s", "life.stop_s"), ("start to listening", "stop()"), True),
)


def pyplot() -> Any | None:
    """matplotlib's pyplot drawing to files (no display), or None, said once, when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return None
    return plt


def render_plot(results: dict[str, Any], path: Path) -> bool:
    """Write a PNG of the medians; False (and no file) when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    summary = results.get("summary") or summarize(results)
    stats = summary["stats"]
    targets: dict[str, Any] = results["targets"]
    names = list(targets)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (title, unit, keys, series, log) in zip(axes.flat, _PANELS, strict=True):
        width = 0.8 / len(keys)
        for i, (key, label) in enumerate(zip(keys, series, strict=True)):
            xs, ys, lo, hi = [], [], [], []
            for j, t in enumerate(names):
                s = stats.get(t, {}).get(key)
                if s is None:
                    continue
                xs.append(j + (i - (len(keys) - 1) / 2) * width)
                ys.append(s["value"])
                lo.append(s["value"] - s["min"])
                hi.append(s["max"] - s["value"])
            if not xs:
                continue
            bars = ax.bar(xs, ys, width, label=label, yerr=[lo, hi], capsize=3)
            ax.bar_label(bars, labels=[_short(y) for y in ys], fontsize=7, padding=2)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xticks(range(len(names)), [targets[t]["label"] for t in names], fontsize=8)
        if log:
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="gray")
        ax.grid(axis="y", alpha=0.3)
    rounds = results["plan"]["rounds"]
    fig.suptitle(f"viewer-bridge benchmark: medians of {rounds} round(s), bars span min-max")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _short(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


# -- under attack ------------------------------------------------------------------------------

# Summed over rounds (one lost twist in any round counts); every other figure is a median.
_ATTACK_COUNTS = (
    "twists_sent", "twists_lost", "stops_sent", "stops_unanswered", "http_stops_sent", "http_stops_unanswered",
    "http_stops_refused", "deadman_missing", "extra_zeros",
)  # fmt: skip


def summarize_attack(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per attack scenario: medians over rounds (counts summed), and which targets the medians meet."""
    from bench.attack import SCENARIOS, verdicts

    by_name: dict[str, list[dict[str, Any]]] = {}
    for unit in results.get("attack", []):
        if "metrics" in unit:
            by_name.setdefault(unit["scenario"], []).append(unit["metrics"])
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by_name.items():
        merged: dict[str, Any] = {k: v for k, v in runs[0].items() if not isinstance(v, (int, float))}
        merged.pop("raw", None)
        for key, first in runs[0].items():
            if isinstance(first, bool) or not isinstance(first, (int, float)):
                continue
            values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and r[key] == r[key]]
            if key in _ATTACK_COUNTS:
                merged[key] = sum(values)
            elif values:
                merged[key] = statistics.median(values)
            else:
                merged[key] = math.nan
        merged["rounds"] = len(runs)
        targets = SCENARIOS[name].targets if name in SCENARIOS else runs[0].get("targets", {})
        merged["met"] = verdicts(merged, targets)
        out[name] = merged
    return out


def _cell(m: dict[str, Any], key: str, digits: int = 1, bound: float | None = None) -> str:
    value = m.get(key)
    text = _fmt(value, digits) if isinstance(value, (int, float)) and value == value else "-"
    if bound is not None:
        text += " ✓" if m.get("met", {}).get(key) else " ✗"
    return text


def render_attack(results: dict[str, Any]) -> list[str]:
    from bench.attack import BLOCK_SECONDS, CLICKS_PER_S, DEADMAN, HANDSHAKE_PERIOD, STALL_TARGETS, TARGETS

    summary = summarize_attack(results)
    rounds = max((m["rounds"] for m in summary.values()), default=0)
    t = TARGETS
    lines = [
        "## Under attack",
        "",
        "viewer-bridge (`viewer-bridge serve --transport lcm`, default limits, "
        f"`--deadman-timeout {DEADMAN:g}`) while other connections flood it, each flood from processes of "
        "its own. Beside the flood, a normal client sends a twist every 50 ms and a second client "
        "stops two of every four segments of a drive, a sender without a WebSocket stops the third with "
        "`POST /stop` (the fourth ends in silence, for the deadman); times are taken from send to arrival on "
        "the LCM bus, seen by "
        "an independent `lcm` listener. Targets (from the issue, for this 2-core machine): twist p99 "
        f"< {t['twist_p99_ms']:g} ms, stop < {t['stop_max_ms']:g} ms (over HTTP too), deadman zero at the timeout + "
        f"< {t['deadman_late_max_ms']:g} ms, a new client's handshake < {t['handshake_max_ms']:g} ms, "
        f"memory growth < {t['rss_growth_mb']:g} MB. ✓ met, ✗ missed; stop, deadman and handshake are "
        "the worst sample, not a percentile; the HTTP stop is not a target of the issue's, held to the same "
        "bound. "
        + (f"{rounds} round{'s' if rounds != 1 else ''} (medians). " if rounds else "")
        + _measured(results.get("attack_machine")),
        "",
    ]
    floods = [(n, m) for n, m in summary.items() if m.get("group") == "flood"]
    if floods:
        lines += [
            "| Flood | Conns | Twist p50 (ms) | Twist p99 (ms) | Twists lost | Stop max (ms) "
            "| HTTP stop max (ms) | Deadman late, max (ms) | Handshake max (ms) | RSS growth (MB) "
            "| Bridge CPU (%) | Others' CPU (%) | Targets met |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
        ]
        for _name, m in floods:
            met = m.get("met", {})
            row = [
                m.get("flood") or "none (quiet)",
                f"{m.get('connections', 0):.0f}",
                _cell(m, "twist_p50_ms"),
                _cell(m, "twist_p99_ms", bound=t["twist_p99_ms"]),
                f"{m.get('twists_lost', 0):.0f}/{m.get('twists_sent', 0):.0f}",
                _cell(m, "stop_max_ms", bound=t["stop_max_ms"]),
                _cell(m, "http_stop_max_ms", bound=t["http_stop_max_ms"]),
                _cell(m, "deadman_late_max_ms", bound=t["deadman_late_max_ms"]),
                _cell(m, "handshake_max_ms", bound=t["handshake_max_ms"]),
                _cell(m, "rss_growth_mb", bound=t["rss_growth_mb"]),
                _cell(m, "bridge_cpu_pct", 0),
                _cell(m, "others_cpu_pct", 0),
                f"{sum(met.values())}/{len(met)}",
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    stalls = [(n, m) for n, m in summary.items() if m.get("group") == "stall"]
    if stalls:
        bound = STALL_TARGETS["deadman_late_max_ms"]
        lines += [
            "## Stalls",
            "",
            "Something the bridge feeds stops taking what it is given; the driver's last twist is "
            f"followed by silence, and its deadman zero must reach the LCM bus at `deadman_timeout` "
            f"({DEADMAN:g} s) + < {bound:g} ms, once.",
            "",
            "| Stall | What | Deadman late, max (ms) | Zeros per silence | Watchdog zeros | Twist p99 (ms) "
            "| Stop max (ms) | Bridge CPU (%) | Others' CPU (%) |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for name, m in stalls:
            silences = m.get("deadman_n", 0) + m.get("deadman_missing", 0)
            zeros = (m.get("deadman_n", 0) + m.get("extra_zeros", 0)) / silences if silences else math.nan
            watchdog = m.get("bridge_metrics", {}).get("watchdog_zeros_total")
            row = [
                name.removeprefix("stall-"),
                m.get("note", ""),
                _cell(m, "deadman_late_max_ms", bound=bound),
                _fmt(zeros, 0) if zeros == zeros else "-",
                _fmt(watchdog, 0) if isinstance(watchdog, (int, float)) else "-",
                _cell(m, "twist_p99_ms"),
                _cell(m, "stop_max_ms"),
                _cell(m, "bridge_cpu_pct", 0),
                _cell(m, "others_cpu_pct", 0),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += _attack_misses(summary)
    failed = [u for u in results.get("attack", []) if "error" in u]
    if failed:
        lines += ["Failed attack scenarios (excluded above):", ""]
        lines += [f"- round {u['round']} {u['scenario']}: `{u['error']}`" for u in failed]
        lines.append("")
    lines += [
        "How the attack scenarios measure (`bench/attack.py`):",
        "",
        "- Floods, each from 1 and from 8 connections that never read and reconnect when cut off: "
        "`valid` (the viewer's 3D click), `heartbeat`, `malformed` (a twist with a string for a number, "
        "and bytes that are not JSON), `fragments` (messages of 102 empty frames), `pings` (100-byte "
        "pings whose pongs are never read). `connect`: WebSocket handshakes closed as soon as they "
        "complete, over and over, from 1 or 8 threads. `download`: 1 or 8 clients fetching the page's 43 MB Rerun "
        "Wasm over and over, as fast as loopback takes it (the bridge then runs with `--rerun-url`). "
        "`quiet` is the same measurement without a flood.",
        "- Each twist carries its own `linear_x`, so every send is paired with its own arrival; a twist "
        "that never arrives (replaced by a newer one on the bridge's command lane, or refused) is lost. "
        "The measuring clients answer the bridge's pings, as the viewer does. "
        "Stop = send -> the next zero on the bus, 6 per scenario; HTTP stop = TCP connect for a `POST /stop` -> "
        "the next zero, 3 per scenario (its answer must be 200). Deadman late = that zero - (last twist "
        "sent + timeout), 3 per scenario. Handshake = TCP connect -> `101`, a new client every "
        f"{HANDSHAKE_PERIOD:g} s. RSS growth = the peak during the flood (sampled every 20 ms, and the "
        "kernel's high-water mark) - RSS before it.",
        f"- Stalls: `asyncio` and `threaded` run the library with a `tele_cmd_vel` subscriber that "
        f"sleeps {BLOCK_SECONDS:g} s on the drive's last twist (`bench/targets/stall_server.py`); "
        "`zenoh` and `stdout` run `viewer-bridge serve` with the per-client limits lifted and one client "
        f"clicking {CLICKS_PER_S:,.0f} times a second, and are measured once the Zenoh click lane is "
        "backed up (its pending count in `/metrics`) or the echo lane has overflowed.",
        "- The measuring process, the flooders and the bridge share the machine's 2 cores. Bridge CPU "
        "is the bridge process's CPU time over the measured window, in % of one core; others' CPU is "
        "the machine's busy time over the same window minus the bridge's, the attackers' and the "
        "measuring process's: work that had nothing to do with the benchmark, i.e. its noise. Each "
        "scenario waits (up to `--quiet-wait` s) for the machine to be quiet before it starts. A twist "
        "that the measuring process, held up, sent right behind the next one is replaced by it on the "
        "bridge's command lane as designed, and not counted lost. The rest (loop lag, flood closes, "
        "flooder counters, every raw timestamp) is in results.json.",
        "",
    ]
    return lines


def _measured(machine: dict[str, Any] | None) -> str:
    if not machine:
        return ""
    text = f"Measured {machine.get('date', '?')}"
    if "loadavg_start" in machine:
        text += f", 1-minute load average {machine['loadavg_start']:.2f} at the start"
        if "loadavg_end" in machine:
            text += f" and {machine['loadavg_end']:.2f} at the end"
    if machine.get("nice"):
        text += f"; niceness {machine['nice']} ({_nice_words(machine['nice'])})"
    return text + "."


_LABELS = {
    "twist_p99_ms": ("twist p99", "ms"),
    "stop_max_ms": ("stop", "ms"),
    "http_stop_max_ms": ("stop over HTTP", "ms"),
    "deadman_late_max_ms": ("deadman lateness", "ms"),
    "handshake_max_ms": ("handshake", "ms"),
    "rss_growth_mb": ("memory growth", "MB"),
}


def _attack_misses(summary: dict[str, dict[str, Any]]) -> list[str]:
    """One line per missed target: by how much, beside the quiet run's figure and the bridge's own counters."""
    quiet = summary.get("quiet", {})
    out: list[str] = []
    for name, m in summary.items():
        for key, ok in m.get("met", {}).items():
            if ok:
                continue
            label, unit = _LABELS.get(key, (key, ""))
            value, bound = m.get(key, math.nan), m["targets"][key] if "targets" in m else math.nan
            why = []
            if key == "twist_p99_ms" and m.get("twists_lost"):
                why.append(f"{m['twists_lost']:.0f} twists lost")
            if key == "stop_max_ms" and m.get("stops_unanswered"):
                why.append(f"{m['stops_unanswered']:.0f} stops without a zero")
            if key == "http_stop_max_ms" and (m.get("http_stops_unanswered") or m.get("http_stops_refused")):
                unanswered, refused = m.get("http_stops_unanswered", 0), m.get("http_stops_refused", 0)
                why.append(f"{unanswered:.0f} HTTP stops without a zero, {refused:.0f} not answered 200")
            if key == "deadman_late_max_ms" and (m.get("deadman_missing") or m.get("extra_zeros")):
                missing, extra = m.get("deadman_missing", 0), m.get("extra_zeros", 0)
                why.append(f"{missing:.0f} silences without a zero, {extra:.0f} extra zeros")
            over = value - bound if isinstance(value, (int, float)) and value == value else math.nan
            text = f"- **{name}**: {label} {_fmt(value, 1)} {unit}"
            if over == over and over > 0:
                text += f", {_fmt(over, 1)} {unit} over the {bound:g} {unit} target"
            if key in quiet and name != "quiet":
                text += f" (quiet: {_fmt(quiet[key], 1)} {unit})"
            bm = m.get("bridge_metrics", {})
            context = [f"bridge CPU {m.get('bridge_cpu_pct', math.nan):.0f} %"]
            if "loop_lag_p99_le_ms" in bm:
                context.append(f"loop lag p99 ≤ {bm['loop_lag_p99_le_ms']:g} ms, max ≤ {bm['loop_lag_max_le_ms']:g} ms")
            if "others_cpu_pct" in m:
                context.append(f"other work on the machine {m['others_cpu_pct']:.0f} % of a core")
            if m.get("sender_slip_ms", 0) > 5:
                context.append(f"the measuring process itself was held up to {m['sender_slip_ms']:.0f} ms")
            out.append(text + ("; " + ", ".join(why) if why else "") + "; " + ", ".join(context))
    if out:
        return ["Targets missed in this run:", "", *out, ""]
    return ["Every target was met in this run.", ""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Re-render a benchmark results.json.")
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, help="folder for performance.md/.png (default: beside)")
    p.add_argument(
        "--attack-from",
        type=Path,
        help="take the attack scenarios from this results.json instead (a later `bench.run --attack`)",
    )
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())
    if args.attack_from:
        other = json.loads(args.attack_from.read_text())
        results["attack"] = other.get("attack", [])
        results["attack_machine"] = other.get("attack_machine", other["machine"])
        results["plan"]["attack"] = other.get("plan", {}).get("attack", [])
    results["summary"] = summarize(results)
    out: Path = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "performance.md").write_text(render_markdown(results))
    render_plot(results, out / "performance.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

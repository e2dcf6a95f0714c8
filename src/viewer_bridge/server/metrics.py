"""The bridge's counters, and their Prometheus exposition.

Counting happens on the per-message hot path, so counters are plain Python
ints and dicts owned by the event loop (no locks, ~30 ns each); a
``prometheus_client`` collector reads them only when ``/metrics`` is scraped.
Each server has its own registry, so several bridges in one process (as in
tests) never share or collide on metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from viewer_bridge.core.safety import SafetyController

__all__ = ["LATENCY_BUCKETS", "BridgeStats", "render_metrics"]

# Seconds from a frame's arrival to the end of its publish; most take a few
# microseconds, slow subscribers or transports push into the upper buckets.
LATENCY_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
)


class BridgeStats:
    """Everything the bridge counts. Mutated only on the server's event loop."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_open = 0
        self.http_refused: Counter[int] = Counter()  # by HTTP status
        self.frames: dict[str, int] = dict.fromkeys(("click", "twist", "stop", "heartbeat"), 0)  # by type
        self.rejects: Counter[str] = Counter()  # by reason
        # In-process publishes by stream (bus transports count their own).
        self.published: dict[str, int] = dict.fromkeys(("clicked_point", "tele_cmd_vel", "stop_movement"), 0)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe_latency(self, seconds: float) -> None:
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1


TransportCounts = Callable[[], dict[tuple[str, str], tuple[int, int]]]


class _StatsCollector(Collector):
    def __init__(self, stats: BridgeStats, safety: SafetyController, transport_counts: TransportCounts):
        self._stats = stats
        self._safety = safety
        self._transport_counts = transport_counts

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        s = self._stats
        yield GaugeMetricFamily("viewer_bridge_connections", "Open WebSocket connections", value=s.connections_open)
        yield CounterMetricFamily(
            "viewer_bridge_connections", "WebSocket connections accepted", value=s.connections_total
        )
        refused = CounterMetricFamily(
            "viewer_bridge_http_refused", "HTTP requests refused before the upgrade", labels=["status"]
        )
        for status, n in sorted(s.http_refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        frames = CounterMetricFamily("viewer_bridge_frames", "Valid messages received, by type", labels=["type"])
        for kind in ("click", "twist", "stop", "heartbeat"):
            frames.add_metric([kind], s.frames.get(kind, 0))
        yield frames
        rejects = CounterMetricFamily("viewer_bridge_rejects", "Messages refused, by reason", labels=["reason"])
        for reason, n in sorted(s.rejects.items()):
            rejects.add_metric([reason], n)
        yield rejects
        published = CounterMetricFamily(
            "viewer_bridge_published", "Messages published, by stream and transport", labels=["stream", "transport"]
        )
        failures = CounterMetricFamily(
            "viewer_bridge_publish_failures",
            "Publish failures, by stream and transport",
            labels=["stream", "transport"],
        )
        for stream, n in sorted(s.published.items()):
            published.add_metric([stream, "inprocess"], n)
        for (stream, transport), (ok, failed) in sorted(self._transport_counts().items()):
            published.add_metric([stream, transport], ok)
            failures.add_metric([stream, transport], failed)
        yield published
        yield failures
        safety = self._safety
        yield CounterMetricFamily("viewer_bridge_clamped", "Twists with an axis clamped", value=safety.clamped)
        stops = CounterMetricFamily("viewer_bridge_zero_twists", "Zero twists published, by cause", labels=["cause"])
        for cause, n in sorted(safety.stops.items()):
            stops.add_metric([cause], n)
        yield stops
        yield CounterMetricFamily(
            "viewer_bridge_deadman_trips", "Deadman stops (silence)", value=safety.stops.get("deadman", 0)
        )
        yield CounterMetricFamily("viewer_bridge_lease_changes", "Driver lease changes", value=safety.lease_changes)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), s.latency_buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(
            "viewer_bridge_publish_latency_seconds",
            "Time from a message's arrival to the end of its publish",
            buckets=buckets,
            sum_value=s.latency_sum,
        )


def make_registry(stats: BridgeStats, safety: SafetyController, transport_counts: TransportCounts) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(stats, safety, transport_counts))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

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
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from viewer_bridge.core.protocol import MESSAGE_TYPES

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.bus.lanes import Lane
    from viewer_bridge.core.safety import SafetyController
    from viewer_bridge.server.status import StatusBoard

__all__ = ["LAG_BUCKETS", "LATENCY_BUCKETS", "BridgeStats", "Histogram", "make_registry", "render_metrics"]

# Seconds from a frame's arrival to the end of its handling (queued on every
# lane, in-process subscribers called when they run on the loop); most take
# a few microseconds.
LATENCY_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 1.0,
)
# Seconds a timer on the event loop fires late: what a blocked or busy loop
# does to every deadline it owns.
LAG_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Cumulative-on-read buckets, cheap to observe on the hot path."""

    __slots__ = ("bounds", "buckets", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def observe_run(self, seconds: float, count: int) -> None:
        """``count`` observations of ``seconds`` (messages handled together, each in that time)."""
        self.buckets[bisect_left(self.bounds, seconds)] += count
        self.sum += seconds * count
        self.count += count

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.buckets, strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class BridgeStats:
    """Everything the bridge counts itself. Mutated only on the server's event loop."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_open = 0
        self.paused = 0  # clients whose socket is not being read (over their frame budget)
        self.flood_closes = 0
        self.http_refused: Counter[int] = Counter()  # by HTTP status
        # Connections dropped before their request was read: per_address (over its cap), evicted (the
        # oldest of the heaviest address, at max_pending), shed (accept() ran out of descriptors).
        self.preauth_refused: Counter[str] = Counter()
        self.auth_failures = 0  # requests with a wrong or missing token
        self.connect_throttled = 0  # requests answered 429: their address opens connections too fast
        self.frames: dict[str, int] = dict.fromkeys(MESSAGE_TYPES, 0)  # by type
        self.rejects: Counter[str] = Counter()  # by reason
        # Messages handed to the outlet, by stream (each destination counts its own deliveries).
        self.published: Counter[str] = Counter()
        self.latency = Histogram(LATENCY_BUCKETS)
        self.loop_lag = Histogram(LAG_BUCKETS)

    def observe_latency(self, seconds: float) -> None:
        self.latency.observe(seconds)


class _Source(Protocol):
    """What the collector reads: the server's counters, its safety state, its lanes and its watchdog."""

    stats: BridgeStats

    @property
    def safety(self) -> SafetyController: ...

    def metric_lanes(self) -> list[Lane]: ...

    def metric_links(self) -> list[tuple[str, float | None, float | None]]:
        """(client name, round trip in seconds, speed factor) for every client."""
        ...

    @property
    def status(self) -> StatusBoard: ...

    def watchdog_zeros(self) -> int: ...

    def token_connections(self) -> dict[tuple[str, str], int]: ...


class _StatsCollector(Collector):
    def __init__(self, source: _Source) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        source = self._source
        s = source.stats
        yield GaugeMetricFamily("viewer_bridge_connections", "Open WebSocket connections", value=s.connections_open)
        yield CounterMetricFamily(
            "viewer_bridge_connections", "WebSocket connections accepted", value=s.connections_total
        )
        yield GaugeMetricFamily(
            "viewer_bridge_paused_clients", "Clients not being read because they spent their frame budget",
            value=s.paused,
        )
        yield CounterMetricFamily(
            "viewer_bridge_flood_closes", "Clients closed (1008) for staying over their frame budget",
            value=s.flood_closes,
        )
        refused = CounterMetricFamily(
            "viewer_bridge_http_refused", "HTTP requests refused before the upgrade", labels=["status"]
        )
        for status, n in sorted(s.http_refused.items()):
            refused.add_metric([str(status)], n)
        yield refused
        preauth = CounterMetricFamily(
            "viewer_bridge_preauth_dropped",
            "Connections dropped before sending a complete request, by why", labels=["why"],
        )
        for why in ("per_address", "evicted", "shed"):
            preauth.add_metric([why], s.preauth_refused.get(why, 0))
        yield preauth
        yield CounterMetricFamily(
            "viewer_bridge_auth_failures", "Requests with a wrong or missing token", value=s.auth_failures
        )
        yield CounterMetricFamily(
            "viewer_bridge_connect_throttled",
            "Requests answered 429 because their address opened connections faster than connect_rate",
            value=s.connect_throttled,
        )
        by_token = GaugeMetricFamily(
            "viewer_bridge_token_connections", "Open WebSocket connections by token name and role",
            labels=["token", "role"],
        )
        for (name, role), n in sorted(source.token_connections().items()):
            by_token.add_metric([name, role], n)
        yield by_token
        frames = CounterMetricFamily("viewer_bridge_frames", "Valid messages received, by type", labels=["type"])
        for kind in MESSAGE_TYPES:
            frames.add_metric([kind], s.frames.get(kind, 0))
        yield frames
        rejects = CounterMetricFamily("viewer_bridge_rejects", "Messages refused, by reason", labels=["reason"])
        for reason, n in sorted(s.rejects.items()):
            rejects.add_metric([reason], n)
        yield rejects
        published = CounterMetricFamily(
            "viewer_bridge_published", "Messages delivered, by stream and destination", labels=["stream", "transport"]
        )
        failures = CounterMetricFamily(
            "viewer_bridge_publish_failures",
            "Delivery failures, by stream and destination",
            labels=["stream", "transport"],
        )
        pending = GaugeMetricFamily(
            "viewer_bridge_lane_pending", "Messages waiting on a publishing lane", labels=["lane"]
        )
        dropped = CounterMetricFamily(
            "viewer_bridge_lane_dropped",
            "Messages dropped by a lane whose destination fell too far behind (echo lines included)",
            labels=["lane"],
        )
        conflated = CounterMetricFamily(
            "viewer_bridge_lane_conflated", "Velocity commands replaced by a newer one before being sent",
            labels=["lane"],
        )
        inline = source.stats.published if not any(lane.kind == "inprocess" for lane in source.metric_lanes()) else {}
        for stream, n in sorted(inline.items()):
            published.add_metric([stream, "inprocess"], n)
        for lane in source.metric_lanes():
            for stream, n in sorted(lane.delivered.items()):
                published.add_metric([stream, lane.kind], n)
            for stream, n in sorted(lane.failures.items()):
                failures.add_metric([stream, lane.kind], n)
            pending.add_metric([lane.name], lane.pending)
            dropped.add_metric([lane.name], lane.dropped)
            conflated.add_metric([lane.name], lane.conflated)
        yield published
        yield failures
        yield pending
        yield dropped
        yield conflated
        safety = source.safety
        yield CounterMetricFamily("viewer_bridge_clamped", "Twists with an axis clamped", value=safety.clamped)
        zeros = CounterMetricFamily("viewer_bridge_zero_twists", "Drives ended with one zero twist, by cause",
                                    labels=["cause"])
        for cause, n in sorted(safety.zeros.items()):
            zeros.add_metric([cause], n)
        yield zeros
        yield CounterMetricFamily(
            "viewer_bridge_watchdog_zeros",
            "Zero twists the watchdog thread published because the event loop was late",
            value=source.watchdog_zeros(),
        )
        yield CounterMetricFamily("viewer_bridge_lease_changes", "Driver lease changes", value=safety.lease_changes)
        yield GaugeMetricFamily(
            "viewer_bridge_estop_latched", "1 while the e-stop is latched", value=0 if safety.estop is None else 1
        )
        yield CounterMetricFamily(
            "viewer_bridge_status_frames", "Status frames sent to clients", value=source.status.frames_sent
        )
        rtt = GaugeMetricFamily(
            "viewer_bridge_client_rtt_seconds", "Each client's last measured round trip", labels=["client"]
        )
        factor = GaugeMetricFamily(
            "viewer_bridge_client_speed_factor",
            "The speed factor each client's link allows (0: too slow to drive)",
            labels=["client"],
        )
        for name, seconds, allowed in source.metric_links():
            if seconds is not None:
                rtt.add_metric([name], seconds)
            factor.add_metric([name], 0.0 if allowed is None else allowed)
        yield rtt
        yield factor
        yield s.latency.family(
            "viewer_bridge_publish_latency_seconds", "Time from a message's arrival to the end of its handling"
        )
        yield s.loop_lag.family("viewer_bridge_loop_lag_seconds", "How late the event loop runs its timers")


def make_registry(source: _Source) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatsCollector(source))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

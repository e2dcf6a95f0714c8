"""The Rerun sink: the bridge's status, goals, refusals and commands, logged into the robot's Rerun recording.

dimos-viewer reads nothing the bridge sends back over the WebSocket, but it
shows whatever is in the Rerun recording it is connected to. With
``rerun_connect`` set, the bridge logs into that recording (same application
id and recording id as the robot's, so the entities merge into it), under a
prefix (default ``bridge/``):

* ``status``: a Markdown text document (driver, command in force, its age
  while someone drives, clients), when it changes, at most 5 per second;
* ``goal``: the last published click as a labelled 3D point, and
  ``goal/trail`` a line through the last few, at most 10 a second (clicks
  that come faster, a flood, replace each other: the newest is logged);
* ``refused``: a text log entry per refusal (one per client and reason per
  second; the next says how many were held back);
* ``cmd_vel``: the published ``linear_x``, ``linear_y``, ``angular_z`` as
  one plot of three series, at most 30 points per second (the newest
  command wins, zeros included: the last point of a drive is its zero).

Where the work happens: published goals and commands reach the sink on a
publishing :class:`~viewer_bridge.bus.lanes.Lane` of its own (kind
``rerun``), and refusals and status through the
:class:`~viewer_bridge.server.observer.BridgeObserver` methods, which only
note them and wake that lane. Every Rerun call is made on the lane's thread:
nothing on the event loop or the safety path ever waits for Rerun. A slow
Rerun server fills only the lane's queue (commands in it are conflated, so it
stays short).

When the Rerun server is gone (refused, killed, not answering within a
second) the sink warns once, drops what it would have logged (counted in
``viewer_bridge_rerun_entries_total{outcome="dropped"}``) and tries again
quietly, backing off from 0.5 s to 5 s; once back it logs the current status
and goals again, so a restarted server shows them at once. The Rerun SDK
itself may print a line or two of its own on stderr when a connection breaks.

Compatibility: rerun-sdk 0.32 (what DimOS pins, and what dimos-viewer
0.32.0a3 is built on) through 0.41 (what the web page's viewer ships);
an SDK 0.41 writing to a 0.32 server or viewer works (the viewer warns once
that the data's schema version is newer). See ``docs/viewer-awareness.md``.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from viewer_bridge.bus.lanes import Lane
from viewer_bridge.config import BridgeConfig, ConfigError
from viewer_bridge.core.awareness import (
    CMD_VEL_AXES,
    GoalTrail,
    RefusalGate,
    Spacing,
    cmd_vel_values,
    refusal_text,
    status_text,
)
from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist

__all__ = ["REFUSAL_INTERVAL", "RerunSink", "rerun_address"]

log = logging.getLogger(__name__)

# The lane entry that says "the observer has news" (status or refusals): not a stream anyone publishes.
OBSERVER_STREAM: Final = "observer"
_WAKE: Final = Bool(True)
# At most this many status entries per second, and command points.
_STATUS_INTERVAL: Final = 0.2
_CMD_VEL_INTERVAL: Final = 1.0 / 30
_GOAL_INTERVAL: Final = 0.1
# One refusal entry per client and reason per this many seconds.
REFUSAL_INTERVAL: Final = 1.0
# Refusals noted but not yet logged; beyond this the oldest go (counted as dropped).
_MAX_REFUSALS: Final = 64
# Goals in the trail, the newest included.
_TRAIL: Final = 5
# The lane's queue bound. Commands and goals are conflated and wake-ups deduplicated: it stays short.
_MAX_PENDING: Final = 1000
# How often what was logged is checked to have reached the server, and how long that check may take:
# a server that has not taken our entries within a second is treated as gone.
_FLUSH_INTERVAL: Final = 0.25
_FLUSH_TIMEOUT: Final = 1.0
# Reaching the server's TCP port first means an unreachable server never gets entries queued for it
# (the SDK would hold them and wait up to 5 s for it when the connection is dropped).
_PROBE_TIMEOUT: Final = 0.5
_RETRY_MIN: Final = 0.5
_RETRY_MAX: Final = 5.0
# What each entity looks like. The cmd_vel colours are distinct from everything the viewer draws itself.
GOAL_RGB: Final = (40, 230, 90)
TRAIL_RGB: Final = (40, 160, 90)
CMD_VEL_RGB: Final = ((255, 176, 0), (0, 200, 255), (230, 80, 255))
_GOAL_RADIUS: Final = 0.12
_TRAIL_RADIUS: Final = 0.025
_SERIES_WIDTH: Final = 2.0
_DEFAULT_PORTS: Final = {"rerun": 9876, "rerun+http": 9876, "rerun+https": 443}


def rerun_address(url: str) -> tuple[str, int]:
    """Host and port of a Rerun gRPC URL (``rerun+http://HOST:PORT/proxy``)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return host, parts.port or _DEFAULT_PORTS.get(parts.scheme, 9876)


class RerunSink:
    """Logs the bridge into a Rerun recording from a thread of its own; see the module docstring.

    ``open()`` (off the event loop: it imports the SDK) before the server
    starts its lanes, ``close()`` after they stopped. ``lane`` goes on the
    ``clicked_point`` and ``tele_cmd_vel`` streams; the server calls
    :meth:`on_refusal` and :meth:`on_status` (the observer interface).
    """

    def __init__(
        self,
        url: str,
        *,
        app_id: str = "dimos",
        recording_id: str | None = None,
        prefix: str = "bridge/",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.app_id = app_id
        self.recording_id = recording_id
        self.prefix = prefix
        self._clock = clock
        self._address = rerun_address(url)
        self.lane = Lane(
            "rerun", self._deliver, kind="rerun", conflate=True, conflate_types=(Twist, PointStamped),
            max_pending=_MAX_PENDING, clock=clock,
        )
        # Noted on the loop's thread, taken on the lane's.
        self._gate = RefusalGate(REFUSAL_INTERVAL)
        self._refusals: collections.deque[tuple[str, str, str, int]] = collections.deque()
        self._status: Mapping[str, Any] | None = None
        self._woken = False
        # The lane's thread only (close() runs after it ended).
        self._rr: Any = None
        self._rec: Any = None
        self._lock = threading.Lock()
        self._up = False
        self._warned = False
        self._next_try = 0.0
        self._backoff = _RETRY_MIN
        self._last_flush = -math.inf
        self._unflushed = False
        self._last_flush_ok = False  # whether the connection, once made, ever took entries
        self._status_shown: str | None = None
        self._status_spacing = Spacing(_STATUS_INTERVAL)
        self._cmd_spacing = Spacing(_CMD_VEL_INTERVAL)
        self._goal_spacing = Spacing(_GOAL_INTERVAL)
        self._trail = GoalTrail(_TRAIL)
        # Counters (read by /metrics and tests from other threads; plain ints).
        self.logged = 0
        self.dropped = 0
        self.connects = 0
        self.losses = 0
        self.metrics: Collector = _SinkCollector(self)
        """Register on a Prometheus registry to export the counters above."""

    @classmethod
    def from_config(cls, config: BridgeConfig, clock: Callable[[], float]) -> RerunSink:
        """A sink for ``config.rerun_connect``; the recording id defaults to ``$RERUN_RECORDING_ID``."""
        assert config.rerun_connect is not None
        recording_id = config.rerun_recording_id or os.environ.get("RERUN_RECORDING_ID") or None
        return cls(
            config.rerun_connect,
            app_id=config.rerun_app_id,
            recording_id=recording_id,
            prefix=config.rerun_prefix.strip("/") + "/",
            clock=clock,
        )

    @property
    def connected(self) -> bool:
        """Whether the last contact with the Rerun server went well (a server that died while the bridge
        had nothing to log is found gone with the next entry)."""
        return self._up

    # -- lifecycle (off the event loop) --------------------------------------

    def open(self) -> None:
        """Import the Rerun SDK and make the recording stream. Connecting waits for the first entry."""
        try:
            import rerun as rr
        except ImportError as exc:
            raise ConfigError(
                f"rerun_connect is set ({self.url}) but the Rerun SDK cannot be imported ({exc}); "
                "install it with: pip install 'viewer-bridge[rerun]'"
            ) from None
        self._rr = rr
        if self.recording_id is None:
            self.recording_id = _process_recording_id(self.app_id)
        self._rec = self._new_stream()
        log.info(
            "rerun: logging the bridge under %s into %s (application %s, recording %s)",
            self.prefix, self.url, self.app_id, self.recording_id or "of its own",
        )

    def _new_stream(self) -> Any:
        # send_properties=False: the recording is the robot's; its name and start time are not ours to set.
        return self._rr.RecordingStream(self.app_id, recording_id=self.recording_id, send_properties=False)

    def close(self, timeout: float = 2.0) -> None:
        """Send what is logged (if the server takes it) and let go of the connection, within about
        ``timeout`` seconds whatever the server does. Idempotent."""
        if not self._lock.acquire(timeout=timeout / 2):
            log.warning("rerun: the sink is still busy with the server; leaving it behind")
            return
        try:
            rec, self._rec = self._rec, None
            if rec is None:
                return
            if self._up:
                try:
                    rec.flush(timeout_sec=min(_FLUSH_TIMEOUT, timeout / 2))
                except Exception as exc:  # the server went away at the end: nothing more to do
                    log.debug("rerun: final flush failed: %s", exc)
            self._up = False
        finally:
            self._lock.release()
        if not _let_go(rec, timeout / 2):
            log.warning("rerun: %s does not answer; leaving its connection behind", self.url)

    # -- the observer interface (event loop's thread: note, wake, return) -----

    def on_refusal(self, client: str, reason: str, detail: str, now: float) -> None:
        held_back = self._gate.admit(client, reason, now)
        if held_back is None:
            return
        refusals = self._refusals
        refusals.append((client, reason, detail, held_back))
        if len(refusals) > _MAX_REFUSALS:
            refusals.popleft()
            self.dropped += 1
        self._wake()

    def on_status(self, status: Mapping[str, Any], now: float) -> None:
        self._status = status
        self._wake()

    def _wake(self) -> None:
        if not self._woken:
            self._woken = True
            self.lane.put(OBSERVER_STREAM, _WAKE)

    # -- the lane's thread ---------------------------------------------------

    def _deliver(self, stream: str, message: Message) -> None:
        if stream == OBSERVER_STREAM:
            # Cleared first: news noted from here on queues another wake-up.
            self._woken = False
            self._observer_news()
        elif type(message) is PointStamped:
            self._goal(message)
        elif type(message) is Twist:
            self._cmd_vel(message)
        self._check()

    def _observer_news(self) -> None:
        status = self._status
        if status is not None and status_text(status) != self._status_shown:
            wait = self._status_spacing.wait(self._clock())
            if wait > 0:
                time.sleep(wait)
                status = self._status or status  # the newest after the wait
            text = status_text(status)
            if text != self._status_shown:
                # Connecting shows what was current before this change; then the change follows.
                ready = self._ready()
                self._status_shown = text
                self._status_spacing.sent(self._clock())
                if ready:
                    self._log_status()
                else:
                    self.dropped += 1
        refusals = self._refusals
        while refusals:
            client, reason, detail, held_back = refusals.popleft()
            if self._ready():
                self._log("refused", self._rr.TextLog(refusal_text(client, reason, detail, held_back), level="WARN"))
            else:
                self.dropped += 1
        if not self._up:
            self._ready()  # status ticks keep retrying while nothing else happens

    def _pace(self, spacing: Spacing) -> None:
        """Wait until ``spacing`` lets the next entry go; newer ones queued meanwhile replace each other."""
        wait = spacing.wait(self._clock())
        if wait > 0:
            time.sleep(wait)
        spacing.sent(self._clock())

    def _goal(self, goal: PointStamped) -> None:
        self._pace(self._goal_spacing)
        ready = self._ready()
        self._trail.add(goal)
        if ready:
            self._log_goal()
        else:
            self.dropped += 1

    def _cmd_vel(self, twist: Twist) -> None:
        self._pace(self._cmd_spacing)
        if self._ready():
            self._log("cmd_vel", self._rr.Scalars(list(cmd_vel_values(twist))))
        else:
            self.dropped += 1

    # -- logging --------------------------------------------------------------

    # The two below log what is current, on a connection known to be up (or being made).

    def _log_status(self) -> None:
        if self._status_shown is not None:
            rr = self._rr
            self._log("status", rr.TextDocument(self._status_shown, media_type=rr.MediaType.MARKDOWN))

    def _log_goal(self) -> None:
        trail = self._trail
        last = trail.last
        if last is None:
            return
        rr = self._rr
        self._log(
            "goal",
            rr.Points3D([[last.x, last.y, last.z]], colors=[GOAL_RGB], radii=[_GOAL_RADIUS], labels=[trail.label()]),
        )
        points = trail.points
        if len(points) >= 2:
            self._log("goal/trail", rr.LineStrips3D([points], colors=[TRAIL_RGB], radii=[_TRAIL_RADIUS]))

    def _log(self, entity: str, archetype: Any, static: bool = False) -> None:
        with self._lock:
            rec = self._rec
            if rec is None:
                return
            rec.log(self.prefix + entity, archetype, static=static)
        self.logged += 1
        self._unflushed = True

    # -- the connection ---------------------------------------------------------

    def _ready(self) -> bool:
        """Whether entries can be logged now; (re)connects when a retry is due."""
        if self._up:
            return True
        now = self._clock()
        if now < self._next_try or self._rec is None:
            return False
        return self._connect(now)

    def _connect(self, now: float) -> bool:
        try:
            with socket.create_connection(self._address, timeout=_PROBE_TIMEOUT):
                pass
        except OSError as exc:
            self._lost(now, f"cannot reach it ({exc.strerror or exc})")
            return False
        rr = self._rr
        with self._lock:
            rec = self._rec
            if rec is None:
                return False
            rec.connect_grpc(self.url)
            # The series' names and colours, then what the operator should see at once.
            rec.log(
                self.prefix + "cmd_vel",
                rr.SeriesLines(colors=list(CMD_VEL_RGB), names=list(CMD_VEL_AXES), widths=[_SERIES_WIDTH] * 3),
                static=True,
            )
        self._up = True
        self._log_status()
        self._log_goal()
        if not self._flush(now):
            return False
        self.connects += 1
        self._backoff = _RETRY_MIN
        if self._warned:
            self._warned = False
            log.info("rerun: %s is back; logging the bridge again (%d entries dropped so far)", self.url, self.dropped)
        return True

    def _check(self) -> None:
        """Flush now and then, to notice a server that went away."""
        if self._up and self._unflushed:
            now = self._clock()
            if now - self._last_flush >= _FLUSH_INTERVAL:
                self._flush(now)

    def _flush(self, now: float) -> bool:
        with self._lock:
            rec = self._rec
            if rec is None:
                return False
            try:
                rec.flush(timeout_sec=_FLUSH_TIMEOUT)
            except Exception as exc:
                error: str | None = str(exc).split(", uri:")[0]
            else:
                error = None
        self._last_flush = self._clock()
        self._unflushed = False
        if error is None:
            self._last_flush_ok = True
        else:
            self._lost(now, f"it does not take our entries ({error})")
            self._last_flush_ok = False
            return False
        return True

    def _lost(self, now: float, why: str) -> None:
        if self._up:
            self._up = False
            if self._last_flush_ok:
                self.losses += 1
            # A fresh stream for the next attempt; the old one is let go of on a thread of its own,
            # as a server that stopped reading can hold a disconnect for ever.
            with self._lock:
                old, self._rec = self._rec, (self._new_stream() if self._rec is not None else None)
            if old is not None:
                _let_go(old, 0.0)
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2, _RETRY_MAX)
        if not self._warned:
            self._warned = True
            log.warning(
                "rerun: %s: %s; the bridge's entities are dropped until it is back (retrying quietly)",
                self.url, why,
            )
        else:
            log.debug("rerun: %s still unreachable: %s", self.url, why)


def _let_go(rec: Any, wait: float) -> bool:
    """Disconnect ``rec`` on a thread of its own; whether that finished within ``wait`` seconds."""

    def disconnect() -> None:
        try:
            rec.disconnect()
        except Exception as exc:
            log.debug("rerun: disconnecting failed: %s", exc)

    thread = threading.Thread(target=disconnect, name="viewer-bridge-rerun-disconnect", daemon=True)
    thread.start()
    thread.join(wait)
    return not thread.is_alive()


def _process_recording_id(app_id: str) -> str | None:
    """The recording id ``rr.init()`` picks in this process when given none, or None if it cannot be had.

    Rerun derives it from ``multiprocessing``'s authkey, so every process
    started with ``multiprocessing`` from one parent (DimOS's module workers)
    gets the same one: a bridge run as a DimOS module joins DimOS's recording
    with no setting. ``RecordingStream`` itself would pick a random id, so the
    SDK's lower layer is asked (present, with this signature, from 0.32 to 0.41).
    """
    try:
        import rerun_bindings

        native = rerun_bindings.new_recording(
            application_id=app_id, recording_id=None, make_default=False, make_thread_default=False,
            send_properties=False,
        )
        found = rerun_bindings.get_recording_id(native)
    except Exception as exc:  # another SDK layout: a recording of our own
        log.debug("rerun: no process-wide default recording id (%s)", exc)
        return None
    return str(found) if found else None


class _SinkCollector(Collector):
    def __init__(self, sink: RerunSink) -> None:
        self._sink = sink

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        sink = self._sink
        entries = CounterMetricFamily(
            "viewer_bridge_rerun_entries", "Entries for the Rerun recording, logged or dropped (server unreachable)",
            labels=["outcome"],
        )
        entries.add_metric(["logged"], sink.logged)
        entries.add_metric(["dropped"], sink.dropped)
        yield entries
        yield GaugeMetricFamily(
            "viewer_bridge_rerun_connected", "1 while the Rerun server takes the bridge's entries",
            value=int(sink.connected),
        )
        yield CounterMetricFamily(
            "viewer_bridge_rerun_losses", "Times the Rerun server went away while connected", value=sink.losses
        )

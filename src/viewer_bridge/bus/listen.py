"""``viewer-bridge listen``: print every bridge-typed message on the bus, decoded, with its topic and rate.

What people reach for lcm-spy for, on LCM or Zenoh, without a GUI: each
Twist, PointStamped and Bool seen on any topic (under ``--namespace`` if
given) becomes one line on stdout, text or ``--json`` lines. Messages arrive
on the transports' receive threads and are printed from the main thread in
arrival order through one queue, so lines never interleave.

The bus settings (``--lcm-url``, ``--zenoh-*``) and ``--config``/``VIEWER_BRIDGE_*``
are read like ``serve`` reads them, so the listener sees the bus the bridge
publishes on.
"""

from __future__ import annotations

import argparse
import collections
import json
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TextIO

from viewer_bridge.bus.echo import as_record, as_text_line
from viewer_bridge.bus.transports import TRANSPORT_NAMES, Transport, TransportError, create_transport
from viewer_bridge.config import BridgeConfig, ConfigError, add_flags, flag_values, load_config

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.core.messages import Message
    from viewer_bridge.core.topics import Topic

__all__ = ["BusListener", "FleetWatcher", "RateMeter", "register", "run_listen"]

# The rate shown is over the arrivals of the last this-many seconds: long
# enough to smooth the viewer's per-frame jitter, short enough to show a
# stream stopping within a couple of seconds.
RATE_WINDOW: Final = 2.0


class RateMeter:
    """Messages per second over a sliding window of arrival times (``clock`` seconds)."""

    __slots__ = ("_times", "count", "window")

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()
        self.count = 0

    def tick(self, now: float) -> float | None:
        """Record an arrival at ``now``; returns the rate, or None until there are two arrivals."""
        self.count += 1
        times = self._times
        times.append(now)
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])


@dataclass(frozen=True, slots=True)
class Received:
    transport: str
    where: str  # the channel or key as seen on the bus
    topic: Topic
    message: Message
    at: float  # time.monotonic() when it arrived


class BusListener:
    """Subscribes to every bridge-typed message on some transports and queues what arrives.

    ``start()`` starts the transports (raising TransportError with a fix-it
    hint) and subscribes; ``get(timeout)`` returns the next :class:`Received`
    or None; ``close()`` unsubscribes and closes the transports.
    """

    def __init__(self, transports: Iterable[Transport], namespace: str = "") -> None:
        self.transports = list(transports)
        self.namespace = namespace
        self._queue: queue.Queue[Received] = queue.Queue()
        self._undo: list[Callable[[], None]] = []
        self._started: list[Transport] = []

    def start(self) -> None:
        try:
            for transport in self.transports:
                transport.start()
                self._started.append(transport)
                self._undo.append(transport.subscribe_all(self._receiver(transport), self.namespace))
        except BaseException:
            self.close()
            raise

    def _receiver(self, transport: Transport) -> Callable[[Topic, Message], None]:
        put = self._queue.put

        def receive(topic: Topic, message: Message) -> None:
            put(Received(transport.name, transport.describe(topic), topic, message, time.monotonic()))

        return receive

    def get(self, timeout: float | None) -> Received | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        undo, self._undo = self._undo, []
        for unsubscribe in undo:
            unsubscribe()
        started, self._started = self._started, []
        for transport in started:
            transport.close()

    def __enter__(self) -> BusListener:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class FleetWatcher:
    """Watches a fleet's Zenoh network: robots online, who drives which, e-stops, stations (``listen --fleet``).

    Produces one event (a dict) per change, in arrival order, from the
    agents' liveliness tokens and states and the stations' tokens (see
    :mod:`viewer_bridge.core.fleet`). Only reads: it declares nothing.
    """

    def __init__(self, session_options: dict[str, Any]) -> None:
        self._options = session_options
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self._session: Any = None
        self._declared: list[Any] = []
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[Any, ...]] = {}  # robot -> (holder, estop, linked) last reported

    def start(self) -> None:
        from viewer_bridge.bus.fleetlink import open_session
        from viewer_bridge.core.fleet import ALL_AGENTS, ALL_STATES, ALL_STATIONS

        session = self._session = open_session(who="fleet listener", **self._options)
        liveliness = session.liveliness()
        self._declared = [
            liveliness.declare_subscriber(ALL_AGENTS, self._on_agent, history=True),
            liveliness.declare_subscriber(ALL_STATIONS, self._on_station, history=True),
            session.declare_subscriber(ALL_STATES, self._on_state),
        ]

    def _on_agent(self, sample: Any) -> None:
        import zenoh

        from viewer_bridge.core.fleet import robot_of

        robot = robot_of(str(sample.key_expr))
        if robot is None:
            return
        online = sample.kind != zenoh.SampleKind.DELETE
        if not online:
            with self._lock:
                self._seen.pop(robot, None)
        self._queue.put({"event": "robot", "robot": robot, "online": online})

    def _on_station(self, sample: Any) -> None:
        import zenoh

        from viewer_bridge.core.fleet import station_of

        parsed = station_of(str(sample.key_expr))
        if parsed is not None:
            online = sample.kind != zenoh.SampleKind.DELETE
            self._queue.put({"event": "station", "station": parsed[0], "online": online})

    def _on_state(self, sample: Any) -> None:
        from viewer_bridge.core.fleet import FleetWireError, decode_state

        try:
            state = decode_state(sample.payload.to_bytes())
        except FleetWireError:
            return
        holder = None if state.holder is None else state.holder.who
        estop = None if state.estop is None else state.estop.by
        key = (holder, estop, state.linked)
        with self._lock:
            if self._seen.get(state.robot) == key:
                return
            self._seen[state.robot] = key
        self._queue.put({"event": "state", "robot": state.robot, "driven_by": holder, "estop_by": estop,
                         "linked": state.linked, "link_timeout_s": state.link_timeout})

    def get(self, timeout: float | None) -> dict[str, Any] | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        declared, self._declared = self._declared, []
        for entity in declared:
            try:
                entity.undeclare()
            except Exception:
                pass
        session, self._session = self._session, None
        if session is not None:
            session.close()


def format_fleet_event(event: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(event, separators=(",", ":"))
    kind = event["event"]
    if kind == "robot":
        return f"robot   {event['robot']}: {'online' if event['online'] else 'OFFLINE'}"
    if kind == "station":
        return f"station {event['station']}: {'online' if event['online'] else 'gone'}"
    driven = f"driven by {event['driven_by']}" if event["driven_by"] else "idle"
    estop = f", E-STOP latched by {event['estop_by']}" if event["estop_by"] else ""
    link = "" if event["linked"] else ", no router"
    return f"robot   {event['robot']}: {driven}{estop}{link}"


def run_fleet(watcher: FleetWatcher, out: TextIO, *, as_json: bool, count: int | None, duration: float | None,
              stop: threading.Event) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    printed = 0
    while not stop.is_set() and (count is None or printed < count):
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            break
        event = watcher.get(wait)
        if event is None:
            continue
        out.write(format_fleet_event(event, as_json) + "\n")
        out.flush()
        printed += 1
    return printed


def format_line(item: Received, rate: float | None, as_json: bool) -> str:
    if as_json:
        record: dict[str, Any] = {
            "transport": item.transport,
            "topic": item.topic.name,
            "channel": item.where,
            "rate_hz": None if rate is None else round(rate, 2),
        }
        record.update(as_record(item.topic.name, item.message))
        record.pop("stream", None)
        return json.dumps(record, separators=(",", ":"))
    shown = "    -   " if rate is None else f"{rate:6.1f}Hz"
    return f"{item.transport:5} {item.where}  {shown}  {as_text_line(item.topic.name, item.message)}"


def run_listen(
    listener: BusListener,
    out: TextIO,
    *,
    as_json: bool = False,
    count: int | None = None,
    duration: float | None = None,
    stop: threading.Event | None = None,
) -> dict[str, int]:
    """Print messages until ``count`` were printed, ``duration`` s passed, or ``stop`` is set.

    Returns how many messages were seen per channel/key.
    """
    meters: dict[tuple[str, str], RateMeter] = {}
    deadline = None if duration is None else time.monotonic() + duration
    printed = 0
    stop = stop or threading.Event()
    while not stop.is_set() and (count is None or printed < count):
        # Wake at least every 0.2 s to notice ``stop`` (a signal handler sets it).
        wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if wait <= 0:
            break
        item = listener.get(wait)
        if item is None:
            continue
        meter = meters.setdefault((item.transport, item.where), RateMeter())
        out.write(format_line(item, meter.tick(item.at), as_json) + "\n")
        out.flush()
        printed += 1
    return {f"{transport} {where}": meter.count for (transport, where), meter in meters.items()}


# The settings that say which bus to read and how; the same flags as serve's.
_BUS_SETTINGS: Final = (
    "namespace", "lcm_url", "zenoh_mode", "zenoh_connect", "zenoh_listen", "zenoh_multicast_scouting"
)


def register(subparsers: Any) -> None:
    """Add the ``listen`` subcommand."""
    parser = subparsers.add_parser(
        "listen",
        help="print every bridge-typed message on the bus (like lcm-spy)",
        description=(
            "Subscribe to every Twist, PointStamped and Bool on the LCM or Zenoh bus and print each, "
            "decoded, with its topic and rate."
        ),
    )
    parser.add_argument(
        "--transport",
        dest="transports",
        action="append",
        choices=TRANSPORT_NAMES,
        help="bus to listen on: lcm or zenoh (repeatable)",
    )
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="show the fleet on Zenoh instead: robots online, who drives which, e-stops, stations",
    )
    parser.add_argument("--json", action="store_true", help="JSON lines instead of text")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--duration", type=float, help="exit after this many seconds")
    parser.add_argument("--config", metavar="FILE", help="TOML file of settings (for the bus settings)")
    add_flags(parser, _BUS_SETTINGS)
    parser.set_defaults(func=cmd_listen)


def _config(args: argparse.Namespace) -> BridgeConfig:
    return load_config(args.config, flags=flag_values(args, _BUS_SETTINGS))


def cmd_listen(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
    except ConfigError as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 2
    if args.fleet:
        return _listen_fleet(args, config)
    if not args.transports:
        print("viewer-bridge: listen needs --transport lcm|zenoh (or --fleet)", file=sys.stderr)
        return 2
    try:
        transports = [create_transport(name, config) for name in dict.fromkeys(args.transports)]
        listener = BusListener(transports, config.namespace)
        listener.start()
    except TransportError as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    namespace = config.namespace.strip("/")
    scope = f"/{namespace}/..." if namespace else "every topic"
    print(f"viewer-bridge: listening on {', '.join(dict.fromkeys(args.transports))} ({scope})", file=sys.stderr)
    try:
        seen = run_listen(listener, sys.stdout, as_json=args.json, count=args.count, duration=args.duration, stop=stop)
    finally:
        listener.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not args.json:
        for where, n in sorted(seen.items()):
            print(f"  {where}: {n} message{'' if n == 1 else 's'}", file=sys.stderr)
    return 0


def _listen_fleet(args: argparse.Namespace, config: BridgeConfig) -> int:
    watcher = FleetWatcher({
        "mode": config.zenoh_mode,
        "connect": config.zenoh_connect,
        "listen": config.zenoh_listen,
        "multicast_scouting": config.zenoh_multicast_scouting,
    })
    try:
        watcher.start()
    except TransportError as exc:
        print(f"viewer-bridge: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    print("viewer-bridge: watching the fleet on Zenoh (robots, drivers, e-stops, stations)", file=sys.stderr)
    try:
        run_fleet(watcher, sys.stdout, as_json=args.json, count=args.count, duration=args.duration, stop=stop)
    finally:
        watcher.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0

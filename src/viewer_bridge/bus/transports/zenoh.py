"""The Zenoh transport: DimOS's key expressions (``dimos/NAME/TYPE``) carrying the same LCM bytes.

Quality of service follows what each message is for. Velocity commands and
``stop_movement`` are "latest wins": best effort, dropped under congestion
and sent without batching, because a queued-up old command is worse than a
lost one (the next one is ~30 ms behind it). Clicks are navigation goals: sent
reliably, and the publisher blocks under congestion rather than lose one.

Sessions are peer (default, like DimOS) or client (through a ``zenohd``
router). ``$ZENOH_CONFIG``, if set, is the base configuration; the mode,
endpoints and scouting settings given here override it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from viewer_bridge.bus.transports.base import Transport, TransportError
from viewer_bridge.core.messages import PointStamped
from viewer_bridge.core.topics import BUS_TYPES, clean_namespace, received_topic

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.core.messages import Message
    from viewer_bridge.core.topics import Topic

__all__ = ["ZenohTransport"]

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "dimos"
# How long start() waits for a peer given with connect= before warning that it
# is not there (Zenoh keeps retrying in the background either way).
_CONNECT_GRACE: Final = 1.0


def leave_session(session: Any, declared: Sequence[Any], whose: str) -> None:
    """Undeclare ``declared`` (newest first), then close ``session``; ``whose`` names it in the warning.

    Blocking (Zenoh waits for the network): call it off the event loop. An
    entity already gone with a failed session is passed over.
    """
    for entity in reversed(declared):
        try:
            entity.undeclare()
        except Exception:  # already gone with a failed session
            pass
    try:
        session.close()
    except Exception as exc:
        log.warning("closing %s Zenoh session failed: %s", whose, exc)


class ZenohTransport(Transport):
    """Publishes (and optionally receives) on a Zenoh network.

    ``mode`` is ``"peer"`` or ``"client"``; ``connect`` and ``listen`` are
    endpoints such as ``tcp/10.0.0.2:7447``. ``multicast_scouting=False``
    stops the session from discovering (and being discovered by) peers over
    UDP multicast, leaving only the explicit endpoints.
    """

    name = "zenoh"

    def __init__(
        self,
        mode: str = "peer",
        connect: Sequence[str] = (),
        listen: Sequence[str] = (),
        multicast_scouting: bool = True,
    ) -> None:
        if mode not in ("peer", "client"):
            raise TransportError(f"zenoh mode must be 'peer' or 'client', got {mode!r}")
        self.mode = mode
        self.connect = list(connect)
        self.listen = list(listen)
        self.multicast_scouting = multicast_scouting
        self._session: Any = None
        self._publishers: dict[str, Any] = {}
        self._subscribers: list[Any] = []
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------

    def _config(self) -> Any:
        import os

        import zenoh

        try:
            config = zenoh.Config.from_env() if os.environ.get("ZENOH_CONFIG") else zenoh.Config()
            config.insert_json5("mode", json.dumps(self.mode))
            if self.connect:
                config.insert_json5("connect/endpoints", json.dumps(self.connect))
            if self.listen:
                config.insert_json5("listen/endpoints", json.dumps(self.listen))
            if not self.multicast_scouting:
                config.insert_json5("scouting/multicast/enabled", "false")
        except zenoh.ZError as exc:
            raise TransportError(
                f"bad Zenoh configuration (mode={self.mode}, connect={self.connect}, listen={self.listen}): "
                f"{_first_line(exc)}. Endpoints look like tcp/HOST:PORT or udp/HOST:PORT."
            ) from None
        return config

    def start(self) -> None:
        if self._session is not None:
            return
        try:
            import zenoh
        except ImportError as exc:  # create_transport checks first; this covers a direct ZenohTransport()
            raise TransportError(f"{exc}: pip install 'viewer-bridge[zenoh]'") from None
        config = self._config()
        try:
            session = zenoh.open(config)
        except zenoh.ZError as exc:
            raise TransportError(self._open_failure(_first_line(exc))) from None
        self._session = session
        if self.mode == "peer" and self.connect and not self._wait_for_peers():
            log.warning(
                "zenoh: no peer reachable yet at %s; publishing anyway and retrying in the background "
                "(is the other side listening there?)",
                ", ".join(self.connect),
            )
        log.info(
            "Zenoh transport up (%s, connect=%s, listen=%s, multicast scouting %s)",
            self.mode,
            self.connect or "-",
            self.listen or "-",
            "on" if self.multicast_scouting else "off",
        )

    def _open_failure(self, why: str) -> str:
        if "Address already in use" in why:
            hint = "another process is listening on that endpoint: pick another port in --zenoh-listen"
        elif self.mode == "client":
            hint = "client mode needs a Zenoh router: start zenohd there, fix --zenoh-connect, or use --zenoh-mode peer"
        else:
            hint = "check --zenoh-connect/--zenoh-listen (tcp/HOST:PORT) and that the address is on this host"
        return f"Zenoh could not open a {self.mode} session: {why}. Fix: {hint}."

    def _wait_for_peers(self) -> bool:
        """Whether a peer or router is connected within the grace period."""
        info = self._session.info
        deadline = time.monotonic() + _CONNECT_GRACE
        pause = threading.Event()  # never set: only a wait between polls
        # Zenoh offers no blocking "wait until connected"; poll its link table against the deadline.
        while not (info.peers_zid() or info.routers_zid()):
            if time.monotonic() >= deadline:
                return False
            pause.wait(0.02)
        return True

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            publishers, self._publishers = self._publishers, {}
            subscribers, self._subscribers = self._subscribers, []
        if session is None:
            return
        leave_session(session, [*publishers.values(), *subscribers], "the")

    # -- publishing ---------------------------------------------------------

    def describe(self, topic: Topic) -> str:
        return topic.zenoh_key

    def publish(self, topic: Topic, message: Message) -> None:
        key = topic.zenoh_key
        publisher = self._publishers.get(key)
        if publisher is None:
            publisher = self._declare_publisher(topic)
        publisher.put(message.lcm_encode())

    def _declare_publisher(self, topic: Topic) -> Any:
        import zenoh

        session = self._session
        if session is None:
            raise TransportError("the Zenoh transport is not started")
        if topic.type is PointStamped:
            qos: dict[str, Any] = {
                "congestion_control": zenoh.CongestionControl.BLOCK,
                "reliability": zenoh.Reliability.RELIABLE,
            }
        else:
            qos = {
                "congestion_control": zenoh.CongestionControl.DROP,
                "reliability": zenoh.Reliability.BEST_EFFORT,
                "express": True,
            }
        publisher = session.declare_publisher(topic.zenoh_key, **qos)
        with self._lock:
            self._publishers[topic.zenoh_key] = publisher
        return publisher

    # -- receiving ----------------------------------------------------------

    def subscribe(self, topic: Topic, callback: Callable[[Message], object]) -> Callable[[], None]:
        decode = topic.type.lcm_decode

        def on_sample(sample: Any) -> None:
            try:
                message = decode(sample.payload.to_bytes())
            except Exception as exc:
                self._decode_failed(str(sample.key_expr), exc)
                return
            callback(message)

        return self._declare_subscriber(topic.zenoh_key, on_sample)

    def subscribe_all(self, callback: Callable[[Topic, Message], object], namespace: str = "") -> Callable[[], None]:
        namespace = clean_namespace(namespace)
        root = f"{KEY_PREFIX}/{namespace}" if namespace else KEY_PREFIX
        prefix_len = len(KEY_PREFIX) + 1

        def on_sample(sample: Any) -> None:
            key = str(sample.key_expr)
            name, _, type_name = key[prefix_len:].rpartition("/")
            topic = received_topic(name, type_name)
            if topic is None:
                return
            try:
                message = topic.type.lcm_decode(sample.payload.to_bytes())
            except Exception as exc:
                self._decode_failed(key, exc)
                return
            callback(topic, message)

        unsubscribes = [self._declare_subscriber(f"{root}/**/{type_name}", on_sample) for type_name in BUS_TYPES]

        def unsubscribe() -> None:
            for undo in unsubscribes:
                undo()

        return unsubscribe

    def _declare_subscriber(self, key: str, handler: Callable[[Any], None]) -> Callable[[], None]:
        session = self._session
        if session is None:
            raise TransportError("the Zenoh transport is not started")

        def guarded(sample: Any) -> None:
            # Runs on a Zenoh thread; an exception there would only be printed by the binding.
            try:
                handler(sample)
            except Exception:
                log.exception("Zenoh subscriber for %s raised", key)

        subscriber = session.declare_subscriber(key, guarded)
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                remaining = [s for s in self._subscribers if s is not subscriber]
                if len(remaining) == len(self._subscribers):
                    return
                self._subscribers = remaining
            try:
                subscriber.undeclare()
            except Exception:  # the session is already closed
                pass

        return unsubscribe

    def __repr__(self) -> str:
        return f"ZenohTransport(mode={self.mode!r}, connect={self.connect!r}, listen={self.listen!r})"


def _first_line(exc: BaseException) -> str:
    # Zenoh's messages end with the Rust source location, which helps nobody running the bridge.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" at /", 1)[0].rstrip(" .")

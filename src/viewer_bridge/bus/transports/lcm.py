"""The LCM transport: DimOS's channel names (``/NAME#TYPE``) and dimos-lcm encodings over UDP multicast.

Start-up checks the bus before the bridge accepts anyone, so that a missing
multicast route is an error with the fix in it rather than a silent robot:

1. for a ``udpm://`` URL, that the kernel has a route to the group (what the
   C library would otherwise print to stderr before failing with "Couldn't
   create LCM");
2. that LCM itself comes up with the URL;
3. for ``udpm://``, that a probe message sent to a private channel comes
   back to this process. This catches what the first two cannot: a firewall
   dropping UDP multicast (LCM's classic failure on desktop distributions),
   where every publish "succeeds" and nothing is ever delivered. Other
   providers (``memq://``, ``file://`` logs) are not expected to loop back.

Publishing and receiving use separate LCM handles. A handle that has ever
subscribed stays joined to the multicast group, and the kernel then loops
every message it publishes back into its own socket: that cost four times
the publish itself. So the publishing handle never subscribes; the probe and
any subscriptions use a receiving handle, made only when needed. Receiving
runs one thread, started on the first subscription, that waits on LCM's file
descriptor and a wake-up pipe, so ``close()`` ends it at once.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from viewer_bridge.bus.transports.base import Transport, TransportError
from viewer_bridge.core.topics import BUS_TYPES, clean_namespace, received_topic

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.core.messages import Message
    from viewer_bridge.core.topics import Topic

__all__ = ["DIMOS_LCM_URL", "LcmTransport", "resolve_url"]

log = logging.getLogger(__name__)

# DimOS's default bus: the LCM multicast group with ttl=0, i.e. this host only.
DIMOS_LCM_URL: Final = "udpm://239.255.76.67:7667?ttl=0"

ROUTE_FIX: Final = (
    "On a host whose only interface is loopback, give it multicast (as root): "
    "'ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo' "
    "(or run 'make multicast' / scripts/lcm-multicast.sh). On a networked host, check that "
    "the route to 224.0.0.0/4 goes over an interface that is up and does multicast."
)

# How long start() waits for its probe to come back. Loopback delivery takes
# well under a millisecond; the margin is for a loaded machine.
_PROBE_TIMEOUT: Final = 2.0
_PROBE_RESEND: Final = 0.2


def resolve_url(url: str | None) -> str:
    """``url``, else ``$LCM_DEFAULT_URL``, else DimOS's default (as LCM itself resolves it)."""
    return url or os.environ.get("LCM_DEFAULT_URL") or DIMOS_LCM_URL


def _check_route(url: str) -> None:
    """Raise TransportError if a ``udpm://`` URL's group is unroutable or malformed."""
    parts = urlsplit(url)
    if parts.scheme != "udpm":
        return
    try:
        group = ipaddress.IPv4Address(parts.hostname or "")
        port = parts.port or 7667
    except ValueError as exc:
        raise TransportError(f"bad LCM URL {url!r}: {exc}; expected udpm://GROUP:PORT?ttl=N") from None
    if not group.is_multicast:
        raise TransportError(f"bad LCM URL {url!r}: {group} is not a multicast address (224.0.0.0/4)")
    # connect() on a UDP socket sends nothing; it only asks the kernel for a route.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((str(group), port))
        except OSError as exc:
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise TransportError(
                    f"LCM cannot reach its multicast group {group} ({url}): no multicast route. {ROUTE_FIX}"
                ) from None
            raise TransportError(f"LCM cannot reach {group} ({url}): {exc}. {ROUTE_FIX}") from None


class LcmTransport(Transport):
    """Publishes (and optionally receives) on an LCM bus.

    ``url`` defaults to ``$LCM_DEFAULT_URL``, else ``udpm://239.255.76.67:7667?ttl=0``
    (DimOS's default: ttl=0 keeps traffic on this host; use ttl=1 to reach
    other hosts on the LAN).
    """

    name = "lcm"

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self._lcm: Any = None  # publishes; never subscribes
        self._rx: Any = None  # receives; made on the first subscription
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._closed = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        if self._lcm is not None:
            return
        try:
            import lcm
        except ImportError as exc:  # create_transport checks first; this covers a direct LcmTransport()
            raise TransportError(f"{exc}: pip install 'viewer-bridge[lcm]'") from None
        _check_route(self.url)
        try:
            handle = lcm.LCM(self.url)
        except RuntimeError as exc:
            raise TransportError(
                f"LCM could not start with {self.url!r} ({exc}). Check the URL (udpm://GROUP:PORT?ttl=N). {ROUTE_FIX}"
            ) from None
        if urlsplit(self.url).scheme == "udpm":
            self._probe(handle, lcm.LCM(self.url))
        self._lcm = handle
        self._closed = False
        log.info("LCM transport up on %s", self.url)

    def _probe(self, handle: Any, receiver: Any) -> None:
        """Publish on ``handle`` until ``receiver`` hears it (``receiver`` is dropped after)."""
        channel = f"/viewer_bridge/probe/{uuid.uuid4().hex}"
        token = os.urandom(8)
        came_back = False

        def on_probe(_channel: str, data: bytes) -> None:
            nonlocal came_back
            came_back = came_back or data == token

        subscription = receiver.subscribe(channel, on_probe)
        try:
            deadline = time.monotonic() + _PROBE_TIMEOUT
            next_send = 0.0
            while not came_back:
                now = time.monotonic()
                if now >= deadline:
                    raise TransportError(
                        f"LCM started on {self.url} but a probe message sent to this host never came back, "
                        "so nothing published would be delivered either. Is a firewall dropping UDP "
                        f"multicast to port {urlsplit(self.url).port or 7667}? {ROUTE_FIX}"
                    )
                if now >= next_send:
                    try:
                        handle.publish(channel, token)
                    except OSError as exc:
                        raise TransportError(f"LCM cannot send on {self.url}: {exc}. {ROUTE_FIX}") from None
                    next_send = now + _PROBE_RESEND
                wait = max(0.0, min(deadline, next_send) - now)
                try:
                    receiver.handle_timeout(max(1, round(wait * 1000)))
                except OSError as exc:
                    raise TransportError(f"LCM cannot receive on {self.url}: {exc}. {ROUTE_FIX}") from None
        finally:
            receiver.unsubscribe(subscription)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread, self._thread = self._thread, None
            if self._wake_w >= 0:
                os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        # The C handles (sockets, LCM's own receive thread) go with the last reference.
        self._lcm = None
        self._rx = None

    # -- publishing ---------------------------------------------------------

    def publish(self, topic: Topic, message: Message) -> None:
        handle = self._lcm
        if handle is None:
            raise TransportError("the LCM transport is not started")
        # OSError here (e.g. ENETUNREACH after the route went away) is counted by the sink.
        handle.publish(topic.lcm_channel, message.lcm_encode())

    def describe(self, topic: Topic) -> str:
        return topic.lcm_channel

    # -- receiving ----------------------------------------------------------

    def subscribe(self, topic: Topic, callback: Callable[[Message], object]) -> Callable[[], None]:
        decode = topic.type.lcm_decode

        def on_message(channel: str, data: bytes) -> None:
            try:
                message = decode(data)
            except Exception as exc:
                self._decode_failed(channel, exc)
                return
            callback(message)

        return self._subscribe(re.escape(topic.lcm_channel), on_message)

    def subscribe_all(self, callback: Callable[[Topic, Message], object], namespace: str = "") -> Callable[[], None]:
        namespace = clean_namespace(namespace)
        prefix = re.escape(f"/{namespace}/") if namespace else "/"
        types = "|".join(re.escape(name) for name in BUS_TYPES)
        # LCM matches subscriptions as POSIX regular expressions against the whole channel.
        pattern = f"{prefix}.+#({types})"

        def on_message(channel: str, data: bytes) -> None:
            name, _, type_name = channel[1:].rpartition("#")
            topic = received_topic(name, type_name)
            if topic is None:
                return
            try:
                message = topic.type.lcm_decode(data)
            except Exception as exc:
                self._decode_failed(channel, exc)
                return
            callback(topic, message)

        return self._subscribe(pattern, on_message)

    def _subscribe(self, pattern: str, handler: Callable[[str, bytes], None]) -> Callable[[], None]:
        if self._lcm is None:
            raise TransportError("the LCM transport is not started")
        with self._lock:
            if self._rx is None:
                import lcm

                self._rx = lcm.LCM(self.url)
            handle = self._rx

        def guarded(channel: str, data: bytes) -> None:
            # An exception escaping into LCM's C dispatch would end the receive loop.
            try:
                handler(channel, data)
            except Exception:
                log.exception("LCM subscriber for %s raised", channel)

        subscription = handle.subscribe(pattern, guarded)
        self._ensure_thread()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done or self._rx is not handle:
                return
            done = True
            handle.unsubscribe(subscription)

        return unsubscribe

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._wake_r, self._wake_w = os.pipe()
            self._thread = threading.Thread(
                target=self._receive, args=(self._rx, self._wake_r), name="viewer-bridge-lcm", daemon=True
            )
            self._thread.start()

    def _receive(self, handle: Any, wake: int) -> None:
        fd = handle.fileno()
        while True:
            readable, _, _ = select.select([fd, wake], [], [])
            if wake in readable:
                return
            # Readable means a message is queued, so this does not block.
            try:
                handle.handle_timeout(0)
            except OSError as exc:  # pragma: no cover - LCM's internal pipe failing
                log.error("LCM receive failed: %s", exc)
                return

    def __repr__(self) -> str:
        return f"LcmTransport(url={self.url!r})"

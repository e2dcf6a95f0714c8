"""Named, typed streams: in-process fan-out to subscribers, and the topic names streams take on a bus.

A :class:`Stream` calls its subscribers synchronously, in subscription order,
on the thread that publishes (the server's event loop). A subscriber that
raises is logged and skipped; the others still run. Subscribing and
unsubscribing are safe from any thread and during a publish: the subscriber
list is replaced, never mutated, so a publish in progress sees a consistent
snapshot.

:class:`TopicMap` turns a stream name into the name it takes on every
transport, after ``--remap`` and ``--namespace``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Generic, TypeVar

from viewer_bridge.messages import Bool, Message, PointStamped, Twist

__all__ = ["STREAM_TYPES", "Stream", "Topic", "TopicMap"]

log = logging.getLogger("viewer_bridge.streams")

T = TypeVar("T", bound=Message)
Subscriber = Callable[[T], object]


# The streams the bridge publishes, with DimOS's names and types.
STREAM_TYPES: Final[Mapping[str, type[Message]]] = {
    "clicked_point": PointStamped,
    "tele_cmd_vel": Twist,
    "stop_movement": Bool,
}

# A subscriber that keeps raising is logged at most this often.
_ERROR_LOG_INTERVAL: Final = 5.0


class Stream(Generic[T]):
    """A named stream of ``T`` messages with any number of subscribers."""

    __slots__ = ("_callbacks", "_entries", "_last_error_log", "_lock", "errors", "name", "type")

    def __init__(self, name: str, message_type: type[T]) -> None:
        self.name = name
        self.type = message_type
        # (token, callback) pairs; the token makes one function subscribed
        # twice unsubscribe one registration at a time.
        self._entries: tuple[tuple[object, Callable[[T], object]], ...] = ()
        self._callbacks: tuple[Callable[[T], object], ...] = ()
        self._lock = threading.Lock()
        self._last_error_log = -float("inf")
        self.errors = 0  # subscriber exceptions so far

    def subscribe(self, callback: Callable[[T], object]) -> Callable[[], None]:
        """Call ``callback(message)`` for every message; returns a function that unsubscribes.

        Unsubscribing twice is harmless.
        """
        if not callable(callback):
            raise TypeError(f"subscriber must be callable, got {callback!r}")
        token = object()
        with self._lock:
            self._set((*self._entries, (token, callback)))

        def unsubscribe() -> None:
            with self._lock:
                self._set(tuple(e for e in self._entries if e[0] is not token))

        return unsubscribe

    def _set(self, entries: tuple[tuple[object, Callable[[T], object]], ...]) -> None:
        self._entries = entries
        self._callbacks = tuple(cb for _, cb in entries)

    @property
    def subscriber_count(self) -> int:
        return len(self._callbacks)

    def publish(self, message: T) -> None:
        for callback in self._callbacks:
            try:
                callback(message)
            except Exception:
                self.errors += 1
                now = time.monotonic()
                if now - self._last_error_log >= _ERROR_LOG_INTERVAL:
                    self._last_error_log = now
                    log.exception(
                        "subscriber %r of stream %r raised (other subscribers still run; "
                        "%d errors on this stream so far)",
                        callback,
                        self.name,
                        self.errors,
                    )

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {self.type.__name__}, subscribers={len(self._callbacks)})"


_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Topic:
    """A stream as it appears on a bus: its (remapped, namespaced) name and its type."""

    stream: str
    name: str
    type: type[Message]

    @property
    def type_name(self) -> str:
        return self.type.lcm_name

    @cached_property  # read for every message a bus transport publishes
    def lcm_channel(self) -> str:
        """The DimOS LCM channel, ``/NAME#TYPE``."""
        return f"/{self.name}#{self.type_name}"

    @cached_property
    def zenoh_key(self) -> str:
        """The DimOS Zenoh key expression, ``dimos/NAME/TYPE``."""
        return f"dimos/{self.name}/{self.type_name}"


class TopicMap:
    """Resolves each stream to its topic after remapping and namespacing.

    Raises ``ValueError`` naming the problem when a remap refers to an unknown
    stream, a name is not a valid topic name, or two streams of different
    types would end up on one topic.
    """

    def __init__(
        self,
        remap: Mapping[str, str] | None = None,
        namespace: str = "",
        streams: Mapping[str, type[Message]] = STREAM_TYPES,
    ) -> None:
        remap = dict(remap or {})
        for source, target in remap.items():
            if source not in streams:
                raise ValueError(
                    f"cannot remap unknown stream {source!r}; streams are: {', '.join(streams)}"
                )
            if not _NAME_RE.match(target):
                raise ValueError(
                    f"invalid topic name {target!r} for stream {source!r}: use letters, digits, "
                    "'_' and '/' separators"
                )
        namespace = namespace.strip("/")
        if namespace and not _NAME_RE.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}: use letters, digits, '_' and '/' separators")
        self.namespace = namespace
        topics: dict[str, Topic] = {}
        taken: dict[str, Topic] = {}
        for stream, message_type in streams.items():
            name = remap.get(stream, stream)
            if namespace:
                name = f"{namespace}/{name}"
            topic = Topic(stream, name, message_type)
            other = taken.get(name)
            if other is not None and other.type is not message_type:
                raise ValueError(
                    f"remap puts stream {stream!r} ({message_type.lcm_name}) on topic {name!r}, "
                    f"already used by stream {other.stream!r} ({other.type.lcm_name})"
                )
            taken[name] = topic
            topics[stream] = topic
        self._topics = topics

    def __getitem__(self, stream: str) -> Topic:
        return self._topics[stream]

    def __iter__(self) -> Iterator[Topic]:
        return iter(self._topics.values())

    def topics(self) -> list[Topic]:
        return list(self._topics.values())

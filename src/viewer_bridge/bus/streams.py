"""Named, typed streams: in-process fan-out to subscribers.

A :class:`Stream` calls its subscribers synchronously, in subscription order,
on the thread that publishes (the server's event loop). A subscriber that
raises is logged and skipped; the others still run. Subscribing and
unsubscribing are safe from any thread and during a publish: the subscriber
list is replaced, never mutated, so a publish in progress sees a consistent
snapshot.

"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar

from viewer_bridge.core.logsafe import Throttle
from viewer_bridge.core.messages import Message

__all__ = ["Stream"]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Message)
Subscriber = Callable[[T], object]


# A subscriber that keeps raising is logged at most this often.
_ERROR_LOG_INTERVAL: Final = 5.0


class Stream(Generic[T]):
    """A named stream of ``T`` messages with any number of subscribers."""

    __slots__ = ("_callbacks", "_complaints", "_entries", "_lock", "errors", "name", "type")

    def __init__(self, name: str, message_type: type[T]) -> None:
        self.name = name
        self.type = message_type
        # (token, callback) pairs; the token makes one function subscribed
        # twice unsubscribe one registration at a time.
        self._entries: tuple[tuple[object, Callable[[T], object]], ...] = ()
        self._callbacks: tuple[Callable[[T], object], ...] = ()
        self._lock = threading.Lock()
        self._complaints = Throttle(_ERROR_LOG_INTERVAL)
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

    def publish(self, message: T) -> None:
        for callback in self._callbacks:
            try:
                callback(message)
            except Exception:
                self._raised(callback)

    def publish_run(self, messages: Sequence[T]) -> None:
        """:meth:`publish` for each of ``messages``, in order: each message to every subscriber before the next."""
        callbacks = self._callbacks
        if len(callbacks) != 1:
            for message in messages:
                self.publish(message)
            return
        # One subscriber, the usual case: no loop over subscribers per message.
        callback = callbacks[0]
        for message in messages:
            try:
                callback(message)
            except Exception:
                self._raised(callback)

    def _raised(self, callback: Callable[[T], object]) -> None:
        self.errors += 1
        if self._complaints.allow(callback, time.monotonic()) is not None:
            log.exception(
                "subscriber %r of stream %r raised (other subscribers still run; %d errors on this stream so far)",
                callback,
                self.name,
                self.errors,
            )

    def __repr__(self) -> str:
        return f"Stream({self.name!r}, {self.type.__name__}, subscribers={len(self._callbacks)})"

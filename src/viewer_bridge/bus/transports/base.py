"""The interface every bus transport implements, and its error.

The in-process transport is the :class:`~viewer_bridge.bus.streams.Stream`
subscribers themselves; bus transports (LCM, Zenoh) implement
:class:`Transport` and are attached to every stream by the server.

A transport's ``publish`` runs on a publishing lane's thread (see
:mod:`viewer_bridge.bus.lanes`), one message at a time, in order. It may
block (that delays only its own lane) and may raise: the lane counts and logs
the failure, reports it in ``/healthz``, and carries on.

The receive side is optional (the bridge itself only publishes; the cmd_vel
mux and ``viewer-bridge listen`` read): ``subscribe`` for one topic and
``subscribe_all`` for every bridge-typed message. Both call back on the
transport's own receive thread, so a caller that owns an event loop hops
onto it (``loop.call_soon_threadsafe``) rather than touching its state there.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from viewer_bridge.config import TRANSPORT_NAMES
from viewer_bridge.core.logsafe import Throttle

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.core.messages import Message
    from viewer_bridge.core.topics import Topic

__all__ = ["TRANSPORT_NAMES", "Transport", "TransportError"]

log = logging.getLogger(__name__)



# A failure that keeps happening is logged at most this often.
_LOG_INTERVAL: Final = 5.0


class TransportError(RuntimeError):
    """A transport could not start; the message says how to fix it."""


class Transport(ABC):
    """Publishes messages onto one bus."""

    name: str = "transport"

    @abstractmethod
    def start(self) -> None:
        """Connect to the bus. Raises :class:`TransportError` with a fix-it hint on failure."""

    @abstractmethod
    def publish(self, topic: Topic, message: Message) -> None:
        """Send one message on ``topic``. May raise; the sink catches and counts it."""

    @abstractmethod
    def close(self) -> None:
        """Release the bus. Idempotent."""

    def describe(self, topic: Topic) -> str:
        """How ``topic`` is named on this bus, for the start banner."""
        return topic.name

    # Received payloads that do not decode are counted, and logged at most once
    # per topic per interval: a misbehaving publisher must not flood the log.
    decode_errors: int = 0
    _decode_complaints: Throttle | None = None

    def _decode_failed(self, where: str, exc: Exception) -> None:
        self.decode_errors += 1
        if self._decode_complaints is None:
            self._decode_complaints = Throttle(_LOG_INTERVAL)
        if self._decode_complaints.allow(where, time.monotonic()) is not None:
            log.warning(
                "%s message on %s does not decode as its declared type (%s); dropped (%d so far)",
                self.name,
                where,
                exc,
                self.decode_errors,
            )

    def subscribe(self, topic: Topic, callback: Callable[[Message], object]) -> Callable[[], None]:
        """Call ``callback(message)`` for every message received on ``topic``; returns an unsubscribe.

        Runs ``callback`` on the transport's receive thread. Payloads that do
        not decode as ``topic.type`` are logged and counted, never delivered.
        """
        raise NotImplementedError(f"the {self.name} transport cannot receive")

    def subscribe_all(
        self, callback: Callable[[Topic, Message], object], namespace: str = ""
    ) -> Callable[[], None]:
        """Call ``callback(topic, message)`` for every bridge-typed message under ``namespace``.

        ``topic.stream`` and ``topic.name`` are both the name found on the bus.
        Returns an unsubscribe. Used by ``viewer-bridge listen``.
        """
        raise NotImplementedError(f"the {self.name} transport cannot receive")

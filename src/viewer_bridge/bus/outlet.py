"""The outlet: every message the bridge publishes passes here, in order, to every destination.

Destinations are :class:`~viewer_bridge.bus.lanes.Lane` threads (one per bus
transport and kind of message, and, for the threaded server, one for the
in-process subscribers) plus, for the asyncio server, in-process subscribers
called inline on the event loop. :meth:`Outlet.publish` only queues onto the
lanes, so it returns in microseconds whatever a destination is doing.

Commands with a deadline are armed on the :class:`~viewer_bridge.bus.watchdog.Watchdog`.
When one lapses and the loop has not ended it, the watchdog's
:meth:`Outlet.expire` puts one zero on that stream's lanes. The loop's own
zero for the same drive, when it comes, then goes only where the watchdog's
could not (inline subscribers): exactly one zero reaches each destination.
One lock orders the loop's publishes and the watchdog's zero, so a lane
never sees a stale command after the zero that ended it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Final

from viewer_bridge.bus.lanes import Lane
from viewer_bridge.bus.watchdog import DEFAULT_GRACE, Watchdog
from viewer_bridge.core.messages import Message, Twist

__all__ = ["Outlet"]

_ZERO: Final = Twist.zero()

Inline = Callable[[str, Message], None]


class Outlet:
    """Routes ``(stream, message)`` to the lanes for that stream, and to ``inline`` on the caller's thread.

    ``command_streams`` are the streams whose zero ends a command (the ones
    the watchdog guards). ``clock`` is the server's monotonic clock.
    """

    def __init__(
        self,
        lanes: Mapping[str, Sequence[Lane]],
        *,
        command_streams: Collection[str],
        clock: Callable[[], float],
        inline: Inline | None = None,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._lanes = {stream: tuple(stream_lanes) for stream, stream_lanes in lanes.items()}
        self._inline = inline
        self._commands = frozenset(command_streams)
        self._lock = threading.Lock()
        self._armed: dict[str, float] = {}
        self._expired: set[str] = set()  # streams the watchdog zeroed and the loop has not yet
        self.watchdog = Watchdog(self.expire, clock, grace)

    @property
    def lanes(self) -> list[Lane]:
        """Every lane once."""
        seen: dict[int, Lane] = {}
        for stream_lanes in self._lanes.values():
            for lane in stream_lanes:
                seen.setdefault(id(lane), lane)
        return list(seen.values())

    def owns_thread(self, thread: threading.Thread) -> bool:
        """Whether ``thread`` is one of this outlet's (a lane's, or the watchdog's)."""
        return thread is self.watchdog.thread or any(lane.thread is thread for lane in self.lanes)

    def start(self) -> None:
        for lane in self.lanes:
            lane.start()
        self.watchdog.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the watchdog, then let every lane deliver what it holds (each within ``timeout``)."""
        self.watchdog.stop()
        for lane in self.lanes:
            lane.stop(timeout)

    def publish(self, stream: str, message: Message, expires: float | None = None) -> None:
        """Publish ``message`` on ``stream``; ``expires`` arms the watchdog for a command."""
        to_lanes = True
        with self._lock:
            if stream in self._commands:
                if type(message) is Twist and message.is_zero():
                    if self._armed.pop(stream, None) is not None:
                        self.watchdog.disarm(stream)
                    elif stream in self._expired:
                        # The watchdog already put this drive's zero on the lanes.
                        self._expired.discard(stream)
                        to_lanes = False
                elif expires is not None:
                    self._armed[stream] = expires
                    self._expired.discard(stream)
                    self.watchdog.arm(stream, expires)
                elif self._armed.pop(stream, None) is not None:
                    # A command nobody guards (navigation through the mux) replaces a guarded one.
                    self.watchdog.disarm(stream)
            if to_lanes:
                for lane in self._lanes.get(stream, ()):
                    lane.put(stream, message)
        if self._inline is not None:
            self._inline(stream, message)

    def expire(self, stream: str, deadline: float) -> bool:
        """The watchdog's call: zero ``stream`` if ``deadline`` is still the command in force's."""
        with self._lock:
            if self._armed.get(stream) != deadline:
                return False
            del self._armed[stream]
            self._expired.add(stream)
            for lane in self._lanes.get(stream, ()):
                lane.put(stream, _ZERO)
        return True

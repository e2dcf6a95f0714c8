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

Waking a lane's thread costs a thread switch, so with ``defer`` (the loop's
``call_soon``) the loop's publishes wake their lanes once, after the
callback that published them (one read of a socket may hold hundreds of
messages). A zero twist wakes its lanes at once: it must not wait for the
loop to come round. With in-process subscribers called inline (the asyncio
server) every publish wakes its lanes before they run, since they may hold
the loop for any time.
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
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._lanes = {stream: tuple(stream_lanes) for stream, stream_lanes in lanes.items()}
        self._inline = inline
        self._commands = frozenset(command_streams)
        self._lock = threading.Lock()
        self._armed: dict[str, float] = {}
        self._expired: set[str] = set()  # streams the watchdog zeroed and the loop has not yet
        self._defer = defer
        self._asleep: set[Lane] = set()  # lanes with messages put but not yet woken (loop thread only)
        self.grace = grace
        self.watchdog = Watchdog(self.due, self.expire, clock, grace)

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
        # Inline subscribers may hold the loop for any time: whatever is queued goes out before they run.
        urgent = self._defer is None or self._inline is not None
        with self._lock:
            if stream in self._commands:
                armed = self._armed
                if message == _ZERO:
                    urgent = True
                    if armed.pop(stream, None) is None and stream in self._expired:
                        # The watchdog already put this drive's zero on the lanes.
                        self._expired.discard(stream)
                        to_lanes = False
                elif expires is not None:
                    self._arm(stream, expires)
                else:
                    # A command nobody guards (navigation through the mux) replaces a guarded one.
                    armed.pop(stream, None)
            if to_lanes:
                lanes = self._lanes.get(stream, ())
                for lane in lanes:
                    lane.put(stream, message, wake=urgent)
                if not urgent and lanes:
                    self._wake_later(lanes)
        if self._inline is not None:
            self._inline(stream, message)

    def publish_run(self, stream: str, messages: Sequence[Message], expires: float | None = None) -> None:
        """:meth:`publish` for each of ``messages`` (with one deadline), under one lock.

        A run is what one read of a client's socket held (see ``docs/architecture.md``).
        Zeros, and commands without a deadline, go one at a time.
        """
        command = stream in self._commands
        if command and (expires is None or _ZERO in messages):
            for message in messages:
                self.publish(stream, message, expires)
            return
        urgent = self._defer is None or self._inline is not None
        with self._lock:
            if command:
                assert expires is not None
                self._arm(stream, expires)
            lanes = self._lanes.get(stream, ())
            for lane in lanes:
                lane.put_run(stream, messages, wake=urgent)
            if not urgent and lanes:
                self._wake_later(lanes)
        inline = self._inline
        if inline is not None:
            for message in messages:
                inline(stream, message)

    def _arm(self, stream: str, expires: float) -> None:
        """A moving command on ``stream`` is in force until ``expires`` (the lock held)."""
        previous = self._armed.get(stream)
        self._armed[stream] = expires
        if previous is None:
            self._expired.discard(stream)
            self.watchdog.poke()
        elif expires < previous:
            self.watchdog.poke()

    def _wake_later(self, lanes: Sequence[Lane]) -> None:
        asleep = self._asleep
        if not asleep:
            assert self._defer is not None
            self._defer(self._wake_all)
        asleep.update(lanes)

    def _wake_all(self) -> None:
        asleep = list(self._asleep)
        self._asleep.clear()
        for lane in asleep:
            lane.wake()

    def due(self) -> float | None:
        """The earliest deadline of a command in force (the watchdog's question)."""
        with self._lock:
            return min(self._armed.values(), default=None)

    def expire(self, now: float) -> int:
        """The watchdog's call: one zero on every stream whose command lapsed ``grace`` ago or more."""
        fired = 0
        with self._lock:
            for stream, deadline in list(self._armed.items()):
                if deadline + self.grace > now:
                    continue
                del self._armed[stream]
                self._expired.add(stream)
                for lane in self._lanes.get(stream, ()):
                    lane.put(stream, _ZERO)
                fired += 1
        return fired

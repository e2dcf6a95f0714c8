"""Publishing threads: each destination gets messages in order, on a thread of its own.

A :class:`Lane` is a queue and one thread that hands each message to one
destination: a bus transport, or the in-process subscribers. Putting a
message on a lane never blocks, so nothing a destination does (a slow
subscriber, a stuck bus, a full socket) can delay the event loop or any
other destination, and a lane that falls behind is visible in its counters.

A *command* lane (``conflate=True``) keeps only the newest velocity command
of a run: when a twist is queued right behind an unsent twist for the same
stream, it replaces it. A robot needs the newest command, not a backlog of
old ones, and the replacement never reorders anything (a ``stop_movement``
queued between two twists stays between them). ``conflate_types`` widens
this to other kinds of message, such as goals for a display that only shows
the newest. Other lanes deliver every
message, up to ``max_pending``; beyond that the oldest is dropped, counted
and reported once, because a destination that far behind is broken. They
queue runs (what one read of a client held, see ``Outlet.publish_run``) as
one entry each, and their thread takes them a batch at a time, so the
hand-over costs next to nothing per message.

Each bus transport gets two lanes, one for commands and one for clicks, so a
goal that Zenoh holds back under congestion never delays a stop.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from viewer_bridge.core.logsafe import Throttle
from viewer_bridge.core.messages import Message, Twist

__all__ = ["Lane", "LaneHealth"]

log = logging.getLogger(__name__)

Deliver = Callable[[str, Message], None]
DeliverRun = Callable[[str, list[Message]], None]

# A failure that keeps happening is logged at most this often.
_LOG_INTERVAL: Final = 5.0
# The stream name of a barrier's queue entry (see Lane.barrier): no stream has this name.
_BARRIER: Final = "\x00barrier"
# A zero still queued this long after it was put has not reached its destination in time.
_ZERO_OVERDUE: Final = 0.5
# Most messages a lane's thread takes off its queue at once (with deliver_run).
_TAKE: Final = 256


class LaneHealth:
    """Whether a lane's destination is taking its messages; ``problem`` says why not."""

    __slots__ = ("ok", "problem")

    def __init__(self, ok: bool, problem: str | None) -> None:
        self.ok = ok
        self.problem = problem


class Lane:
    """One destination's queue and thread.

    ``deliver(stream, message)`` runs on the lane's thread and may block or
    raise; deliveries and failures are counted by stream (``delivered``,
    ``failures``), and failures logged at most every few seconds. ``kind``
    names the destination in metrics (a transport, ``inprocess`` or
    ``echo``). ``clock`` is the server's monotonic clock.

    ``deliver_run(stream, messages)``, if given, takes consecutive messages
    of one stream at once: the same as ``deliver`` for each in order, without
    a call per message. It must not raise for one message and skip the rest.
    """

    def __init__(
        self,
        name: str,
        deliver: Deliver,
        *,
        kind: str = "",
        conflate: bool = False,
        conflate_types: tuple[type, ...] = (Twist,),
        max_pending: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        deliver_run: DeliverRun | None = None,
    ) -> None:
        self.name = name
        self._deliver_run = None if conflate else deliver_run
        self.kind = kind or name
        self._deliver = deliver
        self._conflate = conflate
        self._conflatable = frozenset(conflate_types)
        self._max_pending = max_pending
        self._clock = clock
        # A command lane queues (stream, message); any other lane (stream, run of messages), see _enqueue.
        self._queue: collections.deque[tuple[str, Any]] = collections.deque()
        self._queued = 0  # messages in the runs queued (not a command lane's)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Counters and health, written by the lane's thread (and put() for the drop counters).
        self.delivered: dict[str, int] = {}  # by stream
        self.failures: dict[str, int] = {}  # by stream
        self.conflated = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._last_failed = False
        self._complaints = Throttle(_LOG_INTERVAL)
        self._zero_since: float | None = None  # when the oldest undelivered zero twist was queued
        self._zero_failed = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"viewer-bridge-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Deliver what is queued, then end the thread; False if it did not end within ``timeout``."""
        thread = self._thread
        if thread is None:
            return True
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "%s: still delivering after %.1f s (%d messages queued); leaving it behind", self.name, timeout,
                self.pending,
            )
            return False
        self._thread = None
        return True

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # -- the producer side (any thread) --------------------------------------

    def put(self, stream: str, message: Message, wake: bool = True) -> None:
        """Queue ``message`` for ``stream``; never blocks.

        ``wake=False`` leaves waking the thread to a later :meth:`wake`, so a
        burst of messages costs one thread switch instead of one each.
        """
        if not self._conflate:
            self._enqueue(stream, [message], wake)
            return
        queue = self._queue
        kind = type(message)
        with self._lock:
            if (
                queue
                and kind in self._conflatable
                and queue[-1][0] == stream
                and type(queue[-1][1]) is kind
            ):
                replaced = queue[-1][1]
                queue[-1] = (stream, message)
                self.conflated += 1
                if self._zero_since is not None and _is_zero(replaced) and not _is_zero(message):
                    # A newer command superseded the queued zero before it went out.
                    self._zero_since = self._clock() if self._has_zero() else None
            else:
                queue.append((stream, message))
                if len(queue) > self._max_pending:
                    self._drop_oldest()
            if self._zero_since is None and _is_zero(message):
                self._zero_since = self._clock()
        if wake and self._idle:
            self._wake.set()

    def put_run(self, stream: str, messages: Sequence[Message], wake: bool = True) -> None:
        """:meth:`put` for each of ``messages``, in order."""
        if not messages:
            return
        if not self._conflate:
            # A list of the lane's own: the caller's may go to other lanes too, and runs are merged in place.
            self._enqueue(stream, list(messages), wake)
            return
        # Each would replace the one before it while it is unsent: the last stands for them all.
        self.conflated += len(messages) - 1
        self.put(stream, messages[-1], wake)

    def _enqueue(self, stream: str, messages: list[Message], wake: bool) -> None:
        # A lane that delivers everything queues runs, not messages: what one read held is one entry,
        # handed over and taken off as one. The count of messages they hold bounds the queue.
        with self._lock:
            self._queue.append((stream, messages))
            self._queued += len(messages)
            if self._queued > self._max_pending:
                self._drop_excess()
        if wake and self._idle:
            self._wake.set()

    def _drop_oldest(self) -> None:
        # A command lane over max_pending (the lock held): its oldest entry goes.
        try:
            self._queue.popleft()
        except IndexError:  # the thread took it meanwhile
            return
        self._dropped(1)

    def _drop_excess(self) -> None:
        # A lane that delivers everything, over max_pending (the lock held): its oldest messages go.
        queue = self._queue
        excess = self._queued - self._max_pending
        dropped = 0
        while dropped < excess and queue:
            stream, item = queue[0]
            if stream is _BARRIER:
                queue.popleft()
                item.set()  # what was queued before it is gone
                continue
            run: list[Message] = item
            if len(run) <= excess - dropped:
                queue.popleft()
                dropped += len(run)
            else:
                del run[: excess - dropped]
                dropped = excess
        self._queued -= dropped
        self._dropped(dropped)

    def _dropped(self, count: int) -> None:
        first = not self.dropped
        self.dropped += count
        if first:
            log.error(
                "%s: more than %d messages waiting; dropping the oldest (its destination is not "
                "keeping up; counted in viewer_bridge_lane_dropped_total)",
                self.name,
                self._max_pending,
            )

    def barrier(self) -> threading.Event:
        """An event set once everything queued before this call has been delivered (or dropped)."""
        reached = threading.Event()
        with self._lock:
            self._queue.append((_BARRIER, reached))
        self.wake()
        return reached

    def wake(self) -> None:
        """Make the thread look at its queue (after puts with ``wake=False``)."""
        if self._idle:
            self._wake.set()

    # -- health ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages queued (a command lane's barriers too)."""
        return len(self._queue) if self._conflate else self._queued

    def health(self, now: float) -> LaneHealth:
        if self._zero_failed:
            return LaneHealth(False, f"{self.name}: the last zero twist failed to publish ({self.last_error})")
        since = self._zero_since
        if since is not None and now - since >= _ZERO_OVERDUE:
            return LaneHealth(False, f"{self.name}: a zero twist has waited {now - since:.1f} s to be published")
        if self._last_failed:
            return LaneHealth(False, f"{self.name}: publishing fails ({self.last_error})")
        return LaneHealth(True, None)

    # -- the lane's thread ------------------------------------------------------

    def _run(self) -> None:
        if not self._conflate:
            self._run_batches()
            return
        queue = self._queue
        while True:
            try:
                stream, message = queue.popleft()
            except IndexError:
                if self._stopping:
                    return
                self._wait_for_work()
                continue
            if stream is _BARRIER:
                message.set()
                continue
            self._send(stream, message)

    def _run_batches(self) -> None:
        # A lane that delivers everything takes its queued runs a batch at a time, up to _TAKE messages.
        queue = self._queue
        popleft = queue.popleft
        lock = self._lock
        while True:
            batch: list[tuple[str, Any]] = []
            taken = 0
            with lock:
                while queue and taken < _TAKE:
                    entry = popleft()
                    batch.append(entry)
                    if entry[0] is not _BARRIER:
                        taken += len(entry[1])
                self._queued -= taken
            if not batch:
                if self._stopping:
                    return
                self._wait_for_work()
                continue
            self._deliver_batch(batch)

    def _wait_for_work(self) -> None:
        # Announce idleness before the last look, so a put() in between always wakes us.
        self._wake.clear()
        self._idle = True
        if not self._queue:
            self._wake.wait()
        self._idle = False

    def _deliver_batch(self, batch: list[tuple[str, Any]]) -> None:
        # Consecutive runs of one stream are delivered as one; a barrier is set once what precedes it went.
        send = self._send_run if self._deliver_run is not None else self._send_each
        current = ""  # no stream has this name
        run: list[Message] = []
        for stream, item in batch:
            if stream is _BARRIER:
                if run:
                    send(current, run)
                    run = []
                current = ""
                item.set()
            elif stream is current:  # the same stream (the same name from elsewhere: only a shorter run)
                run.extend(item)
            else:
                if run:
                    send(current, run)
                current, run = stream, item
        if run:
            send(current, run)

    def _send_run(self, stream: str, messages: list[Message]) -> None:
        assert self._deliver_run is not None
        try:
            self._deliver_run(stream, messages)
        except Exception as exc:
            self._failed(stream, exc)
            return
        self._delivered(stream, len(messages))

    def _send_each(self, stream: str, messages: list[Message]) -> None:
        # Lanes without deliver_run (clicks, echo, an agent's uplink): one call per message, every one counted.
        deliver = self._deliver
        failures = 0
        failed = False
        for message in messages:
            try:
                deliver(stream, message)
                failed = False
            except Exception as exc:
                failures += 1
                failed = True
                self._failed(stream, exc)
        if failures < len(messages):
            self._delivered(stream, len(messages) - failures)
        self._last_failed = failed

    def _delivered(self, stream: str, count: int) -> None:
        delivered = self.delivered
        delivered[stream] = delivered.get(stream, 0) + count
        self._last_failed = False

    def _send(self, stream: str, message: Message) -> None:
        # A command lane's delivery: it reports on zeros (its health is /healthz's).
        is_zero = _is_zero(message)
        try:
            self._deliver(stream, message)
        except Exception as exc:
            self._failed(stream, exc)
            if is_zero:
                self._zero_failed = True
        else:
            self._delivered(stream, 1)
            if is_zero:
                self._zero_failed = False
        if is_zero:
            with self._lock:
                # Another zero may be queued behind this one; its clock starts now.
                self._zero_since = self._clock() if self._has_zero() else None

    def _failed(self, stream: str, exc: Exception) -> None:
        failures = self.failures[stream] = self.failures.get(stream, 0) + 1
        self._last_failed = True
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._complaints.allow(None, self._clock()) is not None:
            log.error("%s: publishing %s failed: %s (%d failures so far)", self.name, stream, exc, failures)

    def _has_zero(self) -> bool:
        return any(_is_zero(message) for _, message in self._queue)


def _is_zero(message: Message) -> bool:
    return type(message) is Twist and message.is_zero()

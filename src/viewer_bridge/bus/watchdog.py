"""The watchdog: a thread that gets a zero to the robot when the event loop cannot.

The server's own timer publishes the zero when a command lapses (the
deadman). That timer runs on the event loop, and anything that holds the
loop (a subscriber that blocks, a stdout that nobody reads, a flood) would
hold the zero too. So every command published with a deadline is also armed
here; a thread with nothing else to do sleeps until the earliest deadline
plus ``grace`` and, if the loop has not refreshed or ended the command by
then, calls ``expire(stream, deadline)``, which publishes one zero straight
onto the publishing lanes (see :class:`viewer_bridge.bus.outlet.Outlet`).

``grace`` leaves the normal case to the loop, which logs and counts the
deadman with its cause; the watchdog acts only when the loop is late by more
than that. Only a thread switch stands between the deadline and the zero:
the thread never takes a lock the loop holds for long, and Python hands it
the interpreter within its switch interval (5 ms) even when the loop runs
pure Python.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_GRACE", "Watchdog"]

log = logging.getLogger(__name__)

# How late the loop may be before the watchdog acts (seconds). Small against
# the deadman (1 s by default) and the 100 ms the zero may take in all.
DEFAULT_GRACE: Final = 0.03


class Watchdog:
    """Calls ``expire(stream, deadline)`` once per armed deadline that passes without ``disarm`` or a new ``arm``.

    ``expire`` returns whether it published a zero (it does not when the loop
    got there first, between the deadline passing and the call); ``fired``
    counts the zeros it did publish.

    ``clock`` must be the clock the deadlines are on (the server's monotonic
    clock); ``arm``/``disarm`` are called with the caller's own lock held, and
    ``expire`` runs on the watchdog's thread.
    """

    def __init__(
        self,
        expire: Callable[[str, float], bool],
        clock: Callable[[], float],
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._expire = expire
        self._clock = clock
        self.grace = grace
        self._deadlines: dict[str, float] = {}
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.fired = 0  # zeros published by the watchdog (the loop was late)

    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name="viewer-bridge-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            thread, self._thread = self._thread, None
            self._running = False
            self._deadlines.clear()
            self._cond.notify()
        if thread is not None:
            thread.join()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def arm(self, stream: str, deadline: float) -> None:
        with self._cond:
            earliest = min(self._deadlines.values(), default=None)
            self._deadlines[stream] = deadline
            if earliest is None or deadline < earliest:
                self._cond.notify()

    def disarm(self, stream: str) -> None:
        with self._cond:
            self._deadlines.pop(stream, None)

    def _run(self) -> None:
        with self._cond:
            while self._running:
                if not self._deadlines:
                    self._cond.wait()
                    continue
                stream, deadline = min(self._deadlines.items(), key=lambda item: item[1])
                wait = deadline + self.grace - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                del self._deadlines[stream]
                # expire() takes the outlet's lock; release ours so arm() from the loop never waits on it.
                self._cond.release()
                try:
                    if self._expire(stream, deadline):
                        self.fired += 1
                except Exception:
                    log.exception("the watchdog could not publish the zero for %s", stream)
                finally:
                    self._cond.acquire()

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
    """A thread that calls ``expire(now)`` whenever the earliest deadline ``due()`` reports is ``grace`` past.

    ``due()`` returns the earliest armed deadline or ``None``; ``expire(now)``
    zeroes what has lapsed and returns how many zeros it published (none when
    the loop got there first). The owner calls :meth:`poke` when a deadline
    appears or moves earlier; a deadline that only moves later (every refresh
    of a held key) costs nothing here: the thread wakes at the old one, asks
    again, and sleeps on.
    """

    def __init__(
        self,
        due: Callable[[], float | None],
        expire: Callable[[float], int],
        clock: Callable[[], float],
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self._due = due
        self._expire = expire
        self._clock = clock
        self.grace = grace
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None
        self.fired = 0  # zeros published by the watchdog (the loop was late)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> None:
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name="viewer-bridge-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        self._running = False
        self._wake.set()
        if thread is not None:
            thread.join()

    def poke(self) -> None:
        """A deadline appeared or moved earlier: look again now."""
        self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        while self._running:
            # Cleared before looking, so a poke while we look makes the wait below return at once.
            wake.clear()
            try:
                deadline = self._due()
                timeout = None if deadline is None else deadline + self.grace - self._clock()
                if timeout is not None and timeout <= 0:
                    self.fired += self._expire(self._clock())
                    continue
            except Exception:
                log.exception("the watchdog could not check or publish the zero")
                timeout = self.grace
            wake.wait(timeout)

"""How long the event loop leaves itself idle between the bursts of a long run of sends.

The lanes and the watchdog are Python threads: each runs only while it holds
the GIL. A thread that keeps making short system calls (the loop sending to
a thousand clients, or a 43 MB body to a fast reader) takes the GIL back
after each one before a waiting thread has woken, and each hand-over
restarts the waiter's switch interval, so in practice a lane or the watchdog
runs only when the loop blocks in its selector. Work that sends a lot
therefore goes out in bursts with the loop idle for :data:`LOOP_GAP` in
between (docs/architecture.md, "Threads and the GIL", has the measurements).
"""

from __future__ import annotations

from typing import Final

__all__ = ["LOOP_GAP"]

# Long enough for the loop to block in its selector and a woken thread to take the GIL (0.2 ms was
# enough on the reference machine); short enough that a burst of ~1 ms of sends keeps half the loop.
LOOP_GAP: Final = 0.001

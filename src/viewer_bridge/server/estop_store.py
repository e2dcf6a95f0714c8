"""The latched e-stop on disk, so it survives a restart of the bridge (``estop_state_file``).

The file holds one JSON object: ``{"latched": true, "by": ..., "at": ...,
"reason": ...}`` while latched, ``{"latched": false}`` once cleared. It is
written whole to a temporary file and renamed over the old one, so a crash
mid-write leaves the previous state, never half of one. Writes go through one
worker thread, in order, so the event loop never waits on the disk and the
file always ends with the last change.

Reading fails safe: a file that exists but cannot be read or parsed counts
as latched (with the reason saying why), because a robot that an operator
stopped must not start moving because a file got damaged.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from viewer_bridge.core.safety import Latch

__all__ = ["EstopStore"]

log = logging.getLogger(__name__)


class EstopStore:
    """Reads the latch at start and writes every change, off the caller's thread."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="viewer-bridge-estop-file")

    def load(self, wall: float) -> Latch | None:
        """The latch the file holds (blocking: call it off the loop), or None when it holds none."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            return self._damaged(f"cannot read it ({exc.strerror})", wall)
        try:
            state = json.loads(text)
            if not isinstance(state, dict) or not isinstance(state.get("latched"), bool):
                raise ValueError("no boolean 'latched'")
            if not state["latched"]:
                return None
            reason = state.get("reason")
            return Latch(str(state["by"]), float(state["at"]), None if reason is None else str(reason))
        except (ValueError, KeyError, TypeError) as exc:
            return self._damaged(f"it is not a state this bridge wrote ({exc})", wall)

    def _damaged(self, why: str, wall: float) -> Latch:
        log.error("e-stop state file %s: %s; starting latched to be safe", self.path, why)
        return Latch("estop_state_file", wall, f"state file unreadable: {why}")

    def save(self, latch: Latch | None) -> Future[None]:
        """Write the state (latched or not) in the background; the future says when it is on disk."""
        state = {"latched": False} if latch is None else {
            "latched": True, "by": latch.by, "at": latch.at, "reason": latch.reason
        }
        return self._writer.submit(self._write, json.dumps(state))

    def _write(self, text: str) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".estop-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(text + "\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.error("could not write the e-stop state to %s: %s (the latch holds in memory)", self.path, exc)

    def close(self) -> None:
        """Finish pending writes and end the worker."""
        self._writer.shutdown(wait=True)

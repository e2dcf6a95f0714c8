"""The observer interface: what the server tells a watcher about itself as it happens.

An observer (today the Rerun sink, :class:`viewer_bridge.bus.rerun_sink.RerunSink`)
learns of every refusal and of the server's status. The server calls it on
its event loop's thread, in the middle of handling a client's frames, so each
method must return in microseconds and never block: hand the work to a
thread of the observer's own. An observer that raises is a bug in the
observer; the server does not guard against it.

Messages the bridge *publishes* (commands, goals) do not come through here:
an observer that wants them gets a publishing lane of its own
(:class:`~viewer_bridge.bus.lanes.Lane`), like a bus transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["BridgeObserver"]


class BridgeObserver(Protocol):
    def on_refusal(self, client: str, reason: str, detail: str, now: float) -> None:
        """``client`` (its label, e.g. ``127.0.0.1:50312 #0003``) was refused: ``reason`` is the stable
        code (``not_driver``, ``click_not_3d``, ... as sent to clients), ``detail`` the human text.
        Called for every refusal, floods included; ``now`` is the server's monotonic clock."""

    def on_status(self, status: Mapping[str, Any], now: float) -> None:
        """The server's status now (see :func:`viewer_bridge.core.awareness.status_text` for the keys).

        Called periodically (a few times a second) or when the status changes; an observer compares
        with what it last showed. The mapping is the observer's to keep: the server builds a new one
        each time."""

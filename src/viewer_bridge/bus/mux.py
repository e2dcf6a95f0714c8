"""The cmd_vel mux's wiring: :class:`~viewer_bridge.core.mux.CmdVelMux` on the server's event loop.

Teleop comes from the server's own decisions (what it publishes on
``tele_cmd_vel``, after the safety layer), navigation from a topic on every
bus transport (and from in-process code via :meth:`MuxNode.feed_nav`), hopped
onto the loop. :meth:`MuxNode.teleop` and :meth:`MuxNode.nav` return what to
publish; the server publishes it like everything else (the output stream,
``cmd_vel`` by default, in-process and on every transport). The rules are in
:mod:`viewer_bridge.core.mux`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports import TransportError
from viewer_bridge.core.messages import Message, Twist
from viewer_bridge.core.mux import CmdVelMux, MuxOutcome
from viewer_bridge.core.topics import Topic, TopicMap, mux_topics

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Sequence

    from viewer_bridge.bus.transports import Transport
    from viewer_bridge.config import BridgeConfig

__all__ = ["MuxNode"]

log = logging.getLogger(__name__)


class MuxNode:
    """Runs a :class:`CmdVelMux` for the server: counters, logs, and navigation input from the buses.

    ``nav_cmd_vel`` is the navigation input as received (subscribe to watch
    it); ``cmd_vel`` is the output. Counters: ``takeovers``, ``nav_dropped``,
    ``rejected``.
    """

    def __init__(self, nav_topic: Topic, output_topic: Topic, cooldown: float = 1.0) -> None:
        self.state = CmdVelMux(cooldown)
        self.nav_topic = nav_topic
        self.output_topic = output_topic
        self.nav_cmd_vel: Stream[Twist] = Stream(nav_topic.stream, Twist)
        self.cmd_vel: Stream[Twist] = Stream(output_topic.stream, Twist)
        self.takeovers = 0
        self.nav_dropped = 0
        self.rejected = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_nav: Callable[[Twist], None] | None = None
        self._undo: list[Callable[[], None]] = []

    @classmethod
    def from_config(cls, config: BridgeConfig, topics: TopicMap) -> MuxNode:
        if config.mux is None:
            raise ValueError("the mux is not configured (set mux to the navigation topic)")
        nav_topic, out_topic = mux_topics(topics, config.mux, config.mux_output)
        return cls(nav_topic, out_topic, config.mux_cooldown)

    @property
    def streams(self) -> dict[str, Stream[Twist]]:
        return {self.nav_cmd_vel.name: self.nav_cmd_vel, self.cmd_vel.name: self.cmd_vel}

    # -- lifecycle ----------------------------------------------------------

    def start(
        self, loop: asyncio.AbstractEventLoop, transports: Sequence[Transport], on_nav: Callable[[Twist], None]
    ) -> None:
        """Read navigation from every transport; ``on_nav(twist)`` is then called on ``loop`` for each.

        Raises :class:`~viewer_bridge.bus.transports.TransportError` if a transport cannot receive.
        """
        self._loop = loop
        self._on_nav = on_nav
        try:
            for transport in transports:
                try:
                    self._undo.append(transport.subscribe(self.nav_topic, self._from_bus))
                except NotImplementedError:
                    raise TransportError(
                        f"the {transport.name} transport cannot receive, so the mux cannot read "
                        f"{self.nav_topic.name!r} from it"
                    ) from None
        except BaseException:
            self.stop()
            raise
        log.info(
            "cmd_vel mux: %s (navigation) + tele_cmd_vel (teleop) -> %s, teleop cooldown %.2f s",
            self.nav_topic.name,
            self.output_topic.name,
            self.state.cooldown,
        )

    def stop(self) -> None:
        """Stop reading navigation. Idempotent."""
        self._on_nav = None
        undo, self._undo = self._undo, []
        for unsubscribe in reversed(undo):
            try:
                unsubscribe()
            except Exception:
                log.exception("unsubscribing the mux failed")

    def describe(self, transports: Sequence[Transport]) -> list[str]:
        """Banner lines: where the mux reads and writes on every transport."""

        def where(topic: Topic) -> str:
            return ", ".join([f"in-process {topic.stream}", *(f"{t.name} {t.describe(topic)}" for t in transports)])

        return [
            f"cmd_vel mux (teleop wins, {self.state.cooldown:g} s cooldown):",
            f"  navigation in: {where(self.nav_topic)}",
            f"  {self.output_topic.stream} out: {where(self.output_topic)}",
        ]

    # -- inputs (on the loop) ---------------------------------------------------

    def teleop(self, twist: Twist, now: float, announced: bool) -> MuxOutcome | None:
        """What to publish for a teleop command; ``announced``: the bridge just sent ``stop_movement`` itself."""
        outcome = self._counted(self.state.teleop(twist, now))
        if outcome is not None and announced and outcome.stop_movement:
            return MuxOutcome(cmd_vel=outcome.cmd_vel, took_over=outcome.took_over)
        return outcome

    def nav(self, twist: Twist, now: float) -> MuxOutcome | None:
        """What to publish for a navigation command."""
        outcome = self.state.nav(twist, now)
        if outcome.dropped and outcome.rejected is None:
            self.nav_dropped += 1
        return self._counted(outcome)

    def feed_nav(self, twist: Twist) -> None:
        """Hand the mux a navigation command from any thread."""
        self._from_bus(twist)

    def _from_bus(self, twist: Message) -> None:
        loop, on_nav = self._loop, self._on_nav
        if loop is None or on_nav is None or not isinstance(twist, Twist):
            return
        try:
            loop.call_soon_threadsafe(on_nav, twist)
        except RuntimeError:  # the loop closed under a late bus callback
            pass

    def _counted(self, outcome: MuxOutcome) -> MuxOutcome | None:
        if outcome.rejected is not None:
            self.rejected += 1
            log.warning("mux refused a command: %s", outcome.rejected)
            return None
        if outcome.dropped:
            return None
        if outcome.took_over:
            self.takeovers += 1
            log.info("teleop took over %s", self.output_topic.name)
        if outcome.resumed:
            log.info("navigation has %s again", self.output_topic.name)
        return outcome

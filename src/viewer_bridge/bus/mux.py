"""The cmd_vel mux's wiring: :class:`~viewer_bridge.core.mux.CmdVelMux` on the server's event loop.

Teleop comes from the bridge's own ``tele_cmd_vel`` stream (after the safety
layer), navigation from a topic on every bus transport (and from in-process
code via :meth:`MuxNode.feed_nav`); the output is a ``cmd_vel`` stream
published in-process and on every transport. Everything runs on the server's
event loop; bus callbacks hop onto it. The rules are in
:mod:`viewer_bridge.core.mux`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from viewer_bridge.bus.streams import Stream
from viewer_bridge.bus.transports import TransportError, TransportSink
from viewer_bridge.core.messages import Bool, Message, Twist
from viewer_bridge.core.mux import CmdVelMux, MuxOutcome
from viewer_bridge.core.topics import Topic, TopicMap, mux_topics

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Sequence

    from viewer_bridge.bus.transports import Transport
    from viewer_bridge.config import BridgeConfig

__all__ = ["MuxNode"]

log = logging.getLogger(__name__)

_STOP_MOVEMENT: Final = Bool(True)


class MuxNode:
    """Runs a :class:`CmdVelMux` on the server's event loop, wired to streams and transports.

    ``nav_cmd_vel`` is the navigation input as received (subscribe to watch
    it); ``cmd_vel`` is the output. Counters: ``takeovers``, ``nav_dropped``,
    ``rejected``.
    """

    def __init__(
        self,
        teleop: Stream[Twist],
        stop_movement: Stream[Bool],
        nav_topic: Topic,
        output_topic: Topic,
        cooldown: float = 1.0,
        announce: bool = True,
    ) -> None:
        self.state = CmdVelMux(cooldown)
        self.nav_topic = nav_topic
        self.output_topic = output_topic
        self.nav_cmd_vel: Stream[Twist] = Stream(nav_topic.stream, Twist)
        self.cmd_vel: Stream[Twist] = Stream(output_topic.stream, Twist)
        self.sinks: list[TransportSink] = []
        self.takeovers = 0
        self.nav_dropped = 0
        self.rejected = 0
        self._teleop = teleop
        self._stop_movement = stop_movement
        # False when the config's stop_movement is "off": takeovers are not announced either.
        self._announce = announce
        self._loop: asyncio.AbstractEventLoop | None = None
        self._undo: list[Callable[[], None]] = []
        self._running = False
        # Set when the bridge itself has just published stop_movement (it does
        # when a drive starts, right before the twist): that announces this
        # takeover, so the mux does not send a second one.
        self._announced = False
        self._own_publish = False

    @classmethod
    def from_config(
        cls, config: BridgeConfig, topics: TopicMap, teleop: Stream[Twist], stop_movement: Stream[Bool]
    ) -> MuxNode:
        if config.mux is None:
            raise ValueError("the mux is not configured (set mux to the navigation topic)")
        nav_topic, out_topic = mux_topics(topics, config.mux, config.mux_output)
        return cls(
            teleop, stop_movement, nav_topic, out_topic, config.mux_cooldown, config.stop_movement == "publish"
        )

    @property
    def streams(self) -> dict[str, Stream[Twist]]:
        return {self.nav_cmd_vel.name: self.nav_cmd_vel, self.cmd_vel.name: self.cmd_vel}

    # -- lifecycle ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, transports: Sequence[Transport]) -> None:
        """Subscribe to teleop, to navigation on every transport, and publish the output on each.

        Raises :class:`~viewer_bridge.bus.transports.TransportError` if a transport cannot receive.
        """
        self._loop = loop
        self._running = True
        try:
            self._undo.append(self._teleop.subscribe(self._on_teleop))
            self._undo.append(self._stop_movement.subscribe(self._on_stop_movement))
            self._undo.append(self.nav_cmd_vel.subscribe(self._on_nav))
            for transport in transports:
                sink = TransportSink(transport, self.output_topic)
                self.sinks.append(sink)
                self._undo.append(self.cmd_vel.subscribe(sink))
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
            "cmd_vel mux: %s (navigation) + %s (teleop) -> %s, teleop cooldown %.2f s",
            self.nav_topic.name,
            self._teleop.name,
            self.output_topic.name,
            self.state.cooldown,
        )

    def stop(self) -> None:
        """Unsubscribe from everything. Idempotent."""
        self._running = False
        undo, self._undo = self._undo, []
        for unsubscribe in reversed(undo):
            try:
                unsubscribe()
            except Exception:
                log.exception("unsubscribing the mux failed")
        self.sinks.clear()

    def describe(self, transports: Sequence[Transport]) -> list[str]:
        """Banner lines: where the mux reads and writes on every transport."""

        def where(topic: Topic) -> str:
            return ", ".join([f"in-process {topic.stream}", *(f"{t.name} {t.describe(topic)}" for t in transports)])

        return [
            f"cmd_vel mux (teleop wins, {self.state.cooldown:g} s cooldown):",
            f"  navigation in: {where(self.nav_topic)}",
            f"  {self.output_topic.stream} out: {where(self.output_topic)}",
        ]

    def status(self) -> dict[str, object]:
        loop = self._loop
        active = loop is not None and self.state.teleop_active(loop.time())
        return {
            "source": self.state.source.value,
            "teleop_active": active,
            "takeovers": self.takeovers,
            "nav_dropped": self.nav_dropped,
            "rejected": self.rejected,
        }

    # -- inputs ---------------------------------------------------------------

    def feed_nav(self, twist: Twist) -> None:
        """Hand the mux a navigation command from any thread."""
        self._from_bus(twist)

    def _from_bus(self, twist: Message) -> None:
        loop = self._loop
        if loop is None or not self._running or not isinstance(twist, Twist):
            return
        try:
            loop.call_soon_threadsafe(self.nav_cmd_vel.publish, twist)
        except RuntimeError:  # the loop closed under a late bus callback
            pass

    def _on_stop_movement(self, message: Bool) -> None:
        if message.data and not self._own_publish:
            self._announced = True

    def _on_teleop(self, twist: Twist) -> None:
        loop = self._loop
        if loop is None or not self._running:
            return
        announced, self._announced = self._announced, False
        self._apply(self.state.teleop(twist, loop.time()), announced)

    def _on_nav(self, twist: Twist) -> None:
        loop = self._loop
        if loop is None or not self._running:
            return
        outcome = self.state.nav(twist, loop.time())
        if outcome.dropped and outcome.rejected is None:
            self.nav_dropped += 1
        self._apply(outcome, False)

    def _apply(self, outcome: MuxOutcome, announced: bool) -> None:
        if outcome.rejected is not None:
            self.rejected += 1
            log.warning("mux refused a command: %s", outcome.rejected)
            return
        if outcome.dropped:
            return
        if outcome.took_over:
            self.takeovers += 1
            log.info("teleop took over %s", self.output_topic.name)
        if outcome.resumed:
            log.info("navigation has %s again", self.output_topic.name)
        if outcome.stop_movement and self._announce and not announced:
            self._own_publish = True
            try:
                self._stop_movement.publish(_STOP_MOVEMENT)
            finally:
                self._own_publish = False
        if outcome.cmd_vel is not None:
            self.cmd_vel.publish(outcome.cmd_vel)

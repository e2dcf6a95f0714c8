"""Helpers for fleet tests: a hand-driven station on a plain Zenoh session, and a Zenoh router.

:class:`HandStation` speaks the fleet's wire (the codecs of
:mod:`viewer_bridge.core.fleet`) from a plain ``zenoh`` session, with its own
liveliness token, so agent tests control every order exactly.
"""

from __future__ import annotations

import queue
import secrets
import time
from typing import Any

from tests.bus.transports.bus_support import zenoh_config
from viewer_bridge.core.fleet import (
    AgentState,
    Kind,
    Order,
    Reply,
    command_key,
    decode_reply,
    decode_state,
    encode_order,
    replies_for,
    state_key,
    station_key,
)
from viewer_bridge.core.messages import Twist, Vector3

FWD = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0))


class HandStation:
    """A station whose every order is sent by the test."""

    def __init__(self, name: str, connect: list[str], *, mode: str = "peer", listen: list[str] | None = None) -> None:
        import zenoh

        self.name = name
        self.epoch = secrets.randbits(64)
        self.seq = 0
        self.session = zenoh.open(zenoh_config(listen, connect, mode))
        self.replies: queue.Queue[Reply] = queue.Queue()
        self.states: queue.Queue[AgentState] = queue.Queue()
        self._subs = [
            self.session.declare_subscriber(replies_for(name), lambda s: self.replies.put(decode_reply(
                s.payload.to_bytes()))),
        ]
        self.token = self.session.liveliness().declare_token(station_key(name, self.epoch))

    def watch_state(self, robot: str) -> None:
        self._subs.append(
            self.session.declare_subscriber(state_key(robot), lambda s: self.states.put(decode_state(
                s.payload.to_bytes())))
        )

    def send(self, robot: str, kind: Kind, client: str = "#1", drive: int = 0, **payload: Any) -> Order:
        self.seq += 1
        order = Order(kind, self.name, self.epoch, self.seq, client, drive, **payload)
        self.session.put(command_key(robot), encode_order(order))
        return order

    def twist(self, robot: str, twist: Twist = FWD, client: str = "#1", drive: int = 1) -> Order:
        return self.send(robot, Kind.TWIST, client, drive, twist=twist)

    def reply(self, timeout: float = 5.0) -> Reply:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no reply within {timeout} s") from None

    def state_where(self, predicate: Any, timeout: float = 10.0) -> AgentState:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                state = self.states.get(timeout=remaining)
            except queue.Empty:
                break
            if predicate(state):
                return state
        raise AssertionError(f"no agent state matching the condition within {timeout} s")

    def close(self) -> None:
        if self.session is None:
            return
        self.token.undeclare()
        for sub in self._subs:
            sub.undeclare()
        self.session.close()
        self.session = None

    def __enter__(self) -> HandStation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Router:
    """A Zenoh session in router mode in this process (tests that need one in a child use fleet_peer.py)."""

    def __init__(self, listen: list[str]) -> None:
        import zenoh

        config = zenoh_config(listen, None, "router")
        # Its clients learn within a second that it is gone, even if its close never reaches them.
        config.insert_json5("transport/link/tx/lease", "1000")
        self.session = zenoh.open(config)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Status frames: what each client is told about the bridge, on connect and when it changes.

Each client gets its own :class:`~viewer_bridge.core.protocol.Status` (who
drives and whether that is it, the command in force after the limits, the
e-stop, its own round trip and speed factor). The server marks the board
dirty whenever something in it may have changed; the board then sends, at
most ``MAX_RATE`` times a second, each client whose frame differs from the
last one it got. Values that drift continuously are rounded (the deadman to
half a second, the round trip to a tenth of a millisecond) so that a held
key's refreshes do not count as changes.

A flush works out what every client is told alike once, and tells the
clients a chunk at a time, with the loop left idle for
:data:`~viewer_bridge.server.pacing.LOOP_GAP` before the flush and between
chunks. Each send is a system call (about 18 µs per client on loopback):
without the gaps, a flush to a thousand clients (about 20 ms) kept the lanes
off the GIL, and with them the very twist that caused it (see
:mod:`~viewer_bridge.server.pacing`). With them, a driver's next twist, on
the loop or on a lane, waits behind one chunk at most. Each chunk reads the
state as it is when the chunk is sent (the client count is the flush's), and
a change during a flush is followed by another flush, so every client ends
up told the state as it is.

dimos-viewer ignores every frame the bridge sends, so it is unaffected; the
bridge's own clients (the page, the terminal teleop, ``ViewerClient``) show
them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

from viewer_bridge.core.protocol import Axes, EstopState, Status, encode_status
from viewer_bridge.core.safety import SafetyController
from viewer_bridge.server.pacing import LOOP_GAP

__all__ = ["MAX_RATE", "StatusBoard"]

# Status frames per second at most, to all clients together.
MAX_RATE: Final = 10.0
# Clients told per chunk: about 1 ms of sends.
_CHUNK: Final = 64


class Client(Protocol):
    """What the board needs of a session."""

    id: str
    name: str
    last_status: bytes | None

    def send_status(self, frame: bytes) -> None: ...

    def link_view(self, now: float) -> tuple[float | None, float | None]:
        """(round trip in seconds or None, speed factor or None when too slow)."""
        ...


class _Shared(NamedTuple):
    driver: object
    driver_name: str | None
    command: Axes | None
    estop: EstopState | None
    deadman_remaining_s: float | None


def _count(clients: Iterable[Client]) -> int:
    return sum(1 for _ in clients)


class StatusBoard:
    """Builds and sends status frames for one server (on its event loop)."""

    def __init__(
        self,
        safety: SafetyController,
        clients: Callable[[], Iterable[Client]],
        name_of: Callable[[object], str],
        clock: Callable[[], float],
        safety_for: Callable[[Client], SafetyController | None] | None = None,
    ) -> None:
        self._safety = safety
        # A fleet station: each client's status is about the robot it chose (see viewer_bridge.server.fleet).
        self._safety_for = safety_for
        self._clients = clients
        self._name_of = name_of
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None  # the next flush, or the rest of this one
        self._unsent: collections.deque[Client] = collections.deque()  # this flush's clients not yet told
        self._told = 0  # how many clients this flush tells of (each status says)
        self._again = False  # the status changed mid-flush
        self._last_sent = -1.0
        self.frames_sent = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unsent.clear()
        self._loop = None

    def status_for(self, client: Client, now: float) -> Status:
        safety = self._safety_of(client)
        return self._status(client, now, safety, self._shared(safety, now), _count(self._clients()))

    def _safety_of(self, client: Client) -> SafetyController:
        if self._safety_for is not None:
            return self._safety_for(client) or self._safety
        return self._safety

    def _shared(self, safety: SafetyController, now: float) -> _Shared:
        """What every client of ``safety`` is told alike (worked out once per flush, not once per client)."""
        driver = safety.driver
        command = safety.command
        estop = safety.estop
        deadline = safety.last_command_at + safety.deadman_timeout if driver is not None else None
        return _Shared(
            driver,
            None if driver is None else self._name_of(driver),
            None if command is None else Axes.of(command),
            None if estop is None else EstopState(estop.by, estop.at, estop.reason),
            # Half seconds: a held key refreshes the deadman ~30 times a second, which is not news.
            None if deadline is None else round(max(0.0, deadline - now) * 2) / 2,
        )

    def _status(self, client: Client, now: float, safety: SafetyController, shared: _Shared, clients: int) -> Status:
        held = safety.held_by(client.id)
        rtt, factor = client.link_view(now)
        return Status(
            you=client.name,
            driver=shared.driver_name,
            you_drive=shared.driver == client.id,
            command=shared.command,
            estop=shared.estop,
            stopped_by=None if held is None else self._name_of(held),
            deadman_remaining_s=shared.deadman_remaining_s,
            rtt_ms=None if rtt is None else round(rtt * 1000.0, 1),
            speed_factor=None if factor is None else round(factor, 3),
            clients=clients,
        )

    def greet(self, client: Client) -> None:
        """A new client gets its status at once."""
        self._send(client, self._clock())

    def changed(self) -> None:
        """Something in the status may have changed: send what differs, now or at the next allowed time."""
        loop = self._loop
        if loop is None:
            return
        if self._unsent:
            # Mid-flush: those already told may have missed this; another flush follows this one.
            self._again = True
            return
        if self._timer is not None:
            return  # a flush is due and will read the state as it is then
        # Never inline: the change's own publishes are on their lanes, and the threads delivering them
        # need the GIL before the sends begin.
        wait = self._last_sent + 1.0 / MAX_RATE - self._clock()
        self._timer = loop.call_later(max(wait, LOOP_GAP), self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._last_sent = self._clock()
        self._unsent = collections.deque(self._clients())
        self._told = len(self._unsent)
        self._again = False
        self._send_some()

    def _send_some(self) -> None:
        """Tell the next ``_CHUNK`` clients; the rest after a gap each, so no one waits behind them all."""
        self._timer = None
        unsent = self._unsent
        now = self._clock()
        # One shared part per safety controller (a fleet station has one per robot): a flush costs a few
        # microseconds per client, not a pass over every client for each of them.
        shared: dict[int, _Shared] = {}
        for _ in range(min(_CHUNK, len(unsent))):
            client = unsent.popleft()
            safety = self._safety_of(client)
            view = shared.get(id(safety))
            if view is None:
                view = shared[id(safety)] = self._shared(safety, now)
            self._deliver(client, self._status(client, now, safety, view, self._told))
        loop = self._loop
        if unsent and loop is not None:
            self._timer = loop.call_later(LOOP_GAP, self._send_some)
        elif self._again:
            self._again = False
            self.changed()

    def _send(self, client: Client, now: float) -> None:
        self._deliver(client, self.status_for(client, now))

    def _deliver(self, client: Client, status: Status) -> None:
        frame = encode_status(status)
        if frame != client.last_status:
            client.last_status = frame
            client.send_status(frame)
            self.frames_sent += 1

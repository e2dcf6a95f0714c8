"""The status board: what each client is told, and what a flush costs as clients grow.

Most tests drive the board on its own: the clients are its view of a
session (an id, a name, a link, a place to send frames), the safety
controllers the real ones. The last one runs a real bridge with more
clients than one chunk of a flush, over sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator

from tests.conftest import BridgeFactory, client
from tests.raw_ws import RawClient
from viewer_bridge.core.messages import Twist, Vector3
from viewer_bridge.core.protocol import Axes, Status, decode_server_frame
from viewer_bridge.core.safety import SafetyController
from viewer_bridge.server.status import _CHUNK, StatusBoard


class Client:
    def __init__(self, number: int, rtt: float | None = None) -> None:
        self.id = f"{number:04d}"
        self.name = f"#{number:04d}"
        self.last_status: bytes | None = None
        self.frames: list[Status] = []
        self._rtt = rtt

    def send_status(self, frame: bytes) -> None:
        status = decode_server_frame(frame)
        assert isinstance(status, Status)
        self.frames.append(status)

    def link_view(self, now: float) -> tuple[float | None, float | None]:
        return self._rtt, None if self._rtt is None else 0.5


class Clients:
    """The board's client list, counting how often the board walks it."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.walks = 0

    def __call__(self) -> Iterator[Client]:
        self.walks += 1
        return iter(self.clients)


def twist(x: float) -> Twist:
    return Twist(Vector3(x, 0.0, 0.0), Vector3())


def flush(board: StatusBoard) -> None:
    """What changed() does once the rate allows, on a real loop turned until every client is told."""

    async def run() -> None:
        board.start(asyncio.get_running_loop())
        board._flush()
        while board._unsent:
            await asyncio.sleep(0)
        board.stop()

    asyncio.run(run())


def test_each_client_is_told_who_drives_and_whether_it_is_them() -> None:
    safety = SafetyController(deadman_timeout=1.0)
    clients = Clients([Client(1, rtt=0.0123), Client(2)])
    board = StatusBoard(safety, clients, lambda c: f"#{c}", lambda: 10.2)
    safety.twist("0001", twist(0.5), 10.0)
    flush(board)
    one, two = (c.frames[-1] for c in clients.clients)
    assert one == Status(
        you="#0001", driver="#0001", you_drive=True, command=Axes(0.5, 0, 0, 0, 0, 0),
        deadman_remaining_s=1.0, rtt_ms=12.3, speed_factor=0.5, clients=2,
    )
    assert two == Status(
        you="#0002", driver="#0001", you_drive=False, command=Axes(0.5, 0, 0, 0, 0, 0),
        deadman_remaining_s=1.0, rtt_ms=None, speed_factor=None, clients=2,
    )
    # Nothing changed: nothing is sent again.
    flush(board)
    assert [len(c.frames) for c in clients.clients] == [1, 1]


def test_a_client_stopped_by_another_is_told_by_whom() -> None:
    safety = SafetyController()
    clients = Clients([Client(1), Client(2)])
    board = StatusBoard(safety, clients, lambda c: f"#{c}", lambda: 0.1)
    safety.twist("0001", twist(0.5), 0.0)
    safety.stop("0002", 0.1)
    flush(board)
    assert clients.clients[0].frames[-1].stopped_by == "#0002"
    assert clients.clients[1].frames[-1].stopped_by is None


def test_a_flush_walks_the_client_list_once_however_many_clients() -> None:
    # Each status carries the number of clients: counted once per flush, not once per client
    # (which made a flush with 1000 clients hold the event loop for about 40 ms).
    safety = SafetyController()
    clients = Clients([Client(n) for n in range(500)])
    board = StatusBoard(safety, clients, lambda c: f"#{c}", lambda: 0.0)
    safety.twist("0007", twist(0.5), 0.0)
    flush(board)
    assert clients.walks == 1
    assert all(c.frames[-1].clients == 500 for c in clients.clients)
    assert [c.frames[-1].you_drive for c in clients.clients].count(True) == 1


def test_at_a_fleet_station_each_client_hears_about_its_own_robot() -> None:
    robots = {"a": SafetyController(), "b": SafetyController()}
    chosen = {"0001": "a", "0002": "b", "0003": None}
    clients = Clients([Client(1), Client(2), Client(3)])
    board = StatusBoard(
        SafetyController(),  # the station's own: for clients that chose no robot
        clients,
        lambda c: f"#{c}",
        lambda: 0.0,
        safety_for=lambda client: robots.get(chosen[client.id] or ""),
    )
    robots["a"].twist("0001", twist(0.5), 0.0)
    robots["b"].twist("0002", twist(-0.25), 0.0)
    flush(board)
    a, b, none = (c.frames[-1] for c in clients.clients)
    assert (a.driver, a.you_drive, a.command) == ("#0001", True, Axes(0.5, 0, 0, 0, 0, 0))
    assert (b.driver, b.you_drive, b.command) == ("#0002", True, Axes(-0.25, 0, 0, 0, 0, 0))
    assert (none.driver, none.command) == (None, None)
    # A greeting (one client, on connect) tells the same as a flush.
    greeted = Client(1)
    clients.clients.append(greeted)
    chosen[greeted.id] = "a"
    board.greet(greeted)
    assert greeted.frames[-1] == Status(
        you="#0001", driver="#0001", you_drive=True, command=Axes(0.5, 0, 0, 0, 0, 0),
        deadman_remaining_s=1.0, speed_factor=None, clients=4,
    )


def test_a_flush_tells_a_chunk_of_clients_at_a_time_and_a_change_meanwhile_is_sent_after() -> None:
    safety = SafetyController()
    clients = Clients([Client(n) for n in range(3 * _CHUNK + 5)])
    board = StatusBoard(safety, clients, lambda c: f"#{c}", time.monotonic)
    safety.twist("0001", twist(0.5), time.monotonic())

    def told() -> int:
        return sum(1 for c in clients.clients if c.frames)

    async def run() -> None:
        board.start(asyncio.get_running_loop())
        board.changed()
        # Nothing is sent inline: the lanes' threads get the GIL for the change's own publishes first.
        assert told() == 0
        seen = []
        changed_midway = False
        deadline = time.monotonic() + 5
        while told() < len(clients.clients):
            assert time.monotonic() < deadline, f"the flush stopped at {told()} clients"
            await asyncio.sleep(0)  # one turn of the loop: at most one chunk runs in it
            seen.append(told())
            if told() == 2 * _CHUNK and not changed_midway:
                # The driver lets go while the flush is under way: those told already hear of it next.
                safety.twist("0001", twist(0.0), time.monotonic())
                board.changed()
                changed_midway = True
        # The loop turned between chunks (the lanes ran meanwhile), each chunk whole.
        assert sorted(set(seen) - {0}) == [_CHUNK, 2 * _CHUNK, 3 * _CHUNK, 3 * _CHUNK + 5], sorted(set(seen))
        while any(c.frames[-1].driver is not None for c in clients.clients):
            assert time.monotonic() < deadline, "not every client heard that nobody drives"
            await asyncio.sleep(0.005)
        board.stop()

    asyncio.run(run())
    assert all(c.frames[0].driver == "#0001" for c in clients.clients[: 2 * _CHUNK])
    assert clients.walks == 2  # two flushes, each walking the list once


def test_over_real_sockets_every_one_of_many_clients_hears_who_drives(bridge_factory: BridgeFactory) -> None:
    # More clients than one chunk of a flush: those told on later turns of the loop get it all the same.
    # A deadman longer than any stall of a loaded machine: the drive must still be on when the last is told.
    # They all connect at once from one address, past its connection burst.
    server, rec = bridge_factory(deadman_timeout=60.0, connect_rate=0)
    port = server.bound_port or 0
    with contextlib.ExitStack() as stack:
        watchers = [stack.enter_context(RawClient(port, timeout=20)) for _ in range(2 * _CHUNK + 10)]
        with client(server) as driver:
            driver.send(json.dumps({"type": "twist", "linear_x": 0.4}))
            rec.wait_twists(1)
            heard = []
            everyone = len(watchers) + 1
            for raw in watchers:
                # Before it: the greeting, statuses from before the drive, and (for the chunks of a flush
                # that began before the driver connected) the drive with that flush's client count; the
                # flush that follows it tells everyone the state as it is now.
                while (status := json.loads(raw.read_until(1)))["driver"] is None or status["clients"] != everyone:
                    pass
                heard.append((status["you_drive"], status["command"]["linear_x"]))
    assert heard == [(False, 0.4)] * len(watchers)

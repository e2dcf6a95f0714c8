"""The Python client and operator control, against real bridges on loopback.

Status frames (``status``, ``on_status``, ``wait_status``), the e-stop
(``estop``/``estop_clear``), ``timestamp_ms`` on twists and the ``stale``
refusal, the exact frames the client puts on the wire, and an e-stop that
outlives the process that latched it (``kill -9``) and a bridge restart.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve

from tests.clients.test_client import run_async
from tests.conftest import Recorder, wait_until
from viewer_bridge import Bool, RerunWebSocketServer, Twist, Vector3
from viewer_bridge.clients.client import AsyncViewerClient, ServerError, Status, ViewerClient
from viewer_bridge.core.protocol import Click, Estop, EstopClear, Heartbeat, Stop, TwistCommand, parse_message

BridgeFactory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
FWD = Twist(Vector3(0.5, 0, 0), Vector3())


# -- what goes on the wire ---------------------------------------------------------------------


@run_async
async def test_every_message_is_the_protocols_own_encoding_and_twists_carry_the_time() -> None:
    received: list[str | bytes] = []

    async def record(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)

    async with serve(record, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with AsyncViewerClient(f"ws://127.0.0.1:{port}/ws", reconnect=False) as client:
            before = int(time.time() * 1000)
            await client.twist(linear_x=0.5, angular_z=-0.25)
            after = int(time.time() * 1000)
            await client.twist(linear_y=0.1, timestamp_ms=1_700_000_000_000)
            await client.click(1, 2, 3, entity_path="/world/map", timestamp_ms=1_700_000_000_123)
            await client.heartbeat(timestamp_ms=5)
            await client.stop()
            await client.estop("person in the aisle")
            await client.estop()
            await client.estop_clear()
            await client.sync()
    assert all(isinstance(m, str) for m in received), "every message is a text frame"
    # Decoded by the bridge's own parser: exactly the events the client meant.
    events = [parse_message(m) for m in received]
    first = events[0]
    assert isinstance(first, TwistCommand) and first.timestamp_ms is not None
    assert before <= first.timestamp_ms <= after
    assert events == [
        TwistCommand(0.5, 0.0, 0.0, 0.0, 0.0, -0.25, first.timestamp_ms),
        TwistCommand(0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 1_700_000_000_000),
        Click(1.0, 2.0, 3.0, "/world/map", 1_700_000_000_123),
        Heartbeat(5),
        Stop(),
        Estop("person in the aisle"),
        Estop(),
        EstopClear(),
    ]
    # All six axes are written out, as dimos-viewer writes them.
    assert set(json.loads(received[1])) == {
        "type", "linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z", "timestamp_ms"
    }


@run_async
async def test_a_long_reason_is_cut_and_the_estop_still_latches(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, rec = bridge
    async with AsyncViewerClient(server.websocket_url()) as client:
        await client.estop("x" * 201)
        await client.sync()
    assert rec.of("estop") == [Bool(True)] and rec.twists == [Twist.zero()]
    latch = server.server.safety.estop
    assert latch is not None and latch.reason == "x" * 199 + "\u2026"


# -- status frames ------------------------------------------------------------------------------


@run_async
async def test_status_on_connect_and_after_each_change_with_on_status(
    bridge: tuple[RerunWebSocketServer, Recorder],
) -> None:
    server, _ = bridge
    seen: list[Status] = []
    async with (
        AsyncViewerClient(server.websocket_url(), on_status=seen.append) as watcher,
        AsyncViewerClient(server.websocket_url()) as driver,
    ):
        first = await watcher.wait_status(timeout=5)
        assert first.you == "#0001" and first.driver is None and first.estop is None and not first.you_drive
        assert seen and seen[0].you == "#0001"

        sent = time.monotonic()
        await driver.twist(linear_x=0.5, angular_z=0.25)
        driving = await watcher.wait_status(lambda s: s.driver is not None, timeout=5)
        print(f"status after a twist reached the other client {(time.monotonic() - sent) * 1000:.1f} ms later")
        assert driving.driver == "#0002" and not driving.you_drive
        assert driving.command is not None and (driving.command.linear_x, driving.command.angular_z) == (0.5, 0.25)
        mine = await driver.wait_status(lambda s: s.you_drive, timeout=5)
        assert mine.you == "#0002" and mine.driver == "#0002" and mine.command == driving.command

        sent = time.monotonic()
        await watcher.estop("drill")
        latched = await driver.wait_status(lambda s: s.estop is not None, timeout=5)
        print(f"status after an e-stop reached the driver {(time.monotonic() - sent) * 1000:.1f} ms later")
        assert latched.estop is not None and (latched.estop.by, latched.estop.reason) == ("#0001", "drill")
        assert abs(latched.estop.at - time.time()) < 60  # epoch seconds, not a monotonic reading
        assert latched.driver is None and latched.command is None and latched.stopped_by == "#0001"
        await watcher.wait_status(lambda s: s.estop is not None, timeout=5)
        await driver.twist(linear_x=0.5)
        with pytest.raises(ServerError) as caught:
            await driver.sync()
        assert caught.value.reason == "estopped" and "(drill)" in caught.value.detail
        assert "e-stop latched by #0001 at" in caught.value.detail
    # The callback saw what `status` showed, in order, and every frame was a Status.
    assert all(isinstance(s, Status) for s in seen)
    assert any(s.driver == "#0002" for s in seen) and seen[-1].estop is not None
    assert watcher.status is None, "a closed client keeps no status from a connection that is gone"


def test_blocking_client_status_estop_and_clear(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, rec = bridge
    with ViewerClient(server.websocket_url()) as panel, ViewerClient(server.websocket_url()) as driver:
        assert panel.wait_status(timeout=5).you == "#0001"
        driver.twist(linear_x=0.5)
        driver.sync()
        panel.estop("person in the aisle")
        panel.sync()
        status = driver.wait_status(lambda s: s.estop is not None, timeout=5)
        assert status.estop is not None and status.estop.reason == "person in the aisle"
        assert driver.status is status
        panel.estop_clear()
        panel.sync()
        assert driver.wait_status(lambda s: s.estop is None, timeout=5).stopped_by == "#0001"
        # The driver held its key through the e-stop: it must let go before driving again.
        driver.twist(linear_x=0.5)
        with pytest.raises(ServerError, match="stopped_by_other: #0001 stopped you; let go"):
            driver.sync()
        driver.stop()
        driver.twist(linear_x=0.5)
        driver.sync()
    assert rec.of("estop") == [Bool(True), Bool(False)]
    # The drive, the e-stop's zero, the driver's own stop (every stop acts), the new drive, its disconnect zero.
    assert rec.twists == [FWD, Twist.zero(), Twist.zero(), FWD, Twist.zero()]


@run_async
async def test_wait_status_times_out_and_ends_with_the_client(bridge: tuple[RerunWebSocketServer, Recorder]) -> None:
    server, _ = bridge
    client = AsyncViewerClient(server.websocket_url())
    await client.connect()
    with pytest.raises(TimeoutError):
        await client.wait_status(lambda s: s.estop is not None, timeout=0.2)
    waiting = asyncio.ensure_future(client.wait_status(lambda s: s.estop is not None, timeout=5))
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(Exception, match="closed"):
        await waiting


# -- stale commands -------------------------------------------------------------------------------


@run_async
async def test_an_old_timestamp_is_refused_as_stale_and_not_published(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(link_limits=True)
    async with AsyncViewerClient(server.websocket_url()) as client:
        for _ in range(3):  # the link's best delivery, from commands sent now
            await client.twist(linear_x=0.5)
        await client.sync()
        await client.twist(linear_x=0.9, timestamp_ms=int(time.time() * 1000) - 2000)
        with pytest.raises(ServerError) as caught:
            await client.sync()
        assert caught.value.reason == "stale" and caught.value.field == "timestamp_ms"
        assert "later than this link's best" in caught.value.detail
        await client.stop()
        await client.sync()
    assert rec.twists == [FWD, FWD, FWD, Twist.zero()]


# -- an e-stop that outlives its sender and the bridge ------------------------------------------------

LATCHER = textwrap.dedent(
    """
    import sys
    from viewer_bridge.clients.client import ViewerClient

    client = ViewerClient(sys.argv[1])
    client.connect()
    client.estop("latched by a process that then died")
    client.wait_status(lambda s: s.estop is not None, timeout=10)
    print("latched", flush=True)
    sys.stdin.read()  # until it is killed (or, should the test fail first, its stdin closes)
    """
)


def test_the_estop_survives_its_senders_kill_9_and_a_bridge_restart(tmp_path: Path) -> None:
    state = tmp_path / "estop.json"
    first = RerunWebSocketServer(port=0, estop_state_file=str(state))
    with first:
        latcher = subprocess.Popen(
            [sys.executable, "-c", LATCHER, first.websocket_url()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert latcher.stdout is not None
            assert latcher.stdout.readline().strip() == "latched"
            latcher.send_signal(signal.SIGKILL)  # no close frame, no goodbye
            assert latcher.wait(timeout=10) == -signal.SIGKILL
        finally:
            if latcher.poll() is None:
                latcher.kill()
                latcher.wait(timeout=10)
            for pipe in (latcher.stdin, latcher.stdout):
                if pipe is not None:
                    pipe.close()
        wait_until(lambda: first.snapshot().clients == 0, what="the bridge to see the latcher gone")
        with ViewerClient(first.websocket_url()) as driver:
            status = driver.wait_status(timeout=5)
            assert status.estop is not None and status.estop.by == "#0001"
            driver.twist(linear_x=0.5)
            with pytest.raises(ServerError, match="estopped: e-stop latched by #0001"):
                driver.sync()
        wait_until(lambda: state.exists() and json.loads(state.read_text())["latched"], what="the latch on disk")

    # A new bridge process would read the same file: a new bridge object on it starts latched.
    second = RerunWebSocketServer(port=0, estop_state_file=str(state))
    latched: list[Bool] = []
    second.estop.subscribe(latched.append)
    with second:
        wait_until(lambda: latched == [Bool(True)], what="the restored latch on the estop stream")
        with ViewerClient(second.websocket_url()) as driver:
            status = driver.wait_status(timeout=5)
            assert status.estop is not None
            assert (status.estop.by, status.estop.reason) == ("#0001", "latched by a process that then died")
            driver.twist(linear_x=0.5)
            with pytest.raises(ServerError, match="estopped"):
                driver.sync()
            driver.estop_clear()
            assert driver.wait_status(lambda s: s.estop is None, timeout=5).estop is None
        wait_until(lambda: not json.loads(state.read_text())["latched"], what="the clear on disk")
    assert latched == [Bool(True), Bool(False)]

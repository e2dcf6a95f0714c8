"""Safety that nothing can delay, over real sockets: floods, blocked subscribers, stuck buses, a full stdout.

Each test makes one thing misbehave and checks, functionally, that the
safety actions still happen: another client's stop is published, the deadman
zero reaches an independent LCM listener while the misbehaving part is still
stuck, new clients still get in. How fast is measured by ``make bench``
(the "under attack" scenarios), not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    LineReader,
    PlainLcm,
    free_port,
    require_lcm,
    require_zenoh,
    unique_lcm_url,
    zenoh_config,
)
from tests.conftest import BridgeFactory, Recorder, client, twist, wait_until
from tests.raw_ws import Flood, RawClient, frame, repeated
from viewer_bridge import AsyncRerunWebSocketServer, RerunWebSocketServer, Twist, Vector3

REPO = Path(__file__).resolve().parents[2]
TELE = "/tele_cmd_vel#geometry_msgs.Twist"
TEXT, CONT, PING = 1, 0, 9

FLOODS = {
    "valid": repeated([frame(TEXT, b'{"type":"click","x":-1,"y":-1,"z":-1}')]),
    "heartbeat": repeated([frame(TEXT, b'{"type":"heartbeat"}')]),
    "malformed": repeated([frame(TEXT, b'{"type":"twist","linear_x":"fast"}'), frame(TEXT, b"\x00nope")]),
    # Messages of 102 empty frames each (under the 128-frame limit), every one of them invalid JSON.
    "fragments": repeated([frame(TEXT, b"", fin=False), *[frame(CONT, b"", fin=False)] * 100, frame(CONT, b"")]),
    "pings": repeated([frame(PING, b"p" * 100)]),
}


def lcm_twists(bus: PlainLcm, timeout: float = 5.0) -> Twist:
    return Twist.lcm_decode(bus.get_on(TELE, timeout=timeout))


@contextlib.contextmanager
def asyncio_bridge(**settings: Any) -> Iterator[AsyncRerunWebSocketServer]:
    """The asyncio server (in-process subscribers inline on its loop), its loop on a thread of the test's."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    server = AsyncRerunWebSocketServer(port=0, **settings)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


# -- floods --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "connections"), [*((k, 1) for k in FLOODS), ("valid", 8), ("malformed", 8)])
def test_a_flood_delays_no_one_elses_commands_stop_deadman_or_handshake(
    bridge_factory: BridgeFactory, kind: str, connections: int
) -> None:
    # link_limits off: a flood makes every round trip through the loop slower, which the link limits
    # would (rightly) answer with a lower speed factor; here the commands must arrive as sent.
    server, rec = bridge_factory(deadman_timeout=0.5, flood_close_after=30.0, link_limits=False)
    # The flood comes from another address: connections from the flooder's own address share one message
    # budget (the per-host limit), which tests/security/test_host_rate.py covers.
    with Flood(server.bound_port or 0, FLOODS[kind], connections, source="127.0.0.2") as flood:
        # The flooders are read until their budget runs out, then paused (or cut off: pongs nobody reads).
        wait_until(
            lambda: server.snapshot().paused_clients >= 1 or flood.ended, timeout=15, what=f"the {kind} flood to bite"
        )
        with client(server) as driver:
            for i in range(20):
                driver.send(twist(linear_x=0.01 * (i + 1)))
            driver.send('{"type":"stop"}')
            rec.wait_twists(21, timeout=10)
            # Silence after a new drive: the deadman still fires in the middle of the flood.
            driver.send(twist(linear_x=0.7))
            wait_until(lambda: server.snapshot().zeros.get("deadman", 0) == 1, timeout=10, what="the deadman")
        # A new client still gets in.
        with client(server) as late:
            late.send('{"type":"click","x":1,"y":2,"z":3}')
            wait_until(lambda: any(p.x == 1 for p in rec.points), timeout=10, what="the late client's click")
    assert rec.twists == [
        *(Twist(Vector3(0.01 * (i + 1), 0, 0), Vector3()) for i in range(20)),
        Twist.zero(),
        Twist(Vector3(0.7, 0, 0), Vector3()),
        Twist.zero(),
    ]


def test_a_client_that_floods_for_long_is_closed_with_1008(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(flood_close_after=1.0)
    with Flood(server.bound_port or 0, FLOODS["heartbeat"]) as flood:
        wait_until(lambda: flood.ended, timeout=20, what="the flooder to be cut off")
    assert flood.ended[0].startswith("cut off")
    assert server.snapshot().flood_closes == 1


def test_a_new_connection_gets_part_of_its_frame_budget_not_the_whole_burst(bridge_factory: BridgeFactory) -> None:
    # 1000 frames/s, 2 s deep: 1900 heartbeats at once fit the burst, but not what a new connection starts
    # with (512), so reconnecting cannot buy a flooder a whole burst. It is paused, not cut: every frame is
    # read once its debt is repaid.
    server, _ = bridge_factory(frame_budget=1000, rate_limit=1e9, rate_burst=1e9, host_rate_limit=0)
    with RawClient(server.bound_port or 0) as raw:
        raw.send(frame(TEXT, b'{"type":"heartbeat"}') * 1900)
        wait_until(lambda: server.snapshot().paused_clients == 1, timeout=10, what="the client to be paused")
        wait_until(lambda: server.snapshot().frames.get("heartbeat") == 1900, timeout=20, what="every heartbeat")
        # The last of them leave it in debt a moment more; then it is read again like anyone.
        wait_until(lambda: server.snapshot().paused_clients == 0, timeout=10, what="the client to be read again")
        assert server.snapshot().flood_closes == 0


def test_a_client_that_does_not_read_its_pongs_is_closed(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(frame_budget=1e6, flood_close_after=60.0)
    with Flood(server.bound_port or 0, FLOODS["pings"]) as flood:
        wait_until(lambda: flood.ended, timeout=30, what="the flooder to be cut off")
    assert flood.ended[0].startswith("cut off")
    wait_until(lambda: server.snapshot().clients == 0, what="the bridge to let go of it")


def test_the_driver_releasing_while_over_its_rate_is_still_stopped(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(rate_limit=10, rate_burst=5)
    with client(server) as driver:
        for _ in range(30):
            driver.send(twist(linear_x=0.5))
        driver.send(twist(linear_x=0.0))  # key up, as a browser or the teleop sends it
        wait_until(lambda: rec.twists and rec.twists[-1].is_zero(), what="the release's zero")
    assert rec.twists[:5] == [Twist(Vector3(0.5, 0, 0), Vector3())] * 5
    assert rec.twists[5:] == [Twist.zero()]
    assert server.snapshot().rejects["rate_limited"] == 25


# -- a loop held by a subscriber, a bus, or stdout ----------------------------------------------


def test_a_subscriber_blocking_the_asyncio_loop_does_not_hold_the_zero_from_the_bus() -> None:
    require_lcm()
    url = unique_lcm_url()
    release = threading.Event()
    seen: list[Twist] = []

    def blocking(message: Twist) -> None:
        seen.append(message)
        if len(seen) == 1:
            release.wait(10)  # holds the event loop: this subscriber runs on it

    with PlainLcm(url, "/tele_cmd_vel#.*") as bus, asyncio_bridge(
        transports=["lcm"], lcm_url=url, deadman_timeout=0.3
    ) as server:
        server.tele_cmd_vel.subscribe(blocking)
        with Driver(server.websocket_url()) as driver:
            driver.twist(linear_x=0.5)
            assert lcm_twists(bus) == Twist(Vector3(0.5, 0, 0), Vector3())
            # The loop is stuck in the subscriber; the watchdog thread publishes the zero anyway.
            assert lcm_twists(bus, timeout=5).is_zero()
            assert len(seen) == 1 and not release.is_set()
            assert server.watchdog_zeros() == 1
            release.set()
            # The loop catches up: its own deadman zero goes to in-process subscribers only.
            wait_until(lambda: len(seen) == 2, what="the in-process zero")
            assert seen[1].is_zero()
            bus.assert_quiet(0.5)  # exactly one zero on the bus


def test_a_blocked_subscriber_of_the_threaded_server_delays_only_subscribers(bridge_factory: BridgeFactory) -> None:
    require_lcm()
    url = unique_lcm_url()
    release = threading.Event()
    with PlainLcm(url, "/tele_cmd_vel#.*") as bus:
        server, rec = bridge_factory(transports=["lcm"], lcm_url=url, deadman_timeout=0.3)
        server.tele_cmd_vel.subscribe(lambda message: release.wait(10))
        with client(server) as driver, client(server) as other:
            driver.send(twist(linear_x=0.5))
            assert lcm_twists(bus) == Twist(Vector3(0.5, 0, 0), Vector3())
            other.send('{"type":"stop"}')  # anyone's stop, while the subscriber is stuck
            assert lcm_twists(bus).is_zero()
            driver.send(twist())  # the driver lets go (a stop by someone else lasts until it does)
            driver.send(twist(linear_x=0.4))
            assert lcm_twists(bus) == Twist(Vector3(0.4, 0, 0), Vector3())
            assert lcm_twists(bus).is_zero()  # the deadman, still while stuck
            # Subscribers run in order: the recorder saw the first twist, then the blocker took the thread.
            assert not release.is_set()
            assert rec.of("tele_cmd_vel", settle=False) == [Twist(Vector3(0.5, 0, 0), Vector3())]
            release.set()
            rec.wait_twists(4)
    # The loop was never held: it took the other's stop and the next twist while the subscriber was stuck
    # (above). Whether its deadman timer or, on a loaded machine, the watchdog sent that zero is timing.
    assert server.snapshot().zeros["deadman"] == 1


def test_a_stuck_zenoh_subscriber_holds_neither_the_loop_nor_the_lcm_zero(bridge_factory: BridgeFactory) -> None:
    require_lcm()
    require_zenoh()
    import zenoh

    url = unique_lcm_url()
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    release = threading.Event()
    got: list[int] = []

    def stuck(sample: Any) -> None:
        got.append(1)
        release.wait(15)

    server, rec = bridge_factory(
        transports=["lcm", "zenoh"], lcm_url=url, zenoh_listen=[endpoint], zenoh_multicast_scouting=False,
        deadman_timeout=0.3, rate_limit=1e6, rate_burst=1e6, frame_budget=1e6,
    )  # fmt: skip
    session = zenoh.open(zenoh_config(connect=[endpoint]))
    try:
        subscriber = session.declare_subscriber("dimos/clicked_point/**", stuck)
        with PlainLcm(url, "/tele_cmd_vel#.*") as bus, client(server) as clicker, client(server) as driver:
            wait_until(lambda: _clicks_until_seen(clicker, got), timeout=10, what="the Zenoh route")
            lanes = {lane.name: lane for lane in server.server.metric_lanes()}
            sent = 0
            # Click until Zenoh holds its click lane back (reliable, blocking under congestion): how many
            # that takes depends on the socket buffers the kernel gave this run.
            while lanes["zenoh-clicks"].pending < 100:
                assert sent < 400_000, "Zenoh never pushed back on the bridge"
                for i in range(sent, sent + 10_000):
                    clicker.send(json.dumps({"type": "click", "x": i, "y": 0, "z": 0}))
                sent += 10_000
                rec.wait_points(sent, timeout=30)  # the loop takes every click: only the Zenoh lane is stuck
            wait_until(lambda: lanes["lcm-clicks"].pending == 0, what="LCM to have published every click")
            driver.send(twist(linear_x=0.5))
            assert lcm_twists(bus) == Twist(Vector3(0.5, 0, 0), Vector3())
            assert lcm_twists(bus).is_zero()
            with urllib.request.urlopen(server.http_url("/healthz"), timeout=5) as response:
                assert json.load(response)["clients"] == 2
            release.set()
        subscriber.undeclare()
    finally:
        release.set()
        session.close()


def _clicks_until_seen(ws: Any, got: list[int]) -> bool:
    ws.send(json.dumps({"type": "click", "x": -1, "y": 0, "z": 0}))
    return bool(got)


def test_a_stdout_nobody_reads_holds_up_nothing() -> None:
    require_lcm()
    url = unique_lcm_url()
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewer_bridge", "serve", "--port", "0", "--echo", "text", "--transport", "lcm",
         "--lcm-url", url, "--deadman-timeout", "0.3", "--rate-limit", "100000", "--rate-burst", "100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    stderr = LineReader(proc.stderr)
    try:
        banner = stderr.until("dimos-viewer --ws-url")
        port = int(re.search(r":(\d+)/ws", banner[-1]).group(1))  # type: ignore[union-attr]
        with PlainLcm(url, "/tele_cmd_vel#.*") as bus, Driver(f"ws://127.0.0.1:{port}/ws") as driver:
            # ~70 bytes an echo line: far past a pipe's 64 KiB, which nobody reads.
            for i in range(4000):
                driver.twist(linear_x=0.5 + (i % 2) * 0.1)
            stderr.until("echo: more than 1000 messages waiting")
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                assert json.load(response)["up"] is True
            deadline = time.monotonic() + 10
            while not lcm_twists(bus, timeout=max(0.1, deadline - time.monotonic())).is_zero():
                pass  # twists still draining from the command lane, then the deadman's zero
    finally:
        proc.kill()
        proc.wait(10)
        stderr.join()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


# -- lifecycle -------------------------------------------------------------------------------


def test_stop_from_a_subscriber_while_another_thread_stops_returns_promptly() -> None:
    server = RerunWebSocketServer(port=0)
    rec = Recorder(server)
    stopped_inside: list[float] = []

    def stop_from_inside(message: Twist) -> None:
        if message.is_zero():
            began = time.monotonic()
            server.stop()
            stopped_inside.append(time.monotonic() - began)

    server.tele_cmd_vel.subscribe(stop_from_inside)
    server.start()
    with client(server) as driver:
        driver.send(twist(linear_x=0.5))
        rec.wait_twists(1)
        outside = threading.Thread(target=server.stop)
        outside.start()
        outside.join(timeout=10)
        assert not outside.is_alive(), "stop() did not return"
    wait_until(lambda: stopped_inside, what="the subscriber's own stop() to return")
    assert rec.twists == [Twist(Vector3(0.5, 0, 0), Vector3()), Twist.zero()]
    assert not server.is_running


def test_stop_from_many_threads_at_once() -> None:
    server = RerunWebSocketServer(port=0)
    server.start()
    barrier = threading.Barrier(8)

    def stop() -> None:
        barrier.wait(5)
        server.stop()

    threads = [threading.Thread(target=stop) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert not server.is_running and server.state.value == "stopped"
    server.start()  # and it can start again
    with client(server) as ws:
        ws.send('{"type":"stop"}')
    server.stop()


def test_a_raw_client_sees_the_bridge_answer_a_ping() -> None:
    with RerunWebSocketServer(port=0) as server, RawClient(server.bound_port or 0) as raw:
        raw.send(frame(PING, b"hello"))
        # The bridge's own frames may come first (its round-trip ping, a status frame): find the pong.
        data = raw.leftover
        deadline = time.monotonic() + 5
        while b"\x8a\x05hello" not in data:
            assert time.monotonic() < deadline, data
            data += raw.sock.recv(4096)

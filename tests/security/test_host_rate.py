"""The message budget is per host as well as per connection: more connections do not buy more messages."""

from __future__ import annotations

import json
import time

from tests.conftest import BridgeFactory, recv_json, twist, wait_until
from tests.raw_ws import RawClient, frame
from viewer_bridge import Twist, Vector3

TEXT = 1


def clicks(n: int, x: float = 0.0) -> bytes:
    return b"".join(frame(TEXT, json.dumps({"type": "click", "x": x, "y": i, "z": 0}).encode()) for i in range(n))


def test_six_connections_from_one_host_share_one_budget(bridge_factory: BridgeFactory) -> None:
    # Lowered from the defaults (200/s, burst 400 per connection; twice that per host) to keep the test short.
    server, rec = bridge_factory(rate_limit=20, rate_burst=40)
    host_rate, host_burst = 40, 80  # twice the connection's, by default
    conns = [RawClient(server.bound_port or 0) for _ in range(6)]
    try:
        started = time.monotonic()
        for conn in conns:
            conn.send(clicks(100))
        wait_until(lambda: server.snapshot().rejects["rate_limited"] + len(rec.points) >= 600, timeout=10,
                   what="every click to be published or dropped")
        elapsed = time.monotonic() - started
    finally:
        for conn in conns:
            conn.close()
    published = len(rec.points)
    # Per connection only, six connections would get 6 x 40 through at once; per host they share 80 and its refill.
    assert published <= host_burst + host_rate * elapsed + 1, (published, elapsed)
    assert published < 6 * 40
    assert server.snapshot().rejects["rate_limited"] == 600 - published


def test_the_default_budget_is_per_host_too(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory()
    conns = [RawClient(server.bound_port or 0) for _ in range(6)]
    try:
        for conn in conns:
            conn.send(clicks(450))  # each within its own burst of 400 (almost): 2,400 would get through
        wait_until(lambda: server.snapshot().rejects["rate_limited"] + len(rec.points) >= 2700, timeout=15,
                   what="every click to be published or dropped")
    finally:
        for conn in conns:
            conn.close()
    assert len(rec.points) < 2400 * 0.6, len(rec.points)


def test_a_browser_tab_and_the_viewer_on_one_machine_never_hit_it(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory()
    with RawClient(server.bound_port or 0) as viewer, RawClient(server.bound_port or 0) as tab:
        # The viewer's reconnect flush (up to 256 queued messages at once) and a page's 25 changes a second.
        viewer.send(clicks(256, x=1))
        tab.send(clicks(50, x=2))
        wait_until(lambda: len(rec.points) >= 306, timeout=10, what="every click")
    assert server.snapshot().rejects.get("rate_limited", 0) == 0


def test_stop_and_zero_twists_pass_an_exhausted_host_budget(bridge_factory: BridgeFactory) -> None:
    # A refill of one message every 5 s: the spent budget stays spent while the test looks.
    server, rec = bridge_factory(rate_limit=0.1, rate_burst=40, deadman_timeout=30)
    port = server.bound_port or 0
    with RawClient(port) as driver, RawClient(port) as flood, RawClient(port) as flood2:
        driver.send(frame(TEXT, twist(linear_x=0.5).encode()))
        rec.wait_twists(1)
        flood.send(clicks(100))  # 40 of them spend this connection's burst, and half the host's
        flood2.send(clicks(100))  # and the other half
        wait_until(lambda: server.snapshot().rejects["rate_limited"] >= 100, what="the host budget to run out")
        driver.send(frame(TEXT, twist(linear_x=0.6).encode()))  # a non-zero twist: dropped, the budget is spent
        driver.send(frame(TEXT, twist().encode()))  # the zero: never dropped
        rec.wait_twists(2)
        driver.send(frame(TEXT, twist(linear_x=0.7).encode()))
        driver.send(frame(TEXT, b'{"type":"stop"}'))
        wait_until(lambda: server.snapshot().frames["stop"] == 1, what="the stop")
    assert rec.twists[0] == Twist(Vector3(0.5, 0, 0), Vector3())
    assert rec.twists[1] == Twist.zero()
    assert Twist(Vector3(0.6, 0, 0), Vector3()) not in rec.twists


def test_another_host_keeps_its_own_budget(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(rate_limit=20, rate_burst=40)
    port = server.bound_port or 0
    with RawClient(port, source="127.0.0.2") as a, RawClient(port, source="127.0.0.2") as b:
        a.send(clicks(100))
        b.send(clicks(100))
        wait_until(lambda: server.snapshot().rejects["rate_limited"] >= 100, what="127.0.0.2's budget to run out")
        with RawClient(port, source="127.0.0.3") as other:
            other.send(clicks(30, x=3))
            wait_until(lambda: len([p for p in rec.points if p.x == 3]) == 30, what="the other host's clicks")


def test_the_error_says_which_budget_ran_out(bridge_factory: BridgeFactory) -> None:
    from websockets.sync.client import connect

    server, rec = bridge_factory(rate_limit=20, rate_burst=40)
    port = server.bound_port or 0
    with RawClient(port) as first, RawClient(port) as other, connect(server.websocket_url(), open_timeout=5) as third:
        first.send(clicks(40))
        other.send(clicks(40))  # the host's 80 are spent; the third connection's own 40 are not
        wait_until(lambda: len(rec.points) >= 80, what="the first two bursts")
        for _ in range(10):
            third.send(json.dumps({"type": "click", "x": 0, "y": 0, "z": 0}))
        error = recv_json(third)
    assert error["reason"] == "rate_limited" and "from your address, over all its connections" in error["detail"]


def test_host_rate_limit_zero_turns_it_off(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(rate_limit=20, rate_burst=40, host_rate_limit=0)
    conns = [RawClient(server.bound_port or 0) for _ in range(4)]
    try:
        for conn in conns:
            conn.send(clicks(40))
        wait_until(lambda: len(rec.points) >= 160, what="all four connections' full bursts")
    finally:
        for conn in conns:
            conn.close()


def test_reconnecting_does_not_refill_the_host_budget(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(rate_limit=20, rate_burst=40)
    for _ in range(4):
        with RawClient(server.bound_port or 0) as conn:
            conn.send(clicks(40))
            conn.send(frame(8, b"\x03\xe8"))
            conn.read_close()
    wait_until(lambda: server.snapshot().rejects["rate_limited"] + len(rec.points) >= 160, what="every click")
    assert len(rec.points) < 160

"""A handshake storm from one address: past its connection budget each request gets 429 and nothing more."""

from __future__ import annotations

import json
import logging

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import BridgeFactory, wait_until
from tests.security.conftest import get, http
from viewer_bridge import Bool


def test_an_address_over_its_connection_budget_gets_429_and_others_do_not(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(connect_rate=0.1, connect_burst=4)
    port = server.bound_port or 0
    assert [get(port, "/healthz", source="127.0.0.2").status for _ in range(4)] == [200] * 4
    refused = get(port, "/healthz", source="127.0.0.2")
    assert refused.status == 429
    assert refused.headers["retry-after"] == "10"  # one connection per 10 s, rounded up
    assert json.loads(refused.body) == {
        "type": "error",
        "status": 429,
        "reason": "too many new connections from 127.0.0.2 (connect_rate 0.1/s); retry in 10 s",
    }
    # A WebSocket handshake is a connection like any other.
    with pytest.raises(InvalidStatus) as handshake:
        connect(f"ws://127.0.0.1:{port}/ws", source_address=("127.0.0.2", 0), open_timeout=5)
    assert handshake.value.response.status_code == 429
    # Another address has a budget of its own.
    with connect(f"ws://127.0.0.1:{port}/ws", source_address=("127.0.0.3", 0), open_timeout=5) as ws:
        ws.send('{"type":"heartbeat"}')
    snapshot = server.snapshot()
    assert snapshot.connect_throttled == 2 and snapshot.http_refused.get(429, 0) == 0
    metrics = get(port, "/metrics", source="127.0.0.3").body.decode()
    assert "\nviewer_bridge_connect_throttled_total 2.0\n" in metrics


def test_refused_attempts_spend_nothing_so_the_address_gets_in_when_its_budget_refills(
    bridge_factory: BridgeFactory,
) -> None:
    server, _ = bridge_factory(connect_rate=2.0, connect_burst=1)
    port = server.bound_port or 0
    assert get(port, "/healthz", source="127.0.0.2").status == 200
    statuses: list[int] = []

    def admitted() -> bool:
        statuses.append(get(port, "/healthz", source="127.0.0.2").status)
        return statuses[-1] == 200

    # Retrying as fast as it can: had each refusal spent a token, it would never get in.
    wait_until(admitted, timeout=10, interval=0.01, what=lambda: f"a connection admitted ({statuses[-5:]})")
    assert set(statuses[:-1]) == {429} and len(statuses) >= 2
    assert server.snapshot().connect_throttled == len(statuses) - 1


def test_a_storm_is_logged_as_a_summary(bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="viewer_bridge")
    server, _ = bridge_factory(connect_rate=0.01, connect_burst=1)
    port = server.bound_port or 0
    statuses = [get(port, "/healthz", source="127.0.0.2").status for _ in range(100)]
    assert statuses == [200] + [429] * 99
    lines = [r.getMessage() for r in caplog.records if "connect_rate" in r.getMessage()]
    assert lines == [
        "HTTP 429 to 127.0.0.2: too many new connections from 127.0.0.2 (connect_rate 0.01/s); retry in 100 s"
    ]


def test_the_budget_can_be_turned_off(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(connect_rate=0, connect_burst=1)
    port = server.bound_port or 0
    assert {get(port, "/healthz", source="127.0.0.2").status for _ in range(50)} == {200}
    assert server.snapshot().connect_throttled == 0


def test_a_stop_or_an_estop_is_never_held_back_by_the_connection_budget(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(connect_rate=0.01, connect_burst=1)
    port = server.bound_port or 0
    assert get(port, "/healthz", source="127.0.0.2").status == 200
    assert get(port, "/healthz", source="127.0.0.2").status == 429  # the budget is spent
    body = b'{"reason":"drill"}'
    latch = http(
        port,
        f"POST /estop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode() + body,
        source="127.0.0.2",
    )
    assert latch.status == 200, latch
    wait_until(lambda: rec.of("estop") == [Bool(True)], what="the latch on the estop stream")
    stop = http(
        port, f"POST /stop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode(),
        source="127.0.0.2",
    )
    assert stop.status == 200, stop
    assert get(port, "/healthz", source="127.0.0.2").status == 429  # and they spent nothing
    assert server.snapshot().connect_throttled == 2
    wait_until(lambda: server.snapshot().zeros.get("stop") == 1, what="the stop's zero")

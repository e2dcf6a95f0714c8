"""Speed limits that follow the link: a ViewerClient reaches the bridge through a delaying TCP proxy.

The proxy (:mod:`tests.delay_proxy`) holds every byte for half the wanted
round trip in each direction, so the bridge's own WebSocket pings measure
it. With the default curve (full speed up to 150 ms, linearly down to 0.3 at
600 ms, refused beyond 1.5 s), 50/300/800/2000 ms give 1.0/0.77/0.3/refused:
checked in the status frame (``rtt_ms``, ``speed_factor``), in what is
published, and in ``/metrics``. Nothing here asserts how long anything took;
the round trip the proxy makes is at least its delay, and the factor is
checked against the curve at the round trip the bridge measured. (The
factory's bridges run without link limits unless asked: these ask.)
"""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from tests.conftest import BridgeFactory
from tests.delay_proxy import DelayProxy
from viewer_bridge import RerunWebSocketServer, Twist, Vector3
from viewer_bridge.clients.client import ServerError, ViewerClient
from viewer_bridge.core.link import LinkLimits

DEFAULTS = LinkLimits()


def slow_client(proxy: DelayProxy) -> ViewerClient:
    # Every call waits a few round trips at most; 2 s ones need more than the defaults.
    return ViewerClient(proxy.url(), timeout=30, open_timeout=15, close_timeout=15)


def metric(server: RerunWebSocketServer, name: str, client: str) -> float | None:
    with urllib.request.urlopen(server.http_url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'^{name}\{{client="{re.escape(client)}"\}} (\S+)$', text, re.M)
    return None if found is None else float(found.group(1))


@pytest.mark.parametrize(
    ("rtt_ms", "expected"), [(50, 1.0), (300, 0.77), (800, 0.3), (2000, None)], ids=["50ms", "300ms", "800ms", "2s"]
)
def test_the_round_trip_sets_the_speed_factor(
    bridge_factory: BridgeFactory, rtt_ms: int, expected: float | None
) -> None:
    server, rec = bridge_factory(link_limits=True)
    assert server.bound_port is not None
    with DelayProxy(("127.0.0.1", server.bound_port), delay=rtt_ms / 2000) as proxy, slow_client(proxy) as client:
        status = client.wait_status(lambda s: s.rtt_ms is not None, timeout=20)
        assert status.rtt_ms is not None
        print(f"proxy round trip {rtt_ms} ms: the bridge measured {status.rtt_ms} ms, factor {status.speed_factor}")
        assert status.rtt_ms >= rtt_ms  # the proxy is never faster than its delay
        # The status's factor is the curve's at the round trip the bridge measured.
        curve = DEFAULTS.factor_for(status.rtt_ms / 1000)
        assert status.speed_factor == (None if curve is None else pytest.approx(curve, abs=0.001))
        client.twist(linear_x=1.0, angular_z=0.5)
        if expected is None:
            assert status.speed_factor is None
            with pytest.raises(ServerError) as caught:
                client.sync(20)
            assert caught.value.reason == "link_too_slow"
            assert "over the 1500 ms that driving allows" in caught.value.detail
            assert rec.twists == []
            return
        client.sync(20)
        assert curve is not None
        # On an idle machine the proxy's delay is the round trip, and the factor is the nominal one; a busy
        # machine adds to the round trip, so what is checked is the factor at the round trip measured (the
        # estimate may move a little between that status and the twist).
        if status.rtt_ms < rtt_ms * 1.1:
            assert curve == pytest.approx(expected, abs=0.03)
        (published,) = rec.twists
        # Scaled by the link's factor after the limits: both axes alike.
        assert published.linear.x == pytest.approx(curve, abs=0.03)
        assert published.angular.z == pytest.approx(published.linear.x / 2)
        assert (published.linear.y, published.linear.z, published.angular.x, published.angular.y) == (0, 0, 0, 0)
        factor = metric(server, "viewer_bridge_client_speed_factor", "#0001")
        assert factor == pytest.approx(curve, abs=0.03)
        client.stop()
        client.sync(20)
    assert rec.twists[-1] == Twist.zero()


def test_link_limits_off_drive_at_full_speed_on_a_slow_link(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(link_limits=False)
    assert server.bound_port is not None
    with DelayProxy(("127.0.0.1", server.bound_port), delay=0.4) as proxy, slow_client(proxy) as client:
        status = client.wait_status(lambda s: s.rtt_ms is not None, timeout=20)
        assert status.rtt_ms is not None and status.rtt_ms >= 800 and status.speed_factor == 1.0
        client.twist(linear_x=1.0, timestamp_ms=int(time.time() * 1000) - 5000)  # old, and not checked
        client.sync(20)
    assert rec.twists == [Twist(Vector3(1.0, 0, 0), Vector3()), Twist.zero()]


def test_a_command_that_sat_in_a_queue_is_stale_through_a_slow_link(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(link_limits=True)
    assert server.bound_port is not None
    with DelayProxy(("127.0.0.1", server.bound_port), delay=0.15) as proxy, slow_client(proxy) as client:
        client.wait_status(lambda s: s.rtt_ms is not None, timeout=20)
        # Fresh commands arrive half a round trip after they were sent: within the 0.5 s allowed.
        for _ in range(3):
            client.twist(linear_x=1.0)
        client.sync(20)
        assert len(rec.twists) == 3
        # One stamped a second earlier spent that second somewhere on the way: refused.
        client.twist(linear_x=1.0, timestamp_ms=int(time.time() * 1000) - 1000)
        with pytest.raises(ServerError) as caught:
            client.sync(20)
        assert caught.value.reason == "stale" and caught.value.field == "timestamp_ms"
        client.stop()
        client.sync(20)
    assert len(rec.twists) == 4 and rec.twists[-1] == Twist.zero()

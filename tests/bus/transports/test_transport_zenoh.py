"""The Zenoh transport against real Zenoh sessions on 127.0.0.1, checked by a plain zenoh subscriber.

Every session here has multicast scouting off and explicit TCP endpoints on
free ports, so tests running side by side never find each other.
"""

from __future__ import annotations

import logging
import threading

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    PlainZenoh,
    free_port,
    require_zenoh,
    running_bridge,
    unique_name,
    warm_up_zenoh,
)
from tests.conftest import wait_until
from viewer_bridge.bus.transports import TransportError
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3
from viewer_bridge.core.topics import Topic
from viewer_bridge.server.metrics import render_metrics


@pytest.fixture(autouse=True)
def _zenoh_available() -> None:
    require_zenoh()


def _endpoint() -> str:
    return f"tcp/127.0.0.1:{free_port()}"


def _zenoh_bridge(endpoint: str, **settings: object):  # type: ignore[no-untyped-def]
    return running_bridge(transports=["zenoh"], zenoh_listen=[endpoint], zenoh_multicast_scouting=False, **settings)


def _twist_fields(data: bytes) -> tuple[float, ...]:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    msg = LcmTwist.lcm_decode(data)
    return (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z)


@pytest.mark.parametrize("renamed", [False, True])
def test_bridge_publishes_dimos_keys_with_lcm_payloads(renamed: bool) -> None:
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped
    from dimos_lcm.std_msgs import Bool as LcmBool

    ns = unique_name("ns")
    if renamed:
        settings: dict[str, object] = {"remap": {"tele_cmd_vel": "cmd_vel"}, "namespace": f"{ns}/robot1"}
        root = f"dimos/{ns}/robot1"
        tele, click, stop = (
            f"{root}/cmd_vel/geometry_msgs.Twist",
            f"{root}/clicked_point/geometry_msgs.PointStamped",
            f"{root}/stop_movement/std_msgs.Bool",
        )
    else:
        settings = {}
        tele = "dimos/tele_cmd_vel/geometry_msgs.Twist"
        click = "dimos/clicked_point/geometry_msgs.PointStamped"
        stop = "dimos/stop_movement/std_msgs.Bool"
    endpoint = _endpoint()
    with (
        _zenoh_bridge(endpoint, **settings) as bridge,
        PlainZenoh("dimos/**", connect=[endpoint]) as bus,
        Driver(bridge.websocket_url()) as viewer,
    ):
        warm_up_zenoh(viewer, bus, tele)
        viewer.twist(linear_x=0.5, angular_z=0.8)
        key, data = bus.get()
        assert key == stop
        assert LcmBool.lcm_decode(data).data is True
        assert _twist_fields(bus.get_on(tele)) == (0.5, 0.0, 0.0, 0.0, 0.0, 0.8)
        viewer.stop()
        data = bus.get_on(tele)
        assert len(data) == 56
        assert _twist_fields(data) == (0.0,) * 6
        viewer.click(3.5, -1.0, 0.25, timestamp_ms=1_700_000_000_500)
        msg = LcmPointStamped.lcm_decode(bus.get_on(click))
        assert (msg.point.x, msg.point.y, msg.point.z) == (3.5, -1.0, 0.25)
        assert (msg.header.stamp.sec, msg.header.stamp.nsec, msg.header.frame_id) == (
            1_700_000_000,
            500_000_000,
            "world",
        )


def test_quality_of_service_per_message_kind() -> None:
    import zenoh

    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    transport = ZenohTransport(listen=[_endpoint()], multicast_scouting=False)
    transport.start()
    try:
        twist = Topic("tele_cmd_vel", "tele_cmd_vel", Twist)
        flag = Topic("stop_movement", "stop_movement", Bool)
        click = Topic("clicked_point", "clicked_point", PointStamped)
        transport.publish(twist, Twist.zero())
        transport.publish(flag, Bool(True))
        transport.publish(click, PointStamped(1, 2, 3, 4.0))
        publishers = transport._publishers
        # Commands: latest wins. Clicks: a lost click is a lost goal.
        for topic in (twist, flag):
            assert publishers[topic.zenoh_key].congestion_control == zenoh.CongestionControl.DROP
        assert publishers[click.zenoh_key].congestion_control == zenoh.CongestionControl.BLOCK
        assert publishers[click.zenoh_key].reliability == zenoh.Reliability.RELIABLE
    finally:
        transport.close()
        transport.close()


def test_transport_receives_a_topic_and_everything_under_a_namespace() -> None:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist
    from dimos_lcm.geometry_msgs import Vector3 as LcmVector3

    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    ns = unique_name("ns")
    endpoint = _endpoint()
    transport = ZenohTransport(listen=[endpoint], multicast_scouting=False)
    transport.start()
    topic = Topic("nav_cmd_vel", f"{ns}/nav_cmd_vel", Twist)
    one: list[object] = []
    everything: list[tuple[str, object]] = []
    got_bool = threading.Event()

    def on_all(t: Topic, message: object) -> None:
        everything.append((t.name, message))
        if isinstance(message, Bool):
            got_bool.set()

    try:
        transport.subscribe(topic, one.append)
        transport.subscribe_all(on_all, namespace=ns)
        with PlainZenoh("nothing/here", connect=[endpoint]) as peer:
            payload = LcmTwist(LcmVector3(0.25, 0.0, 0.0), LcmVector3(0.0, 0.0, 0.5)).lcm_encode()
            # The routes to our two subscriptions reach the plain session a moment after it connects, each
            # in its own time: wait until both have heard the twist.
            wait_until(
                lambda: peer.publish(topic.zenoh_key, payload)
                or (one and any(name == topic.name for name, _ in everything)),
                what="the Zenoh routes to both subscriptions",
            )
            peer.publish(f"dimos/{ns}/nav_cmd_vel/geometry_msgs.Twist", b"garbage")
            peer.publish(f"dimos/{ns}/camera/sensor_msgs.Image", b"\x00" * 8)
            peer.publish("dimos/other/flag/std_msgs.Bool", Bool(True).lcm_encode())
            peer.publish(f"dimos/{ns}/deep/flag/std_msgs.Bool", Bool(True).lcm_encode())
            assert got_bool.wait(5)
        assert one[0] == Twist(Vector3(0.25, 0, 0), Vector3(0, 0, 0.5))
        assert all(m == one[0] for m in one)
        assert transport.decode_errors >= 1  # the garbage, refused by both subscriptions
        names = {name for name, _ in everything}
        assert names == {f"{ns}/nav_cmd_vel", f"{ns}/deep/flag"}
    finally:
        transport.close()


def test_client_mode_without_a_router_fails_at_start_with_a_fix() -> None:
    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    transport = ZenohTransport(mode="client", connect=[_endpoint()], multicast_scouting=False)
    with pytest.raises(TransportError, match="router") as info:
        transport.start()
    assert "zenohd" in str(info.value) and "at /" not in str(info.value)


def test_a_busy_listen_port_fails_at_start_with_a_fix() -> None:
    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    endpoint = _endpoint()
    first = ZenohTransport(listen=[endpoint], multicast_scouting=False)
    first.start()
    try:
        with pytest.raises(TransportError, match="pick another port"):
            ZenohTransport(listen=[endpoint], multicast_scouting=False).start()
    finally:
        first.close()


def test_bad_endpoint_and_mode() -> None:
    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    with pytest.raises(TransportError, match="tcp/HOST:PORT"):
        ZenohTransport(connect=["nonsense"], multicast_scouting=False).start()
    with pytest.raises(TransportError, match="peer"):
        ZenohTransport(mode="router")


def test_an_absent_peer_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    from viewer_bridge.bus.transports.zenoh import ZenohTransport

    transport = ZenohTransport(connect=[_endpoint()], listen=[_endpoint()], multicast_scouting=False)
    with caplog.at_level(logging.WARNING, logger="viewer_bridge.bus.transports.zenoh"):
        transport.start()
    try:
        assert "no peer reachable" in caplog.text
        transport.publish(Topic("tele_cmd_vel", "tele_cmd_vel", Twist), Twist.zero())  # goes nowhere, fine
    finally:
        transport.close()


def test_a_failure_mid_run_is_counted_reported_by_healthz_and_the_websocket_side_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = _endpoint()
    with _zenoh_bridge(endpoint) as bridge, Driver(bridge.websocket_url()) as viewer:
        received: list[Twist] = []
        bridge.tele_cmd_vel.subscribe(received.append)
        transport = bridge.server.transports[0]
        # The bus goes away under the bridge (as when the Zenoh session dies).
        transport._session.close()
        with caplog.at_level(logging.ERROR, logger="viewer_bridge.bus.lanes"):
            viewer.twist(linear_x=0.4)
            viewer.twist(linear_x=0.5)
            wait_until(lambda: len(received) == 2, what="in-process delivery")

            def failures(stream: str) -> int:
                return bridge.snapshot().deliveries.get((stream, "zenoh"), (0, 0))[1]

            # The command lane keeps only the newest twist it has not sent yet: one or two attempts.
            wait_until(lambda: failures("tele_cmd_vel") >= 1 and failures("stop_movement") == 1, what="failures")
        assert "zenoh-commands: publishing" in caplog.text
        assert caplog.text.count("zenoh-commands: publishing") == 1  # rate-limited log
        health = bridge.server.health()
        assert health["up"] is False and not health["transports"]["zenoh"]["ok"]
        assert "zenoh-commands: publishing fails" in health["problems"][0]
        before = failures("tele_cmd_vel")
        viewer.stop()
        wait_until(lambda: len(received) == 3 and received[-1].is_zero(), what="the stop")
        wait_until(lambda: failures("tele_cmd_vel") == before + 1, what="the zero's failure")
        assert bridge.is_running
        assert "the last zero twist failed" in bridge.server.health()["problems"][0]
        text = render_metrics(bridge.server.registry).decode()
        assert f'viewer_bridge_publish_failures_total{{stream="tele_cmd_vel",transport="zenoh"}} {before + 1}.0' in text

"""The LCM transport against a real LCM bus on loopback multicast, checked by an independent decoder.

The subscriber is plain ``lcm`` and the decoding is ``dimos_lcm``'s own
generated classes, so these tests pin DimOS's wire format: channel names,
fingerprints and field layout.
"""

from __future__ import annotations

import math
import threading

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    PlainLcm,
    require_lcm,
    running_bridge,
    unique_lcm_url,
    unique_name,
)
from tests.conftest import wait_until
from viewer_bridge.bus.transports import TransportError
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3
from viewer_bridge.core.topics import Topic


@pytest.fixture(autouse=True)
def _lcm_available() -> None:
    require_lcm()


def _twist_fields(data: bytes) -> tuple[float, ...]:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    msg = LcmTwist.lcm_decode(data)
    return (msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y, msg.angular.z)


@pytest.mark.parametrize(
    ("remap", "namespace", "tele", "click", "stop"),
    [
        (
            {},
            "",
            "/tele_cmd_vel#geometry_msgs.Twist",
            "/clicked_point#geometry_msgs.PointStamped",
            "/stop_movement#std_msgs.Bool",
        ),
        (
            {"tele_cmd_vel": "cmd_vel", "clicked_point": "goal"},
            "robot1",
            "/robot1/cmd_vel#geometry_msgs.Twist",
            "/robot1/goal#geometry_msgs.PointStamped",
            "/robot1/stop_movement#std_msgs.Bool",
        ),
    ],
)
def test_bridge_publishes_dimos_wire_format(
    remap: dict[str, str], namespace: str, tele: str, click: str, stop: str
) -> None:
    from dimos_lcm.geometry_msgs import PointStamped as LcmPointStamped
    from dimos_lcm.std_msgs import Bool as LcmBool

    url = unique_lcm_url()
    with (
        PlainLcm(url, ".*#.*") as bus,
        running_bridge(transports=["lcm"], lcm_url=url, remap=remap, namespace=namespace) as bridge,
        Driver(bridge.websocket_url()) as viewer,
    ):
        viewer.twist(linear_x=0.5, angular_z=0.8, linear_y=-0.25)
        # A drive starts with stop_movement (navigation yields), then the command.
        name, data = bus.get()
        assert name == stop
        assert LcmBool.lcm_decode(data).data is True
        assert _twist_fields(bus.get_on(tele)) == (0.5, -0.25, 0.0, 0.0, 0.0, 0.8)
        viewer.twist(linear_x=1.0, angular_z=-0.8)
        data = bus.get_on(tele)
        assert len(data) == 56  # 8-byte fingerprint + 6 doubles (docs/transports.md)
        assert _twist_fields(data) == (1.0, 0.0, 0.0, 0.0, 0.0, -0.8)
        viewer.stop()
        assert _twist_fields(bus.get_on(tele)) == (0.0,) * 6
        viewer.click(1.25, -2.5, 0.125, entity_path="/world/map", timestamp_ms=1_700_000_000_250)
        msg = LcmPointStamped.lcm_decode(bus.get_on(click))
        assert (msg.point.x, msg.point.y, msg.point.z) == (1.25, -2.5, 0.125)
        assert (msg.header.stamp.sec, msg.header.stamp.nsec) == (1_700_000_000, 250_000_000)
        assert msg.header.frame_id == "world"  # the configured frame, not the entity path

        def counts() -> dict[tuple[str, str], tuple[int, int]]:
            return bridge.snapshot().deliveries

        # A lane counts after publish() returns, which may be just after the listener saw the message.
        expected = {("clicked_point", "lcm"): (1, 0), ("tele_cmd_vel", "lcm"): (3, 0), ("stop_movement", "lcm"): (1, 0)}
        wait_until(lambda: counts() == expected, what=lambda: f"the counts to be {expected}, not {counts()}")


def test_our_decoder_agrees_with_dimos_lcm() -> None:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist
    from dimos_lcm.geometry_msgs import Vector3 as LcmVector3

    ours = Twist(Vector3(0.5, -0.25, 0.0), Vector3(0.0, 0.0, 0.8))
    theirs = LcmTwist(LcmVector3(0.5, -0.25, 0.0), LcmVector3(0.0, 0.0, 0.8))
    assert ours.lcm_encode() == theirs.lcm_encode()
    assert Twist.lcm_decode(theirs.lcm_encode()) == ours


def test_transport_receives_one_topic_and_counts_bad_payloads() -> None:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist
    from dimos_lcm.geometry_msgs import Vector3 as LcmVector3

    from viewer_bridge.bus.transports.lcm import LcmTransport

    url = unique_lcm_url()
    topic = Topic("nav_cmd_vel", f"{unique_name()}/nav_cmd_vel", Twist)
    transport = LcmTransport(url)
    transport.start()
    got: list[Twist] = []
    arrived = threading.Event()

    def on_message(message: object) -> None:
        assert isinstance(message, Twist)
        got.append(message)
        arrived.set()

    try:
        unsubscribe = transport.subscribe(topic, on_message)
        with PlainLcm(url, "$^") as publisher:
            publisher.publish(topic.lcm_channel, b"not an LCM Twist")
            publisher.publish("/other#geometry_msgs.Twist", LcmTwist(LcmVector3(9, 9, 9), LcmVector3()).lcm_encode())
            publisher.publish(
                topic.lcm_channel, LcmTwist(LcmVector3(0.3, 0.0, 0.0), LcmVector3(0.0, 0.0, -0.1)).lcm_encode()
            )
            assert arrived.wait(5)
            assert got == [Twist(Vector3(0.3, 0, 0), Vector3(0, 0, -0.1))]
            # LCM delivers in order on one socket, so the garbage came (and was refused) first.
            assert transport.decode_errors == 1
        unsubscribe()
        unsubscribe()  # idempotent
    finally:
        transport.close()
        transport.close()


def test_subscribe_all_sees_only_bridge_types_under_the_namespace() -> None:
    from viewer_bridge.bus.transports.lcm import LcmTransport

    url = unique_lcm_url()
    ns = unique_name("ns")
    transport = LcmTransport(url)
    transport.start()
    seen: list[tuple[str, object]] = []
    done = threading.Event()

    def on_message(topic: Topic, message: object) -> None:
        seen.append((topic.name, message))
        if isinstance(message, Bool):
            done.set()

    try:
        transport.subscribe_all(on_message, namespace=f"/{ns}/")
        with PlainLcm(url, "$^") as publisher:
            publisher.publish("/other/cmd_vel#geometry_msgs.Twist", Twist(Vector3(1, 0, 0)).lcm_encode())
            publisher.publish(f"/{ns}/camera#sensor_msgs.Image", b"\x00" * 16)
            publisher.publish(
                f"/{ns}/a/b/goal#geometry_msgs.PointStamped", PointStamped(1, 2, 3, 4.5, "map").lcm_encode()
            )
            publisher.publish(f"/{ns}/stop_movement#std_msgs.Bool", Bool(True).lcm_encode())
            assert done.wait(5)
        assert seen == [(f"{ns}/a/b/goal", PointStamped(1, 2, 3, 4.5, "map")), (f"{ns}/stop_movement", Bool(True))]
    finally:
        transport.close()


def test_default_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from viewer_bridge.bus.transports.lcm import DIMOS_LCM_URL, LcmTransport

    monkeypatch.delenv("LCM_DEFAULT_URL", raising=False)
    assert LcmTransport().url == DIMOS_LCM_URL == "udpm://239.255.76.67:7667?ttl=0"
    monkeypatch.setenv("LCM_DEFAULT_URL", "udpm://239.255.1.2:7000?ttl=1")
    assert LcmTransport().url == "udpm://239.255.1.2:7000?ttl=1"
    assert LcmTransport("udpm://239.255.3.4:7001").url == "udpm://239.255.3.4:7001"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("udpm://10.1.2.3:7667?ttl=0", "not a multicast address"),
        ("udpm://999.1.1.1:7667", "bad LCM URL"),
        ("bogus://nowhere", "LCM could not start"),
    ],
)
def test_bad_urls_fail_at_start_with_a_reason(url: str, says: str) -> None:
    from viewer_bridge.bus.transports.lcm import LcmTransport

    with pytest.raises(TransportError, match=says):
        LcmTransport(url).start()


def test_bridge_refuses_to_start_on_a_bad_bus_and_says_why() -> None:
    from viewer_bridge import RerunWebSocketServer

    server = RerunWebSocketServer(port=0, transports=["lcm"], lcm_url="udpm://10.1.2.3:7667")
    with pytest.raises(TransportError, match="multicast"):
        server.start()
    assert not server.is_running
    server.stop()


def test_non_finite_stays_off_the_bus() -> None:
    # The bridge refuses NaN before it reaches any transport; the bus stays quiet.
    url = unique_lcm_url()
    with (
        PlainLcm(url, ".*#.*") as bus,
        running_bridge(transports=["lcm"], lcm_url=url) as bridge,
        Driver(bridge.websocket_url()) as viewer,
    ):
        viewer.send(type="twist", linear_x=math.inf, angular_z=0.0)
        viewer.send(type="click", x=1.0, y=2.0, z=None, entity_path="/image", timestamp_ms=1)
        viewer.twist(linear_x=0.2)
        # stop_movement first, then the only twist that is valid.
        assert bus.get()[0] == "/stop_movement#std_msgs.Bool"
        assert _twist_fields(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist"))[0] == 0.2
        assert bus.drain() == []

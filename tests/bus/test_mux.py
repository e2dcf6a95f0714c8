"""The cmd_vel mux: its rules with a fake clock, then its wiring live over a real LCM bus and Zenoh.

Live tests drive teleop through a real WebSocket into a running bridge, feed
navigation commands from a plain ``lcm`` (or ``zenoh``) publisher, and read
``cmd_vel`` and ``stop_movement`` back with plain subscribers.
"""

from __future__ import annotations

import math
import time

import pytest

from tests.bus.transports.bus_support import (
    Driver,
    PlainLcm,
    PlainZenoh,
    free_port,
    require_lcm,
    require_zenoh,
    running_bridge,
    unique_lcm_url,
    unique_name,
)
from tests.conftest import wait_until
from viewer_bridge.core.messages import Bool, Twist, Vector3
from viewer_bridge.core.mux import CmdVelMux, MuxOutcome, Source

NAV = Twist(Vector3(0.3, 0, 0), Vector3(0, 0, 0.1))
NAV2 = Twist(Vector3(0.2, 0, 0), Vector3(0, 0, -0.1))
TELE = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0.8))
ZERO = Twist.zero()


# -- the state machine, fake clock ------------------------------------------


def test_navigation_passes_when_nobody_drives() -> None:
    mux = CmdVelMux(cooldown=1.0)
    assert mux.nav(NAV, 10.0) == MuxOutcome(cmd_vel=NAV)
    assert mux.nav(NAV2, 10.1) == MuxOutcome(cmd_vel=NAV2)
    assert mux.source is Source.NAV


def test_teleop_preempts_navigation_and_announces_it_once() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.nav(NAV, 0.0)
    out = mux.teleop(TELE, 0.5)
    assert out == MuxOutcome(cmd_vel=TELE, stop_movement=True, took_over=True)
    # Further teleop while driving: no more stop_movement.
    assert mux.teleop(TELE, 0.6) == MuxOutcome(cmd_vel=TELE)
    # Navigation is dropped while teleop holds the output.
    assert mux.nav(NAV, 0.7) == MuxOutcome(dropped=True)
    assert mux.teleop_active(1.599)


def test_navigation_resumes_exactly_after_the_cooldown() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.teleop(TELE, 2.0)
    assert mux.nav(NAV, 2.999).dropped
    out = mux.nav(NAV, 3.0)  # cooldown measured from the last teleop command
    assert out == MuxOutcome(cmd_vel=NAV, resumed=True)
    assert mux.nav(NAV2, 3.1) == MuxOutcome(cmd_vel=NAV2)


def test_each_teleop_command_extends_the_cooldown() -> None:
    mux = CmdVelMux(cooldown=1.0)
    for t in (0.0, 0.6, 1.2, 1.8):  # the viewer's key-repeat gaps are under the cooldown
        mux.teleop(TELE, t)
        assert mux.nav(NAV, t + 0.55).dropped
    assert mux.nav(NAV, 2.79).dropped
    assert mux.nav(NAV, 2.8).cmd_vel == NAV


def test_teleop_stop_publishes_zero_and_holds_navigation_off() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.nav(NAV, 0.0)
    mux.teleop(TELE, 1.0)
    assert mux.teleop(ZERO, 1.4) == MuxOutcome(cmd_vel=ZERO)
    assert mux.nav(NAV, 2.3).dropped  # 0.9 s after the stop
    assert mux.nav(NAV, 2.4) == MuxOutcome(cmd_vel=NAV, resumed=True)


def test_a_stale_teleop_zero_does_not_interrupt_navigation() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.teleop(TELE, 0.0)
    mux.nav(NAV, 1.5)  # navigation took back over
    # e.g. a deadman longer than the cooldown ending the old drive
    assert mux.teleop(ZERO, 2.0) == MuxOutcome(dropped=True)
    assert mux.nav(NAV, 2.01).cmd_vel == NAV


def test_a_teleop_zero_after_the_cooldown_still_stops_a_robot_teleop_left_moving() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.teleop(TELE, 0.0)
    # Navigation never said anything: the robot is still on teleop's last command.
    assert mux.teleop(ZERO, 5.0) == MuxOutcome(cmd_vel=ZERO)


def test_teleop_after_a_pause_takes_over_again() -> None:
    mux = CmdVelMux(cooldown=1.0)
    mux.teleop(TELE, 0.0)
    mux.nav(NAV, 1.0)
    assert mux.teleop(TELE, 1.5).took_over
    assert mux.teleop(TELE, 3.0).stop_movement  # even with no navigation between


def test_zero_cooldown_and_non_finite_input() -> None:
    mux = CmdVelMux(cooldown=0.0)
    mux.teleop(TELE, 1.0)
    assert mux.nav(NAV, 1.0).cmd_vel == NAV
    bad = Twist(Vector3(math.nan, 0, 0))
    assert mux.nav(bad, 2.0) == MuxOutcome(dropped=True, rejected="non_finite")
    assert mux.teleop(bad, 2.0).rejected == "non_finite"
    with pytest.raises(ValueError, match="cooldown"):
        CmdVelMux(cooldown=-1)
    with pytest.raises(ValueError, match="cooldown"):
        CmdVelMux(cooldown=math.inf)


# -- the wiring, live -------------------------------------------------------


def _fields(data: bytes) -> tuple[float, float]:
    twist = Twist.lcm_decode(data)
    return twist.linear.x, twist.angular.z


def _publish_nav_until_seen(bus: PlainLcm, nav_channel: str, out_channel: str, twist: Twist) -> bytes:
    """Publish navigation until the mux's output shows it (it may still be in its cooldown)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        bus.publish(nav_channel, twist.lcm_encode())
        try:
            return bus.get_on(out_channel, timeout=0.1)
        except AssertionError:
            continue
    raise AssertionError(f"navigation never reached {out_channel}")


def test_mux_live_over_lcm() -> None:
    require_lcm()
    ns = unique_name("ns")
    url = unique_lcm_url()
    nav_channel = f"/{ns}/nav_cmd_vel#geometry_msgs.Twist"
    out_channel = f"/{ns}/cmd_vel#geometry_msgs.Twist"
    stop_channel = f"/{ns}/stop_movement#std_msgs.Bool"
    cooldown = 0.3
    with (
        PlainLcm(url, f"/{ns}/(cmd_vel|stop_movement)#.*") as bus,
        running_bridge(
            transports=["lcm"], lcm_url=url, namespace=ns, mux="nav_cmd_vel", mux_cooldown=cooldown
        ) as bridge,
        Driver(bridge.websocket_url()) as viewer,
    ):
        mux = bridge.mux
        assert mux is not None
        # 1. Navigation alone drives cmd_vel.
        bus.publish(nav_channel, NAV.lcm_encode())
        assert _fields(bus.get_on(out_channel)) == (0.3, 0.1)
        # 2. A person drives: stop_movement (once: the bridge's own), then teleop on cmd_vel.
        viewer.twist(linear_x=0.5, angular_z=0.8)
        assert bus.get() == (stop_channel, Bool(True).lcm_encode())
        assert _fields(bus.get_on(out_channel)) == (0.5, 0.8)
        # 3. Navigation is dropped meanwhile.
        bus.publish(nav_channel, NAV2.lcm_encode())
        wait_until(lambda: mux.nav_dropped == 1, what="the navigation command to be dropped")
        # 4. Teleop stops: one zero on cmd_vel.
        viewer.stop()
        stopped_at = time.monotonic()
        assert _fields(bus.get_on(out_channel)) == (0.0, 0.0)
        # 5. Navigation comes back, but only once the cooldown has run out.
        data = _publish_nav_until_seen(bus, nav_channel, out_channel, NAV2)
        assert time.monotonic() - stopped_at >= cooldown
        assert _fields(data) == (0.2, -0.1)
        assert mux.takeovers == 1
        assert mux.state.source.value == "nav"
        # The takeover was announced once, by the bridge; the mux did not repeat it.
        assert stop_channel not in [name for name, _ in bus.drain()]


def test_mux_announces_a_takeover_the_bridge_did_not() -> None:
    # With a deadman longer than the cooldown, one drive can outlast the cooldown:
    # the bridge sends no new stop_movement, so the mux must.
    require_lcm()
    ns = unique_name("ns")
    url = unique_lcm_url()
    nav_channel = f"/{ns}/nav_cmd_vel#geometry_msgs.Twist"
    out_channel = f"/{ns}/cmd_vel#geometry_msgs.Twist"
    stop_channel = f"/{ns}/stop_movement#std_msgs.Bool"
    with (
        PlainLcm(url, f"/{ns}/(cmd_vel|stop_movement)#.*") as bus,
        running_bridge(
            transports=["lcm"], lcm_url=url, namespace=ns, mux="nav_cmd_vel", mux_cooldown=0.2, deadman_timeout=30.0
        ) as bridge,
        Driver(bridge.websocket_url()) as viewer,
    ):
        viewer.twist(linear_x=0.5)
        assert bus.get()[0] == stop_channel
        bus.get_on(out_channel)
        _publish_nav_until_seen(bus, nav_channel, out_channel, NAV)  # cooldown over, navigation back
        bus.drain()
        viewer.twist(linear_x=0.6)  # same drive, no new lease: only the mux can say it
        assert bus.get() == (stop_channel, Bool(True).lcm_encode())
        assert _fields(bus.get_on(out_channel)) == (0.6, 0.0)
        assert bus.drain() == []
        viewer.stop()
        assert _fields(bus.get_on(out_channel)) == (0.0, 0.0)


def test_mux_live_over_zenoh_and_in_process() -> None:
    require_zenoh()
    ns = unique_name("ns")
    endpoint = f"tcp/127.0.0.1:{free_port()}"
    out_key = f"dimos/{ns}/base/cmd_vel/geometry_msgs.Twist"
    nav_key = f"dimos/{ns}/nav_cmd_vel/geometry_msgs.Twist"
    with (
        running_bridge(
            transports=["zenoh"],
            zenoh_listen=[endpoint],
            zenoh_multicast_scouting=False,
            namespace=ns,
            mux="nav_cmd_vel",
            mux_output="base/cmd_vel",
            mux_cooldown=0.2,
        ) as bridge,
        PlainZenoh(out_key, connect=[endpoint]) as bus,
        Driver(bridge.websocket_url()) as viewer,
    ):
        mux = bridge.mux
        assert mux is not None
        outputs: list[Twist] = []
        mux.cmd_vel.subscribe(outputs.append)
        # Navigation from the Zenoh bus (resent until both routes exist) reaches both outputs.
        deadline = time.monotonic() + 10
        while True:
            bus.publish(nav_key, NAV.lcm_encode())
            try:
                assert Twist.lcm_decode(bus.get_on(out_key, timeout=0.1)) == NAV
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the Zenoh routes never came up"
        wait_until(lambda: NAV in outputs, what="in-process cmd_vel")  # after the bus sink, on the loop
        # In-process navigation works too, from any thread.
        mux.feed_nav(NAV2)
        assert Twist.lcm_decode(bus.get_on(out_key)) == NAV2
        viewer.twist(linear_x=0.5, angular_z=0.8)
        assert Twist.lcm_decode(bus.get_on(out_key)) == TELE
        mux.feed_nav(NAV)
        viewer.stop()
        assert Twist.lcm_decode(bus.get_on(out_key)) == ZERO
        wait_until(lambda: outputs[-1] == ZERO, what="in-process zero")
        assert NAV not in outputs[outputs.index(TELE) :]

"""The fleet's agent state machine with a fake clock, at the boundaries; its keys and codecs, property-tested."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from viewer_bridge.core.fleet import (
    PROTOCOL_VERSION,
    AgentDecision,
    AgentLatch,
    AgentState,
    Ended,
    FleetAgent,
    FleetWireError,
    Holder,
    Kind,
    Order,
    Reply,
    agent_key,
    check_name,
    command_key,
    decode_order,
    decode_reply,
    decode_state,
    encode_order,
    encode_reply,
    encode_state,
    estop_mirror,
    replies_for,
    reply_key,
    robot_of,
    state_key,
    station_key,
    station_of,
)
from viewer_bridge.core.messages import Bool, PointStamped, Twist, Vector3

FWD = Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0))
TURN = Twist(Vector3(0, 0, 0), Vector3(0, 0, 0.8))
ZERO = Twist.zero()
A, B = 0xA, 0xB  # two station processes' epochs


class Station:
    """Builds one station process's orders with increasing sequence numbers."""

    def __init__(self, name: str, epoch: int) -> None:
        self.name, self.epoch, self.seq = name, epoch, 0

    def order(self, kind: Kind, client: str = "#1", drive: int = 0, **payload: Any) -> Order:
        self.seq += 1
        return Order(kind, self.name, self.epoch, self.seq, client, drive, **payload)

    def twist(self, twist: Twist = FWD, client: str = "#1", drive: int = 1) -> Order:
        return self.order(Kind.TWIST, client, drive, twist=twist)

    def release(self, drive: int = 1, client: str = "#1") -> Order:
        return self.order(Kind.RELEASE, client, drive)

    def stop(self, client: str = "#1") -> Order:
        return self.order(Kind.STOP, client)


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.agent = FleetAgent("go2-1", **kwargs)
        self.out: list[tuple[str, object]] = []
        self.decisions: list[AgentDecision] = []

    def _record(self, decision: AgentDecision) -> AgentDecision:
        self.decisions.append(decision)
        self.out.extend(decision.publish)
        return decision

    def receive(self, order: Order, now: float, wall: float = 1_700_000_000.0) -> AgentDecision:
        return self._record(self.agent.receive(order, now, wall))

    def tick(self, now: float) -> AgentDecision:
        return self._record(self.agent.tick(now))

    def take(self) -> list[tuple[str, object]]:
        out, self.out = self.out, []
        return out


def test_first_twist_takes_the_lease_and_announces_stop_movement() -> None:
    h, s = Harness(), Station("control", A)
    d = h.receive(s.twist(), 0.0)
    assert h.take() == [("stop_movement", Bool(True)), ("tele_cmd_vel", FWD)]
    assert d.started == Holder("control", A, "#1", 1) and d.changed
    assert h.agent.holder == d.started and h.agent.next_deadline() == 0.5
    d = h.receive(s.twist(TURN), 0.1)
    assert h.take() == [("tele_cmd_vel", TURN)] and d.started is None and not d.changed


def test_no_announcement_when_turned_off() -> None:
    h, s = Harness(announce_drive=False), Station("control", A)
    h.receive(s.twist(), 0.0)
    assert h.take() == [("tele_cmd_vel", FWD)]


def test_a_command_not_refreshed_gets_exactly_one_zero_at_link_timeout() -> None:
    h, s = Harness(link_timeout=0.5), Station("control", A)
    h.receive(s.twist(), 0.0)
    h.receive(s.twist(), 0.3)
    h.take()
    assert h.tick(0.7999999).publish == ()
    d = h.tick(0.8)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert d.ended is Ended.LAPSED and d.previous == Holder("control", A, "#1", 1)
    assert h.agent.holder is None and h.agent.next_deadline() is None
    assert h.tick(5.0).publish == () and h.take() == []
    assert h.agent.zeros == {"lapsed": 1}


def test_an_order_handled_after_the_deadline_ends_the_old_drive_first() -> None:
    h, s = Harness(link_timeout=0.5), Station("control", A)
    h.receive(s.twist(), 0.0)
    h.take()
    # The timer was late: the refresh at 0.5 is too late to keep the drive.
    d = h.receive(s.twist(TURN), 0.5)
    assert d.ended is Ended.LAPSED
    assert d.reply is not None and d.reply.reason == "lapsed"
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_a_late_order_of_a_lapsed_drive_is_refused_and_a_new_drive_moves_again() -> None:
    h, s = Harness(link_timeout=0.5), Station("control", A)
    h.receive(s.twist(drive=1), 0.0)
    h.tick(0.5)
    h.take()
    # What a cut link's TCP buffer delivers when it comes back: the old drive's orders, in order.
    for t in (1.0, 1.01, 1.02):
        d = h.receive(s.twist(drive=1), t)
        assert d.reply == Reply(PROTOCOL_VERSION, "go2-1", A, s.seq, "#1", 1, "lapsed", None)
        assert d.publish == ()
    assert h.agent.holder is None and h.take() == []
    d = h.receive(s.twist(TURN, drive=2), 1.1)
    assert d.started == Holder("control", A, "#1", 2)
    assert h.take() == [("stop_movement", Bool(True)), ("tele_cmd_vel", TURN)]


def test_older_or_repeated_sequence_numbers_are_dropped() -> None:
    h, s = Harness(), Station("control", A)
    first = s.twist(drive=1)
    second = s.twist(TURN, drive=1)
    h.receive(second, 0.0)
    h.take()
    assert h.receive(first, 0.01).dropped == "stale"
    assert h.receive(second, 0.02).dropped == "stale"
    assert h.take() == [] and h.agent.command == TURN and h.agent.dropped == {"stale": 2}


def test_another_stations_twist_is_refused_naming_who_drives() -> None:
    h, a, b = Harness(), Station("control", A), Station("field", B)
    h.receive(a.twist(client="alice"), 0.0)
    h.take()
    d = h.receive(b.twist(TURN, client="bob"), 0.1)
    assert d.reply is not None and (d.reply.reason, d.reply.who, d.reply.client) == (
        "not_driver",
        "alice at control",
        "bob",
    )
    # A zero from the other station is no stop: nothing happens.
    assert h.receive(b.twist(ZERO, client="bob"), 0.2).publish == ()
    assert h.take() == [] and h.agent.holder is not None and h.agent.holder.client == "alice"


def test_anyones_stop_wins_at_once_and_the_stopped_drive_never_resumes() -> None:
    h, a, b = Harness(), Station("control", A), Station("field", B)
    h.receive(a.twist(client="alice", drive=4), 0.0)
    h.take()
    d = h.receive(b.stop(client="bob"), 0.1)
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert d.ended is Ended.STOP and h.agent.holder is None
    d = h.receive(a.twist(client="alice", drive=4), 0.15)
    assert d.reply is not None and (d.reply.reason, d.reply.who) == ("stopped_by_other", "bob at field")
    assert h.take() == []
    # The station's release of that drive, when it comes, publishes nothing more.
    assert h.receive(a.release(drive=4, client="alice"), 0.2).publish == ()
    # Its next drive is a new lease.
    assert h.receive(a.twist(client="alice", drive=5), 0.3).started is not None


def test_a_stop_with_nobody_driving_still_publishes_one_zero() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.stop(), 0.0)
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_the_drivers_own_stop_and_release_end_the_drive_with_one_zero() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.twist(drive=1), 0.0)
    h.take()
    assert h.receive(s.release(drive=1), 0.1).ended is Ended.RELEASE
    assert h.take() == [("tele_cmd_vel", ZERO)]
    assert h.receive(s.release(drive=1), 0.2).publish == ()
    h.receive(s.twist(drive=2), 0.3)
    h.take()
    assert h.receive(s.stop(), 0.4).ended is Ended.STOP
    assert h.take() == [("tele_cmd_vel", ZERO)]
    # A late twist of a drive its own station ended is dropped without an answer.
    d = h.receive(s.twist(drive=2), 0.5)
    assert d.dropped == "closed" and d.reply is None and h.take() == []


def test_a_zero_twist_is_the_drives_release() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.twist(drive=1), 0.0)
    h.take()
    assert h.receive(s.twist(ZERO, drive=1), 0.1).ended is Ended.RELEASE
    assert h.take() == [("tele_cmd_vel", ZERO)]


def test_a_release_after_the_lapse_publishes_nothing_more() -> None:
    h, s = Harness(link_timeout=0.5), Station("control", A)
    h.receive(s.twist(drive=1), 0.0)
    h.tick(0.5)
    h.take()
    assert h.receive(s.release(drive=1), 0.6).publish == ()
    assert h.take() == []


def test_the_same_stations_next_drive_takes_over_when_its_release_was_lost() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.twist(client="alice", drive=1), 0.0)
    h.take()
    d = h.receive(s.twist(TURN, client="carol", drive=2), 0.1)
    assert d.started == Holder("control", A, "carol", 2) and d.ended is None
    assert h.take() == [("tele_cmd_vel", TURN)]
    # The lost release, arriving at last, ends nothing.
    assert h.receive(s.release(client="alice", drive=1), 0.2).publish == ()
    assert h.agent.holder == Holder("control", A, "carol", 2)


def test_the_holding_stations_liveliness_gone_gives_one_zero_at_once() -> None:
    h, a = Harness(), Station("control", A)
    h.receive(a.twist(), 0.0)
    h.take()
    assert h.agent.station_gone("field", B, 0.1).publish == ()
    d = h.agent.station_gone("control", A, 0.2)
    assert d.publish == (("tele_cmd_vel", ZERO),) and d.ended is Ended.STATION_GONE
    assert h.agent.holder is None
    # Its late orders are dropped; a stop or e-stop from it still acts.
    assert h.receive(a.twist(drive=2), 0.3).dropped == "gone"
    assert h.receive(a.stop(), 0.4).publish == (("tele_cmd_vel", ZERO),)
    # Back (its link flapped): its new drives count again.
    h.agent.station_back("control", A)
    assert h.receive(a.twist(drive=3), 0.5).started is not None


def test_losing_every_link_gives_one_zero_and_the_drive_stays_closed() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.twist(drive=1), 0.0)
    h.take()
    d = h.agent.link_lost(0.1)
    assert d.publish == (("tele_cmd_vel", ZERO),) and d.ended is Ended.LINK_LOST
    assert h.agent.state(1).linked is False
    assert h.agent.link_lost(0.2).publish == ()
    h.agent.link_back(0.3)
    assert h.receive(s.twist(drive=1), 0.4).reply is not None
    assert h.agent.state(2).linked is True


def test_the_estop_latches_until_cleared_by_anyone() -> None:
    h, a, b = Harness(), Station("control", A), Station("field", B)
    h.receive(a.twist(client="alice", drive=1), 0.0)
    h.take()
    d = h.receive(b.order(Kind.ESTOP, "bob", reason="wall"), 0.1, wall=1000.0)
    assert h.take() == [("estop", Bool(True)), ("tele_cmd_vel", ZERO)]
    assert d.ended is Ended.ESTOP and h.agent.estop == AgentLatch("bob at field", 1000.0, "wall")
    assert h.receive(b.order(Kind.ESTOP, "bob"), 0.15).publish == ()
    d = h.receive(a.twist(client="alice", drive=1), 0.2)
    assert d.reply is not None and (d.reply.reason, d.reply.who) == ("estopped", "bob at field")
    d = h.receive(a.twist(client="alice", drive=2), 0.3)
    assert d.reply is not None and d.reply.reason == "estopped"
    point = PointStamped(1.0, 2.0, 0.0, 5.0, "world")
    d = h.receive(a.order(Kind.CLICK, "alice", point=point), 0.35)
    assert d.reply is not None and d.reply.reason == "estopped" and h.take() == []
    assert h.receive(a.order(Kind.ESTOP_CLEAR, "alice"), 0.4).publish == (("estop", Bool(False)),)
    assert h.receive(a.order(Kind.ESTOP_CLEAR, "alice"), 0.45).publish == ()
    h.take()
    assert h.receive(a.twist(client="alice", drive=3), 0.5).started is not None


def test_an_estop_with_nobody_driving_publishes_one_zero() -> None:
    h, s = Harness(), Station("control", A)
    h.receive(s.order(Kind.ESTOP), 0.0)
    assert h.take() == [("estop", Bool(True)), ("tele_cmd_vel", ZERO)]


def test_clicks_from_anyone_are_published() -> None:
    h, a, b = Harness(), Station("control", A), Station("field", B)
    h.receive(a.twist(client="alice"), 0.0)
    h.take()
    point = PointStamped(1.0, 2.0, 0.25, 5.0, "world")
    h.receive(b.order(Kind.CLICK, "bob", point=point), 0.1)
    assert h.take() == [("clicked_point", point)]


def test_a_non_finite_twist_is_refused() -> None:
    h, s = Harness(), Station("control", A)
    d = h.receive(s.twist(Twist(Vector3(math.nan, 0, 0), Vector3())), 0.0)
    assert d.reply is not None and d.reply.reason == "non_finite" and h.take() == []


def test_shutdown_stops_the_driver() -> None:
    h, s = Harness(), Station("control", A)
    assert h.agent.shutdown(0.0).publish == ()
    h.receive(s.twist(), 0.0)
    assert h.agent.shutdown(0.1).ended is Ended.SHUTDOWN


def test_state_reports_holder_estop_and_what_was_seen() -> None:
    h, s = Harness(link_timeout=0.4, epoch=7), Station("control", A)
    h.receive(s.twist(client="alice", drive=3), 0.0)
    state = h.agent.state(5)
    assert (state.robot, state.agent, state.seq, state.link_timeout) == ("go2-1", 7, 5, 0.4)
    assert state.holder == Holder("control", A, "alice", 3) and state.seen == {A: 1} and state.estop is None


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_link_timeout_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="link_timeout"):
        FleetAgent("go2-1", link_timeout=bad)


# -- the e-stop mirror at stations ------------------------------------------------------------------


def _state(estop: AgentLatch | None, seen: dict[int, int]) -> AgentState:
    return AgentState(PROTOCOL_VERSION, "go2-1", 1, 1, 0.5, None, estop, seen)


def test_estop_mirror() -> None:
    latch = AgentLatch("bob at field", 1.0)
    # Latched elsewhere: mirror it here.
    assert estop_mirror(False, _state(latch, {}), A, 0) == "latch"
    assert estop_mirror(True, _state(latch, {A: 9}), A, 9) is None
    # Cleared elsewhere after the agent saw our latch (seq 9): clear here.
    assert estop_mirror(True, _state(None, {A: 9}), A, 9) == "clear"
    # A state from before the agent saw our own latch or clear changes nothing.
    assert estop_mirror(True, _state(None, {A: 8}), A, 9) is None
    assert estop_mirror(False, _state(latch, {A: 8}), A, 9) is None
    assert estop_mirror(False, _state(None, {}), A, 0) is None


# -- keys --------------------------------------------------------------------------------------------


def test_keys_and_their_parsers() -> None:
    assert command_key("go2-1") == "viewer_bridge/fleet/go2-1/cmd"
    assert state_key("go2-1") == "viewer_bridge/fleet/go2-1/state"
    assert reply_key("go2-1", "control") == "viewer_bridge/fleet/go2-1/reply/control"
    assert replies_for("control") == "viewer_bridge/fleet/*/reply/control"
    assert agent_key("go2-1") == "viewer_bridge/fleet/go2-1/agent"
    assert station_key("control", 0xAB) == "viewer_bridge/station/control/00000000000000ab"
    assert robot_of("viewer_bridge/fleet/go2-1/agent") == "go2-1"
    assert robot_of("dimos/go2-1/agent") is None
    assert station_of("viewer_bridge/station/control/00000000000000ab") == ("control", 0xAB)
    assert station_of("viewer_bridge/station/control/xyz") is None
    assert station_of("viewer_bridge/station/control") is None


@pytest.mark.parametrize("bad", ["", "a/b", "a*", "$x", "-x", ".x", "a b", "x" * 64, "ä"])
def test_bad_names_are_refused_naming_them(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid robot name"):
        check_name("robot", bad)


# -- codecs --------------------------------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
clients = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, categories=["L", "N", "P"]), min_size=1,
                  max_size=30)
u64 = st.integers(0, (1 << 64) - 1)
twists = st.builds(lambda *v: Twist(Vector3(*v[:3]), Vector3(*v[3:])), *[finite] * 6)
points = st.builds(
    PointStamped, finite, finite, finite, st.floats(0, 2e9), st.text(st.characters(min_codepoint=32,
                                                                                   max_codepoint=126), max_size=20)
)


@st.composite
def orders(draw: st.DrawFn) -> Order:
    kind = draw(st.sampled_from(list(Kind)))
    payload: dict[str, Any] = {}
    if kind is Kind.TWIST:
        payload["twist"] = draw(twists)
    elif kind is Kind.CLICK:
        payload["point"] = draw(points)
    elif kind is Kind.ESTOP:
        payload["reason"] = draw(st.none() | st.text(min_size=1, max_size=200))
    return Order(kind, draw(names), draw(u64), draw(u64), draw(clients), draw(u64), **payload)


def _point_close(a: PointStamped | None, b: PointStamped | None) -> bool:
    if a is None or b is None:
        return a is b
    # The LCM stamp is whole nanoseconds.
    return (a.x, a.y, a.z, a.frame_id) == (b.x, b.y, b.z, b.frame_id) and abs(a.ts - b.ts) < 1e-6


@given(orders())
def test_orders_round_trip(order: Order) -> None:
    back = decode_order(encode_order(order))
    assert (back.kind, back.station, back.epoch, back.seq, back.client, back.drive, back.twist, back.reason) == (
        order.kind, order.station, order.epoch, order.seq, order.client, order.drive, order.twist, order.reason,
    )  # fmt: skip
    assert _point_close(back.point, order.point)


def test_a_twist_order_carries_dimos_lcm_bytes() -> None:
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    data = encode_order(Order(Kind.TWIST, "control", 1, 2, "#1", 3, twist=FWD))
    raw = msgspec.msgpack.decode(data)
    assert raw[:7] == [PROTOCOL_VERSION, 1, "control", 1, 2, "#1", 3]
    assert len(raw[7]) == 56 and LcmTwist.lcm_decode(raw[7]).linear.x == 0.5


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_decode_into_anything_but_a_clear_error(data: bytes) -> None:
    for decode in (decode_order, decode_reply, decode_state):
        try:
            decode(data)
        except FleetWireError:
            pass


@given(st.lists(st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=10), st.binary(max_size=60), st.none(),
                          finite), max_size=9))
def test_arbitrary_arrays_never_decode_into_anything_but_a_clear_error(items: list[object]) -> None:
    try:
        decode_order(msgspec.msgpack.encode(items))
    except FleetWireError:
        pass


def _raw(*fields: object) -> bytes:
    return msgspec.msgpack.encode(list(fields))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_raw(2, 1, "s", 1, 1, "c", 1, b""), "version 2"),
        (_raw(1, 9, "s", 1, 1, "c", 1, b""), "unknown order kind 9"),
        (_raw(1, 2, "a/b", 1, 1, "c", 1, b""), "invalid station name 'a/b'"),
        (_raw(1, 2, "s", 1, 1, "", 1, b""), "invalid client name ''"),
        (_raw(1, 2, "s", 1, 1, "c\n", 1, b""), "invalid client name"),
        (_raw(1, 2, "s", -1, 1, "c", 1, b""), "epoch -1 is out of range"),
        (_raw(1, 1, "s", 1, 1, "c", 1, b"\0" * 8), "56-byte LCM Twist, got 8 bytes"),
        (_raw(1, 1, "s", 1, 1, "c", 1, b"\0" * 56), "not an LCM geometry_msgs.Twist"),
        (_raw(1, 6, "s", 1, 1, "c", 1, b"xx"), "not an LCM geometry_msgs.PointStamped"),
        (_raw(1, 4, "s", 1, 1, "c", 1, b"\xff"), "not UTF-8"),
        (_raw(1, 4, "s", 1, 1, "c", 1, b"x" * 201), "at most 200"),
        (_raw(1, 2, "s", 1, 1, "c", 1, b"x"), "a stop order carries no body"),
        (b"\x93\x01", "not a fleet order"),
    ],
)
def test_bad_orders_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(FleetWireError, match=message.replace("(", r"\(")):
        decode_order(data)


@given(
    st.builds(Reply, st.just(PROTOCOL_VERSION), names, u64, u64, clients, u64,
              st.sampled_from(["not_driver", "lapsed", "estopped"]), st.none() | clients)
)
def test_replies_round_trip(reply: Reply) -> None:
    assert decode_reply(encode_reply(reply)) == reply


@given(
    st.builds(
        AgentState, st.just(PROTOCOL_VERSION), names, u64, u64, st.floats(0.01, 10),
        st.none() | st.builds(Holder, names, u64, clients, u64),
        st.none() | st.builds(AgentLatch, clients, st.floats(0, 2e9), st.none() | st.text(max_size=20)),
        st.dictionaries(u64, u64, max_size=4), st.booleans(), st.dictionaries(st.sampled_from(list(Ended)), u64),
    )
)  # fmt: skip
def test_states_round_trip(state: AgentState) -> None:
    assert decode_state(encode_state(state)) == state


def test_a_newer_protocol_version_is_refused_by_name() -> None:
    with pytest.raises(FleetWireError, match="version 2"):
        decode_reply(encode_reply(Reply(2, "r", 1, 1, "c", 1, "lapsed")))
    with pytest.raises(FleetWireError, match="version 3"):
        decode_state(encode_state(AgentState(3, "r", 1, 1, 0.5)))

"""The per-client connection core, fed frames and a fake clock (h11-style): every rule at its boundary."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viewer_bridge.core.connection import (
    Answered,
    Close,
    Connection,
    ConnectionLimits,
    MessageAssembler,
    Opcode,
    Pong,
    Refusal,
    valid_close_code,
)
from viewer_bridge.core.protocol import Click, Estop, EstopClear, Heartbeat, ProtocolError, Reason, Stop, TwistCommand
from viewer_bridge.core.ratelimit import TokenBucket
from viewer_bridge.core.roles import Role

TEXT, BINARY, CONT = int(Opcode.TEXT), int(Opcode.BINARY), int(Opcode.CONTINUATION)
PING, PONG, CLOSE = int(Opcode.PING), int(Opcode.PONG), int(Opcode.CLOSE)
TWIST = b'{"type":"twist","linear_x":0.5}'
ZERO_TWIST = b'{"type":"twist","linear_x":0.0,"angular_z":-0.0}'
STOP = b'{"type":"stop"}'
HEARTBEAT = b'{"type":"heartbeat"}'


def conn(now: float = 0.0, **limits: float) -> Connection:
    return Connection(ConnectionLimits(**limits), now)  # type: ignore[arg-type]


def text(c: Connection, payload: bytes, now: float = 0.0) -> object:
    return c.receive(TEXT, True, payload, now)


# -- messages ------------------------------------------------------------------


def test_valid_messages_become_events() -> None:
    c = conn()
    assert text(c, TWIST) == TwistCommand(linear_x=0.5)
    assert text(c, STOP) == Stop()
    assert text(c, HEARTBEAT) == Heartbeat()
    assert text(c, b'{"type":"click","x":1,"y":2,"z":3,"entity_path":"/w"}') == Click(1, 2, 3, "/w")
    assert c.frames == 4 and c.pause_until is None


def test_a_2d_click_is_refused_with_its_reason() -> None:
    refusal = text(conn(), b'{"type":"click","x":1,"y":2,"z":null,"entity_path":"/image"}')
    assert isinstance(refusal, Refusal) and refusal.reason == Reason.CLICK_NOT_3D and refusal.field == "z"
    assert "/image" in refusal.detail and refusal.tell
    assert json.loads(refusal.frame) == {
        "type": "error",
        "reason": "click_not_3d",
        "detail": refusal.detail,
        "field": "z",
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"nope", Reason.INVALID_JSON),
        (b'{"type":"\xff\xfe"}', Reason.INVALID_UTF8),
        (b'{"type":"twist","linear_x":"\xff"}', Reason.INVALID_UTF8),
        (b"[]", Reason.NOT_AN_OBJECT),
        (b'{"type":"fly"}', Reason.UNKNOWN_TYPE),
    ],
)
def test_malformed_messages_are_refused_and_the_connection_stays_open(payload: bytes, reason: str) -> None:
    c = conn()
    refusal = text(c, payload)
    assert isinstance(refusal, Refusal) and refusal.reason == reason
    assert text(c, TWIST) == TwistCommand(linear_x=0.5)


# -- the message budget ------------------------------------------------------------


def test_the_message_budget_drops_excess_and_tells_once_a_second() -> None:
    c = conn(rate=10, burst=3)
    assert [type(text(c, HEARTBEAT, 0.0)) for _ in range(3)] == [Heartbeat] * 3
    first = text(c, TWIST, 0.0)
    assert isinstance(first, Refusal) and first.reason == Reason.RATE_LIMITED and first.tell
    second = text(c, TWIST, 0.05)
    assert isinstance(second, Refusal) and not second.tell  # dropped, counted, not told again
    assert c.dropped == 2
    # One token per 0.1 s: at exactly 0.1 s after the first drop the bucket holds one again.
    assert text(c, TWIST, 0.1) == TwistCommand(linear_x=0.5)
    third = text(c, TWIST, 0.1)
    assert isinstance(third, Refusal) and not third.tell
    # By 1.0 s the bucket is full again (3 tokens).
    assert [type(text(c, TWIST, 1.0)) for _ in range(3)] == [TwistCommand] * 3
    again = text(c, TWIST, 1.0)
    assert isinstance(again, Refusal) and again.tell  # a second after the last telling


def test_a_stop_and_a_zero_twist_are_never_dropped() -> None:
    c = conn(rate=1, burst=1)
    assert text(c, TWIST) == TwistCommand(linear_x=0.5)
    assert isinstance(text(c, TWIST), Refusal)
    assert text(c, STOP) == Stop()
    assert text(c, ZERO_TWIST) == TwistCommand(angular_z=-0.0)
    assert isinstance(text(c, HEARTBEAT), Refusal)


# -- the work budget ---------------------------------------------------------------


def test_every_frame_is_charged_and_debt_pauses_reading_until_repaid() -> None:
    c = conn(work_rate=100, work_burst=10)
    for _ in range(10):
        assert c.receive(PING, True, b"", 0.0) == Pong(b"")
    assert c.pause_until is None  # exactly the burst: no debt
    c.receive(PING, True, b"", 0.0)
    assert c.pause_until == pytest.approx(0.01)  # one unit of debt at 100/s
    c.resumed(0.01)
    assert c.pause_until is None


def frames_until_paused(c: Connection, payload: bytes, limit: int = 1000) -> int:
    for n in range(1, limit + 1):
        text(c, payload)
        if c.pause_until is not None:
            return n
    return limit + 1


def test_big_and_malformed_frames_cost_more() -> None:
    # A budget of 100 units: one per frame, one more per KiB, eight more for a malformed one.
    assert frames_until_paused(conn(work_rate=1, work_burst=100), TWIST) == 98  # 1.03 units each (31 bytes)
    big = b'{"type":"heartbeat","pad":"' + b"x" * 4096 + b'"}'
    assert frames_until_paused(conn(work_rate=1, work_burst=100), big) == 20  # 5.03 units each
    assert frames_until_paused(conn(work_rate=1, work_burst=100, malformed_cost=8), b"garbage") == 12


def test_staying_in_debt_closes_with_1008_at_the_boundary() -> None:
    c = conn(work_rate=10, work_burst=1, flood_close_after=5.0)
    now = 0.0
    c.receive(PING, True, b"", now)
    c.receive(PING, True, b"", now)  # in debt from t=0
    assert c.pause_until is not None
    while now < 4.9:
        now = round(now + 0.1, 6)
        c.resumed(now)
        c.receive(PING, True, b"", now)
        result = c.receive(PING, True, b"", now)
        assert not isinstance(result, Close), now
    c.resumed(5.0)
    assert c.receive(PING, True, b"", 5.0) == Close(1008, "flooding: over the frame budget for 5 s")
    assert c.closing


def test_a_client_that_calms_down_is_forgiven() -> None:
    c = conn(work_rate=10, work_burst=10, flood_close_after=5.0)
    for _ in range(11):
        c.receive(PING, True, b"", 0.0)
    assert c.pause_until is not None
    # Quiet until the budget is half full again (5 units at 10/s, from -1): the streak ends.
    c.resumed(0.6)
    assert c.receive(PING, True, b"", 0.6) == Pong(b"")
    for _ in range(20):
        result = c.receive(PING, True, b"", 5.5)
        assert not isinstance(result, Close)


# -- framing (RFC 6455) ----------------------------------------------------------------


def test_fragments_join_into_one_message() -> None:
    c = conn()
    assert c.receive(TEXT, False, b'{"type":', 0) is None
    assert c.receive(CONT, False, b'"st', 0) is None
    assert c.receive(CONT, True, b'op"}', 0) == Stop()
    assert text(c, TWIST) == TwistCommand(linear_x=0.5)


def test_a_fragmented_binary_message_is_refused_after_its_last_fragment() -> None:
    c = conn()
    assert c.receive(BINARY, False, b"\x00", 0) is None
    refusal = c.receive(CONT, True, b"\x01", 0)
    assert isinstance(refusal, Refusal) and refusal.reason == Reason.BINARY_FRAME
    assert text(c, STOP) == Stop()


@pytest.mark.parametrize(
    ("frames", "code", "why"),
    [
        ([(CONT, True, b"x")], 1002, "continuation frame without a message to continue"),
        ([(TEXT, False, b"a"), (TEXT, True, b"b")], 1002, "new message started before the previous one ended"),
        ([(TEXT, False, b"a" * 60), (CONT, True, b"b" * 60)], 1009, "message exceeds the 100-byte limit"),
        ([(TEXT, False, b"")] + [(CONT, False, b"")] * 4, 1009, "message split into more than 4 frames"),
    ],
)
def test_framing_violations_close_the_connection(frames: list[tuple[int, bool, bytes]], code: int, why: str) -> None:
    c = conn(max_message_size=100, max_fragments=4)
    results = [c.receive(op, fin, payload, 0) for op, fin, payload in frames]
    assert results[-1] == Close(code, why)
    assert all(r is None for r in results[:-1])
    assert c.closing and text(c, STOP) is None  # nothing more is acted on


def test_reserved_bits_without_an_extension_fail_the_connection() -> None:
    c = conn()
    assert c.receive(TEXT, True, STOP, 0, rsv=0x40) == Close(
        1002, "reserved bits 0x40 set, but no extension was negotiated"
    )


def test_a_message_over_the_size_limit_in_one_frame_closes_with_1009() -> None:
    c = conn(max_message_size=10)
    assert text(c, b"x" * 11) == Close(1009, "message exceeds the 10-byte limit")


def test_pings_are_answered_and_answers_to_ours_reported() -> None:
    c = conn()
    assert c.receive(PING, True, b"hi", 0) == Pong(b"hi")
    assert c.receive(PONG, True, b"vb\x00\x00\x00\x00\x00\x00\x00\x01", 0) == Answered(
        b"vb\x00\x00\x00\x00\x00\x00\x00\x01"
    )
    assert c.receive(PONG, True, b"", 0) is None  # an unsolicited or keepalive pong: nothing to do


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999])
def test_a_valid_close_is_answered_with_its_code(code: int) -> None:
    c = conn()
    assert c.receive(CLOSE, True, code.to_bytes(2, "big") + b"bye", 0) == Close(code, answered=True)
    assert c.closing and text(c, STOP) is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_an_invalid_close_code_is_a_protocol_error(code: int) -> None:
    assert not valid_close_code(code)
    c = conn()
    assert c.receive(CLOSE, True, code.to_bytes(2, "big"), 0) == Close(1002, f"invalid close code {code}", True)


def test_an_empty_close_is_a_normal_close() -> None:
    assert conn().receive(CLOSE, True, b"", 0) == Close(1000, answered=True)


def test_after_our_close_only_the_peers_close_matters() -> None:
    c = conn()
    assert c.close(1001, "bye") == Close(1001, "bye")
    assert text(c, STOP) is None and c.receive(PING, True, b"", 0) is None
    assert c.receive(CLOSE, True, b"\x03\xe8", 0) == Close(1000, answered=True)
    c.closed()
    assert text(c, STOP) is None


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="work_rate"):
        ConnectionLimits(work_rate=0)
    with pytest.raises(ValueError, match="burst"):
        ConnectionLimits(burst=0.5)


# -- the assembler alone ---------------------------------------------------------------


class TestAssembler:
    def test_single_frame_passes_through(self) -> None:
        assert MessageAssembler(100).feed(1, True, b"abc") == b"abc"

    def test_fragments_join(self) -> None:
        assembler = MessageAssembler(100)
        assert assembler.feed(1, False, b'{"type":') is None
        assert assembler.feed(0, False, b'"st') is None
        assert assembler.feed(0, True, b'op"}') == b'{"type":"stop"}'
        assert not assembler.in_message
        assert assembler.feed(1, True, b"next") == b"next"

    def test_size_bound(self) -> None:
        assembler = MessageAssembler(10)
        assembler.feed(1, False, b"123456")
        with pytest.raises(ProtocolError) as caught:
            assembler.feed(0, True, b"78901")
        assert caught.value.reason == Reason.MESSAGE_TOO_BIG

    def test_frame_count_bound(self) -> None:
        assembler = MessageAssembler(10, max_frames=3)
        assembler.feed(1, False, b"")
        assembler.feed(0, False, b"")
        assembler.feed(0, False, b"")
        with pytest.raises(ProtocolError, match="more than 3 frames"):
            assembler.feed(0, False, b"")
        assert not assembler.in_message


def test_an_estop_is_never_rate_limited_and_its_clear_is() -> None:
    c = conn(rate=1, burst=1)
    assert text(c, TWIST) == TwistCommand(linear_x=0.5)
    assert text(c, b'{"type":"estop","reason":"wall"}') == Estop("wall")
    assert text(c, b'{"type":"estop"}') == Estop()
    assert isinstance(text(c, b'{"type":"estop_clear"}'), Refusal)
    assert text(c, b'{"type":"estop_clear"}', now=1.0) == EstopClear()


def test_frames_after_our_close_are_still_charged_and_pause_reading() -> None:
    c = conn(work_rate=100, work_burst=10)
    assert c.close(1008, "flooding") == Close(1008, "flooding")
    for _ in range(9):  # 1.03 units each: within the 10-unit budget
        assert c.receive(TEXT, True, TWIST, 0.0) is None
    assert c.pause_until is None
    assert c.receive(TEXT, True, TWIST, 0.0) is None
    assert c.pause_until is not None  # a closed flooder's backlog is read at the budget's pace


def test_the_read_allowance_follows_the_work_budget() -> None:
    c = conn(work_rate=100, work_burst=4000, work_start=4000)
    assert c.read_allowance(0.0) == 16 * 1024  # a full budget: the 16 KiB cap
    for _ in range(3990):
        c.receive(PING, True, b"", 0.0)
    assert c.read_allowance(0.0) == 512  # ten frames' worth left: at least one real message's bytes


def test_a_new_connection_starts_with_part_of_its_burst() -> None:
    # Reconnecting must not buy a flooder a whole burst: a fresh client may spend work_start at once.
    c = conn(work_rate=100, work_burst=4000, work_start=512)
    assert c.read_allowance(0.0) == 512 * 6  # 512 frames of the smallest kind, not the 16 KiB cap
    for _ in range(512):
        assert c.receive(PING, True, b"", 0.0) == Pong(b"")
    assert c.pause_until is None  # exactly the start: no debt yet
    c.receive(PING, True, b"", 0.0)
    assert c.pause_until == pytest.approx(0.01)  # one unit of debt at 100/s
    # It refills towards the whole burst as usual.
    assert c.read_allowance(40.0) == 16 * 1024


def test_the_start_never_exceeds_the_burst_and_is_validated() -> None:
    c = conn(work_rate=100, work_burst=10)  # the default start (512) is capped at the burst
    for _ in range(10):
        c.receive(PING, True, b"", 0.0)
    assert c.pause_until is None
    c.receive(PING, True, b"", 0.0)
    assert c.pause_until is not None
    with pytest.raises(ValueError, match="work_start"):
        ConnectionLimits(work_start=0.5)
    with pytest.raises(ValueError, match="work_start"):
        ConnectionLimits(work_start=math.inf)


# -- runs: the whole text frames of one read, handled together ---------------------------------------------

_RUN_PAYLOADS = st.sampled_from([
    TWIST,
    ZERO_TWIST,
    STOP,
    HEARTBEAT,
    b'{"type":"twist","angular_z":-0.3,"timestamp_ms":5}',
    b'{"type":"click","x":1,"y":2,"z":3,"entity_path":"/w"}',
    b'{"type":"click","x":1,"y":2,"z":null,"entity_path":"/image"}',
    b'{"type":"estop","reason":"r"}',
    b'{"type":"estop_clear"}',
    b"not json",
    b'{"type":"twist","linear_x":"fast"}',
    b'{"type":"\xff\xfe"}',
    b'{"type":"twist","linear_x":0.1,"pad":"' + b"x" * 1500 + b'"}',  # 1.5 KiB: over a small size limit
])
_RUN_LIMITS = st.fixed_dictionaries({
    "rate": st.sampled_from([5.0, 200.0]),
    "burst": st.sampled_from([1.0, 8.0, 400.0]),
    "work_rate": st.sampled_from([20.0, 2000.0]),
    "work_burst": st.sampled_from([8.0, 60.0, 4000.0]),
    "work_start": st.sampled_from([1.0, 30.0, 512.0]),
    "malformed_cost": st.sampled_from([0.0, 8.0]),
    "max_message_size": st.sampled_from([1024, 65536]),
    "flood_close_after": st.sampled_from([0.05, 5.0]),
})
# Reads: how long after the previous one it came, and the whole text frames it held.
_READS = st.lists(st.tuples(st.sampled_from([0.0, 0.001, 0.02, 0.5, 3.0]), st.lists(_RUN_PAYLOADS, max_size=30)),
                  min_size=1, max_size=6)


def _state(c: Connection, now: float) -> tuple[object, ...]:
    return (
        c.frames, c.dropped, c.pause_until, c.closing, c._over_since, dict(c._told),
        c._work.level(now), c._messages.level(now), None if c._host is None else c._host.level(now),
    )


@settings(max_examples=300, deadline=None)
@given(limits=_RUN_LIMITS, role=st.sampled_from(list(Role)), shared=st.booleans(), reads=_READS)
def test_a_run_of_frames_is_exactly_those_frames_one_at_a_time(
    limits: dict[str, float], role: Role, shared: bool, reads: list[tuple[float, list[bytes]]]
) -> None:
    # The server hands a read's whole text frames over as one run (receive_texts), re-entering receive()
    # for a frame the run does not take; the outcome must be what receive() frame by frame gives.
    limits["work_start"] = min(limits["work_start"], limits["work_burst"])

    def make() -> Connection:
        host = TokenBucket(4.0, 6.0, 0.0) if shared else None
        return Connection(ConnectionLimits(**limits), 0.0, role=role, name="t", host=host)  # type: ignore[arg-type]

    one, run = make(), make()
    now = 0.0
    for gap, payloads in reads:
        now += gap
        expected = [one.receive(TEXT, True, payload, now) for payload in payloads]
        got: list[object] = []
        start = 0
        while start < len(payloads):
            results, start = run.receive_texts(payloads, now, start)
            got.extend(results)
            if start < len(payloads):
                got.append(run.receive(TEXT, True, payloads[start], now))
                start += 1
        assert got == expected
        assert _state(run, now) == _state(one, now)
        for c in (one, run):
            if c.pause_until is not None and c.pause_until <= now + 0.5:
                c.resumed(now)  # as the server does once the pause is over


def test_a_run_stops_at_a_frame_it_cannot_take_and_says_where() -> None:
    c = conn(max_message_size=64)
    big = b'{"type":"twist","linear_x":0.1,"pad":"' + b"x" * 80 + b'"}'
    results, index = c.receive_texts([TWIST, STOP, big, TWIST], 0.0)
    assert (results, index) == ([TwistCommand(linear_x=0.5), Stop()], 2)
    closed = c.receive(TEXT, True, big, 0.0)
    assert isinstance(closed, Close) and closed.code == 1009
    assert c.receive_texts([TWIST], 0.0) == ([], 0)  # closing: each frame goes to receive() on its own

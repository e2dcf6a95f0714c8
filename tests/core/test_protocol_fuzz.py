"""Property tests of the pure parser and connection (``make fuzz`` runs them with 100k examples each).

Profiles: ``default`` keeps ``make test`` quick; ``fuzz`` (HYPOTHESIS_PROFILE=fuzz) is the long run,
100k examples per property (``make fuzz`` runs the properties two at a time and prints
examples/s for each; the JSON-object property is the slow one, 75-270/s on 2 cores, nearly
all of it Hypothesis building the objects).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
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
)
from viewer_bridge.core.protocol import (
    Click,
    Estop,
    EstopClear,
    Heartbeat,
    ProtocolError,
    Stop,
    TwistCommand,
    encode_error,
    parse_message,
)

settings.register_profile("default", max_examples=1500, deadline=None)
settings.register_profile("fuzz", max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

AXES = ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z")
finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
field_names = st.sampled_from(["type", "x", "y", "z", "entity_path", "timestamp_ms", *AXES]) | st.text(max_size=8)
message_like = st.dictionaries(field_names, json_values, max_size=8) | st.fixed_dictionaries(
    {"type": st.sampled_from(["click", "twist", "stop", "heartbeat", "estop", "estop_clear", "other", ""])},
    optional={name: json_values for name in ("x", "y", "z", "timestamp_ms", "reason", *AXES)},
)


def assert_sound(event: Any) -> None:
    """Whatever the parser accepts holds only finite numbers of the right types."""
    if isinstance(event, TwistCommand):
        assert all(isinstance(getattr(event, a), float) and math.isfinite(getattr(event, a)) for a in AXES)
    elif isinstance(event, Click):
        for value in (event.x, event.y) + (() if event.z is None else (event.z,)):
            assert isinstance(value, float) and math.isfinite(value)
        assert isinstance(event.entity_path, str)
        assert event.timestamp_ms is None or (math.isfinite(event.timestamp_ms) and event.timestamp_ms >= 0)
    elif isinstance(event, Heartbeat):
        assert event.timestamp_ms is None or math.isfinite(event.timestamp_ms)
    elif isinstance(event, Estop):
        assert event.reason is None or (isinstance(event.reason, str) and len(event.reason) <= 200)
    else:
        assert isinstance(event, (Stop, EstopClear))


def parse_or_reject(data: bytes | str) -> Any:
    try:
        event = parse_message(data)
    except ProtocolError as exc:
        assert exc.reason and exc.detail
        json.loads(encode_error(exc.reason, exc.detail, exc.field))  # the error frame is always valid JSON
        return None
    assert_sound(event)
    return event


@given(st.binary(max_size=300))
def test_any_bytes_yield_an_event_or_a_protocol_error(data: bytes) -> None:
    parse_or_reject(data)


@given(st.text(max_size=300))
def test_any_text_yields_an_event_or_a_protocol_error(text: str) -> None:
    parse_or_reject(text)


@given(message_like)
def test_any_json_object_yields_an_event_or_a_protocol_error(obj: dict[str, Any]) -> None:
    # allow_nan: Python's encoder writes NaN/Infinity literals, as a buggy client would.
    parse_or_reject(json.dumps(obj))


# Strings whose bytes are not UTF-8, spliced into otherwise plausible messages: a class of input
# that once escaped parse_message as UnicodeDecodeError.
invalid_utf8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])


ascii_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"\\'), max_size=8
).map(str.encode)


@given(
    st.sampled_from(["type", "entity_path", "linear_x", "x", "extra"]),
    ascii_text,
    invalid_utf8,
    ascii_text,
    st.sampled_from([b"click", b"twist", b"stop", b"heartbeat"]),
)
def test_invalid_utf8_inside_a_string_is_an_invalid_utf8_error(
    key: str, before: bytes, bad: bytes, after: bytes, kind: bytes
) -> None:
    value = b'"' + before + bad + after + b'"'
    if key == "type":
        raw = b'{"type":' + value + b"}"
    else:
        raw = b'{"type":"' + kind + b'","' + key.encode() + b'":' + value + b"}"
    try:
        parse_message(raw)
    except ProtocolError as exc:
        assert exc.reason == "invalid_utf8", (raw, exc)
    else:
        raise AssertionError(f"accepted invalid UTF-8: {raw!r}")


@given(st.fixed_dictionaries({a: finite for a in AXES}))
def test_valid_twists_round_trip(axes: dict[str, float]) -> None:
    event = parse_message(json.dumps({"type": "twist", **axes}))
    assert isinstance(event, TwistCommand)
    for name, value in axes.items():
        assert getattr(event, name) == value
    twist = event.to_twist()
    assert (*twist.linear, *twist.angular) == tuple(axes[a] for a in AXES)


@given(finite, finite, finite | st.none(), st.text(max_size=40), st.integers(1, 2**31 * 1000 - 1000) | st.none())
def test_valid_clicks_round_trip(x: float, y: float, z: float | None, path: str, ts: int | None) -> None:
    body: dict[str, Any] = {"type": "click", "x": x, "y": y, "z": z, "entity_path": path}
    if ts is not None:
        body["timestamp_ms"] = ts
    event = parse_message(json.dumps(body).encode())
    assert event == Click(x, y, z, path, ts)


@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2]), st.booleans(), st.binary(max_size=40)),
        max_size=30,
    )
)
def test_assembler_never_exceeds_its_bound_or_raises_other_errors(frames: list[tuple[int, bool, bytes]]) -> None:
    assembler = MessageAssembler(max_size=64, max_frames=8)
    for opcode, fin, payload in frames:
        try:
            message = assembler.feed(opcode, fin, payload)
        except ProtocolError:
            continue
        if message is not None:
            assert fin
            assert len(message) <= max(64, len(payload))


frames = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 2, 8, 9, 10]),
        st.booleans(),
        st.binary(max_size=40)
        | st.sampled_from(
            [b'{"type":"stop"}', b'{"type":"twist","linear_x":0.5}', b'{"type":"twist"}', b"\x03\xe8", b"\x13\x88"]
        ),
        st.floats(0, 0.5),
        st.sampled_from([0, 0, 0, 0x10, 0x40]),
    ),
    max_size=60,
)


@given(frames)
def test_the_connection_answers_any_frame_sequence_with_a_known_result(
    sequence: list[tuple[int, bool, bytes, float, int]],
) -> None:
    limits = ConnectionLimits(
        max_message_size=64, max_fragments=6, rate=20, burst=5, work_rate=50, work_burst=20, flood_close_after=1.0
    )
    c = Connection(limits, 0.0)
    now = 0.0
    closed = False
    for opcode, fin, payload, dt, rsv in sequence:
        now += dt
        if c.pause_until is not None:
            assert c.pause_until >= 0.0
            now = max(now, c.pause_until)
            c.resumed(now)
        if opcode >= Opcode.CLOSE:
            fin = True  # picows refuses fragmented control frames before they reach us
        result = c.receive(opcode, fin, payload, now, rsv)
        if closed:
            assert result is None or (isinstance(result, Close) and result.answered)
            continue
        if isinstance(result, Close):
            closed = True
            assert 1000 <= result.code <= 4999
        elif isinstance(result, Refusal):
            json.loads(result.frame)
        elif result is not None:
            assert isinstance(result, (Pong, Answered, Click, TwistCommand, Stop, Heartbeat, Estop, EstopClear))
            if not isinstance(result, (Pong, Answered)):
                assert_sound(result)

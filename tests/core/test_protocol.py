"""The pure protocol parser: every message type, every rejection reason, and message reassembly."""

from __future__ import annotations

import json

import pytest

from viewer_bridge.core.messages import Twist, Vector3
from viewer_bridge.core.protocol import (
    MAX_TIMESTAMP_MS,
    Click,
    Heartbeat,
    ProtocolError,
    Reason,
    Stop,
    TwistCommand,
    encode_error,
    parse_message,
)

VIEWER_CLICK = (
    b'{"type":"click","x":1.2345678806304932,"y":-2.5,"z":0.0099999997764825821,'
    b'"entity_path":"/world/map","timestamp_ms":1764000000123}'
)
VIEWER_TWIST = (
    b'{"type":"twist","linear_x":0.5,"linear_y":0.0,"linear_z":0.0,'
    b'"angular_x":0.0,"angular_y":0.0,"angular_z":0.8}'
)


def test_viewer_click() -> None:
    event = parse_message(VIEWER_CLICK)
    assert event == Click(1.2345678806304932, -2.5, 0.0099999997764825821, "/world/map", 1764000000123)
    assert isinstance(event, Click) and event.z is not None


def test_viewer_twist_and_conversion() -> None:
    event = parse_message(VIEWER_TWIST)
    assert isinstance(event, TwistCommand)
    assert event.to_twist() == Twist(Vector3(0.5, 0, 0), Vector3(0, 0, 0.8))


def test_stop_heartbeat_and_text_input() -> None:
    assert parse_message('{"type":"stop"}') == Stop()
    assert parse_message(b'{"type":"heartbeat","timestamp_ms":5}') == Heartbeat(5)
    assert parse_message(b'{"type":"heartbeat"}') == Heartbeat(None)


def test_twist_missing_axes_are_zero_and_unknown_fields_ignored() -> None:
    event = parse_message(b'{"type":"twist","angular_z":-0.8,"extra":"ignored"}')
    assert isinstance(event, TwistCommand)
    assert event.to_twist() == Twist(Vector3(), Vector3(0, 0, -0.8))


@pytest.mark.parametrize("raw", [b'{"type":"click","x":1,"y":2,"z":null}', b'{"type":"click","x":1,"y":2}'])
def test_click_without_z_is_not_a_world_point(raw: bytes) -> None:
    event = parse_message(raw)
    assert isinstance(event, Click) and event.z is None


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"not json", Reason.INVALID_JSON, None),
        (b"", Reason.INVALID_JSON, None),
        (b'{"type":"stop"} trailing', Reason.INVALID_JSON, None),
        (b"\xff\xfe{}", Reason.INVALID_UTF8, None),
        (b"[1,2]", Reason.NOT_AN_OBJECT, None),
        (b'"twist"', Reason.NOT_AN_OBJECT, None),
        (b"null", Reason.NOT_AN_OBJECT, None),
        (b'{"linear_x":1}', Reason.MISSING_TYPE, "type"),
        (b'{"type":"jump"}', Reason.UNKNOWN_TYPE, "type"),
        (b'{"type":5}', Reason.UNKNOWN_TYPE, "type"),
        (b'{"type":"click","x":"abc","y":2,"z":0}', Reason.INVALID_FIELD, "x"),
        (b'{"type":"click","y":2,"z":0}', Reason.INVALID_FIELD, "x"),
        (b'{"type":"twist","linear_x":true}', Reason.INVALID_FIELD, "linear_x"),
        (b'{"type":"twist","angular_z":[1]}', Reason.INVALID_FIELD, "angular_z"),
        (b'{"type":"click","x":1,"y":2,"z":0,"entity_path":7}', Reason.INVALID_FIELD, "entity_path"),
        (b'{"type":"twist","linear_x":NaN}', Reason.NON_FINITE, "linear_x"),
        (b'{"type":"twist","linear_x":Infinity}', Reason.NON_FINITE, "linear_x"),
        (b'{"type":"twist","angular_z":-Infinity}', Reason.NON_FINITE, "angular_z"),
        (b'{"type":"click","x":1e999,"y":0,"z":0}', Reason.NON_FINITE, "x"),
        (b'{"type":"click","x":1,"y":2,"z":0,"timestamp_ms":-1}', Reason.INVALID_FIELD, "timestamp_ms"),
        (
            b'{"type":"click","x":1,"y":2,"z":0,"timestamp_ms":%d}' % (MAX_TIMESTAMP_MS + 1),
            Reason.INVALID_FIELD,
            "timestamp_ms",
        ),
    ],
)
def test_rejections_are_precise(raw: bytes, reason: str, field: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(raw)
    assert caught.value.reason == reason, caught.value.detail
    assert caught.value.field == field
    assert caught.value.detail


def test_rejection_detail_names_the_offending_value() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_message(b'{"type":"click","x":"abc","y":2,"z":0}')
    assert "'abc'" in caught.value.detail and "'x'" in caught.value.detail


def test_error_frame_shape() -> None:
    frame = json.loads(encode_error(Reason.NOT_DRIVER, "someone else drives"))
    assert frame == {"type": "error", "reason": "not_driver", "detail": "someone else drives"}
    frame = json.loads(encode_error(Reason.INVALID_FIELD, "bad", "x"))
    assert frame["field"] == "x" and frame["reason"] == "invalid_field"


def test_deep_nesting_is_rejected_not_crashing() -> None:
    raw = b'{"type":"twist","linear_x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError):
        parse_message(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"type":"estop"}', None),
        (b'{"type":"estop","reason":"wall"}', "wall"),
        (b'{"type":"estop","reason":5}', "5"),
        (b'{"type":"estop","reason":{"who":"me"}}', '{"who":"me"}'),
        (b'{"type":"estop","reason":"' + b"x" * 300 + b'"}', "x" * 199 + "\u2026"),
    ],
)
def test_an_estop_is_never_refused_for_its_reason(raw: bytes, reason: str | None) -> None:
    from viewer_bridge.core.protocol import Estop

    assert parse_message(raw) == Estop(reason)

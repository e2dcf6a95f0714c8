"""The viewer protocol, sans I/O: one WebSocket message in, one typed event or a precise error out.

Nothing here touches a socket or reads a clock, so every input can be tested
and fuzzed directly. The wire format is the one dimos-viewer speaks (see
docs/protocol.md): a text frame holding one JSON object whose ``type`` is
``click``, ``twist``, ``stop`` or ``heartbeat``.

Decoding is done in one typed step by ``msgspec``; its JSON parser already
refuses ``NaN``/``Infinity`` literals and out-of-range numbers, so every float
in an event it returns is finite. When the fast path fails, the same input is
re-read with the standard library only to explain *why* (that path runs once
per bad frame, never for good ones).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from typing import Annotated, Any, Final, Union

import msgspec

from viewer_bridge.core.messages import Twist, Vector3

__all__ = [
    "MESSAGE_TYPES",
    "Axes",
    "Click",
    "ErrorFrame",
    "Estop",
    "EstopClear",
    "EstopState",
    "Event",
    "Heartbeat",
    "ProtocolError",
    "Reason",
    "ServerFrame",
    "Status",
    "Stop",
    "TwistCommand",
    "decode_server_frame",
    "encode_error",
    "encode_status",
    "parse_message",
    "to_twists",
]

# LCM's std_msgs/Time holds seconds in an int32: a timestamp past 2038 would
# wrap on the bus, so it is refused here rather than published wrong.
MAX_TIMESTAMP_MS: Final = (2**31 - 1) * 1000
# A client's timestamp: epoch milliseconds in that range, checked by the decoder itself.
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP_MS)]


class Reason(enum.StrEnum):
    """Stable, machine-readable rejection reasons sent to clients and used as metric labels."""

    BINARY_FRAME = "binary_frame"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_FIELD = "invalid_field"
    NON_FINITE = "non_finite"
    MESSAGE_TOO_BIG = "message_too_big"
    CLICK_NOT_3D = "click_not_3d"
    GOAL_OUT_OF_RANGE = "goal_out_of_range"
    NOT_DRIVER = "not_driver"
    RATE_LIMITED = "rate_limited"
    FORBIDDEN = "forbidden"
    ESTOPPED = "estopped"
    STOPPED_BY_OTHER = "stopped_by_other"
    LINK_TOO_SLOW = "link_too_slow"
    STALE = "stale"
    UNKNOWN_ROBOT = "unknown_robot"
    ROBOT_OFFLINE = "robot_offline"
    LINK_LAPSED = "link_lapsed"


class ProtocolError(Exception):
    """A message that cannot be accepted, with a stable ``reason`` and a human ``detail``.

    ``field`` names the offending field when one is to blame.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


def encode_error(reason: str, detail: str, field: str | None = None) -> bytes:
    """The JSON error frame sent back to a client: ``{"type":"error","reason":...}``."""
    return _encoder.encode(ErrorFrame(reason, detail, field))


# -- frames the bridge sends ------------------------------------------------------------


class ErrorFrame(msgspec.Struct, tag_field="type", tag="error", frozen=True, omit_defaults=True):
    """Why a message was refused: ``reason`` is stable (see :class:`Reason`), ``detail`` is for people."""

    reason: str
    detail: str
    field: Union[str, None] = None


class Axes(msgspec.Struct, frozen=True):
    """A velocity command's six components, as the protocol names them."""

    linear_x: float = 0.0
    linear_y: float = 0.0
    linear_z: float = 0.0
    angular_x: float = 0.0
    angular_y: float = 0.0
    angular_z: float = 0.0

    @classmethod
    def of(cls, twist: Twist) -> Axes:
        lin, ang = twist.linear, twist.angular
        return cls(lin.x, lin.y, lin.z, ang.x, ang.y, ang.z)


class EstopState(msgspec.Struct, frozen=True):
    """A latched e-stop: who latched it, when (epoch seconds), why."""

    by: str
    at: float
    reason: Union[str, None] = None


class Status(msgspec.Struct, tag_field="type", tag="status", frozen=True, kw_only=True):
    """What the bridge tells each client on connect and whenever it changes (at most 10 per second).

    ``you`` is this client's name in the bridge (its token's name, or its
    address and id); ``driver`` who drives (``None``: nobody) and
    ``you_drive`` whether that is you. ``command`` is the command in force
    after the limits and the link's speed factor. ``stopped_by`` says who
    stopped you while you drove: release (``stop``, a zero twist, or let go)
    before driving again. ``speed_factor`` is what your link allows (``None``:
    too slow to drive), from ``rtt_ms``, your measured round trip.
    """

    you: str
    driver: Union[str, None] = None
    you_drive: bool = False
    command: Union[Axes, None] = None
    estop: Union[EstopState, None] = None
    stopped_by: Union[str, None] = None
    deadman_remaining_s: Union[float, None] = None
    rtt_ms: Union[float, None] = None
    speed_factor: Union[float, None] = 1.0
    clients: int = 0


ServerFrame = Union[Status, ErrorFrame]
_encoder: Final = msgspec.json.Encoder()
_server_frames: Final = msgspec.json.Decoder(ServerFrame)


def encode_status(status: Status) -> bytes:
    return _encoder.encode(status)


def decode_server_frame(data: bytes | str) -> ServerFrame:
    """A frame from the bridge (for clients). Raises ``msgspec.DecodeError``/``ValidationError`` otherwise."""
    frame: ServerFrame = _server_frames.decode(data)
    return frame


class Click(msgspec.Struct, tag_field="type", tag="click", frozen=True, gc=False):
    """A click on an entity. ``z`` is ``None`` for a click in a 2D view (not a world point)."""

    x: float
    y: float
    z: Union[float, None] = None
    entity_path: str = ""
    timestamp_ms: Union[Timestamp, None] = None


class TwistCommand(Axes, tag_field="type", tag="twist", frozen=True, gc=False):
    """A velocity command; a missing component is 0, as in DimOS.

    ``timestamp_ms`` (wall-clock epoch milliseconds when the client sent it) is
    this project's extension: our clients add it so the bridge can refuse a
    command that spent too long on its way (``stale``); the viewer sends none.
    """

    timestamp_ms: Union[Timestamp, None] = None

    def to_twist(self) -> Twist:
        return to_twists((self,))[0]


def to_twists(commands: Iterable[TwistCommand]) -> list[Twist]:
    """:meth:`TwistCommand.to_twist` of each of ``commands`` (a read's twists), without a call for each."""
    return [
        Twist(Vector3(c.linear_x, c.linear_y, c.linear_z), Vector3(c.angular_x, c.angular_y, c.angular_z))
        for c in commands
    ]


class Stop(msgspec.Struct, tag_field="type", tag="stop", frozen=True, gc=False):
    """Stop now: a zero velocity."""


class Heartbeat(msgspec.Struct, tag_field="type", tag="heartbeat", frozen=True, gc=False):
    """Liveness only; publishes nothing."""

    timestamp_ms: Union[Timestamp, None] = None


# Longest e-stop reason kept (it is shown to every operator and logged).
MAX_REASON: Final = 200


class Estop(msgspec.Struct, tag_field="type", tag="estop", frozen=True, gc=False):
    """Latch the emergency stop (this project's extension): one zero now, no driving until cleared.

    ``reason`` is free text for the other operators. An e-stop is never refused
    for its reason: a reason that is not a string is shown as JSON, and one
    longer than ``MAX_REASON`` characters is cut.
    """

    reason: Any = None


class EstopClear(msgspec.Struct, tag_field="type", tag="estop_clear", frozen=True, gc=False):
    """Release a latched emergency stop (this project's extension)."""


Event = Union[Click, TwistCommand, Stop, Heartbeat, Estop, EstopClear]

MESSAGE_TYPES: Final = ("click", "twist", "stop", "heartbeat", "estop", "estop_clear")
_decoder: Final = msgspec.json.Decoder(Event)


def parse_message(data: bytes | str) -> Event:
    """Decode one complete text message into an event.

    Raises :class:`ProtocolError` for anything else; never any other exception.
    """
    if type(data) is bytes and not data.isascii():
        # msgspec checks UTF-8 only in the strings it reads, not in fields it skips; a text frame
        # must be UTF-8 throughout (RFC 6455 section 5.6). ASCII, what every client sends, is valid.
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(Reason.INVALID_UTF8, f"text frame is not valid UTF-8 (byte {exc.start})") from None
    try:
        event: Event = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeError):
        # msgspec reports invalid UTF-8 inside a string as UnicodeDecodeError.
        raise _explain(data) from None
    if type(event) is Estop:
        reason = event.reason
        if reason is not None and (type(reason) is not str or len(reason) > MAX_REASON):
            text = reason if type(reason) is str else msgspec.json.encode(reason).decode()
            return Estop(text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "\u2026")
    return event


def _shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(data: bytes | str) -> ProtocolError:
    """Work out precisely why ``data`` was refused by the fast decoder (never raises)."""
    try:
        return _diagnose(data)
    except Exception as exc:  # the explanation must not become the failure
        return ProtocolError(Reason.INVALID_JSON, f"message could not be decoded ({type(exc).__name__})")


def _diagnose(data: bytes | str) -> ProtocolError:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            return ProtocolError(Reason.INVALID_UTF8, f"text frame is not valid UTF-8 (byte {exc.start})")
    else:
        text = data
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates: no UTF-8 sender could have sent them
            return ProtocolError(Reason.INVALID_UTF8, f"text is not valid UTF-8 (character {exc.start})")
    constants: list[str] = []

    def note_constant(name: str) -> float:
        constants.append(name)
        return math.nan

    try:
        obj = json.loads(text, parse_constant=note_constant)
    except (ValueError, RecursionError) as exc:
        pos = getattr(exc, "pos", None)
        where = f" at character {pos}" if pos is not None else ""
        return ProtocolError(Reason.INVALID_JSON, f"not valid JSON{where}: {_shorten(text)}")
    if not isinstance(obj, dict):
        return ProtocolError(
            Reason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}: {_shorten(obj)}"
        )
    if "type" not in obj:
        return ProtocolError(Reason.MISSING_TYPE, "message has no 'type' field", "type")
    kind = obj["type"]
    if kind not in MESSAGE_TYPES:
        return ProtocolError(
            Reason.UNKNOWN_TYPE,
            f"unknown message type {_shorten(kind)}; expected one of {', '.join(MESSAGE_TYPES)}",
            "type",
        )
    if constants:
        for key, value in obj.items():
            if isinstance(value, float) and not math.isfinite(value):
                return ProtocolError(
                    Reason.NON_FINITE, f"field {key!r} is {constants[0]}; numbers must be finite", key
                )
        return ProtocolError(Reason.NON_FINITE, f"message contains {constants[0]}; numbers must be finite")
    # The object is well-formed JSON of a known type, so a field is at fault;
    # msgspec's own message names it.
    try:
        _decoder.decode(data)
    except msgspec.ValidationError as exc:
        message = str(exc)
        field = _field_from_path(message)
        if field is not None and field in obj:
            value = obj[field]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if "out of range" in message:
                    return ProtocolError(
                        Reason.NON_FINITE, f"field {field!r}: number {_shorten(value)} is out of range", field
                    )
                if field == "timestamp_ms":
                    return ProtocolError(
                        Reason.INVALID_FIELD,
                        f"timestamp_ms must be epoch milliseconds in [0, {MAX_TIMESTAMP_MS}], got {_shorten(value)}",
                        field,
                    )
                return ProtocolError(
                    Reason.INVALID_FIELD, f"field {field!r}: number {_shorten(value)} is out of range", field
                )
            expected = message.split(" - at ")[0].split(", got ")[0].replace("`", "")
            expected = expected[0].lower() + expected[1:]
            return ProtocolError(Reason.INVALID_FIELD, f"field {field!r}: {expected}, got {_shorten(value)}", field)
        return ProtocolError(Reason.INVALID_FIELD, message, field)
    except msgspec.DecodeError as exc:
        # Valid for the stdlib but not for msgspec (e.g. lone surrogates).
        return ProtocolError(Reason.INVALID_JSON, str(exc))
    return ProtocolError(Reason.INVALID_JSON, "message could not be decoded")


def _field_from_path(message: str) -> str | None:
    marker = "at `$."
    start = message.find(marker)
    if start < 0:
        if "missing required field `" in message:
            return message.split("`")[1]
        return None
    rest = message[start + len(marker) :]
    return rest.split("`", 1)[0].split("[", 1)[0].split(".", 1)[0]

"""One client's WebSocket session, sans I/O: frames and the time go in, what to do comes out.

The server feeds every frame picows parses to :meth:`Connection.receive`
together with the current time, and carries out the result:

* an event (:class:`~viewer_bridge.core.protocol.Click`, ``TwistCommand``,
  ``Stop``, ``Heartbeat``): act on it (safety, publishing);
* :class:`Refusal`: count it, log it, and send its error frame if ``tell``;
* :class:`Pong`: answer a ping;
* :class:`Close`: send a close frame and end the connection;
* ``None``: nothing.

:meth:`Connection.receive_texts` takes the whole text frames of one read at
once, with exactly the effect of :meth:`Connection.receive` on each.

Flow control is read separately: after a frame, :attr:`Connection.pause_until`
is set when the client has spent its work budget; the server stops reading
the socket until then (the kernel's buffers fill and TCP pushes back on the
sender), and calls :meth:`Connection.resumed`.

Two budgets, because commands and CPU need different treatment:

* The *work* budget is charged for every frame before it is looked at (one
  unit, plus one per KiB, plus ``malformed_cost`` for a frame that turns out
  to be bad), whatever its kind: valid, malformed, fragment, ping, binary.
  It bounds what one client can cost the event loop, so a flood cannot delay
  anyone else's stop or the deadman. A client that stays in debt for
  ``flood_close_after`` seconds is closed with 1008.
* The *message* budget (``rate`` per second, ``burst`` deep) limits accepted
  messages. Excess messages are dropped and the client told (once a
  second); they are never queued, because a velocity command that arrives
  late is worse than none. A ``stop`` and a zero twist are never dropped: a
  client's own limit must not keep its robot moving. When the server passes
  a ``host`` bucket (one per remote address, shared by all of its
  connections; see :mod:`viewer_bridge.core.peers`), an accepted message
  spends from both, so opening more connections does not buy more messages.

Each connection has a ``role`` (:mod:`viewer_bridge.core.roles`): a message
its role may not send is refused (``forbidden``) before it costs any
message budget, and never reaches the safety controller.

Frame-level rules follow RFC 6455: reserved bits without an extension,
a continuation with nothing to continue, a new message inside a fragmented
one and invalid close codes fail the connection (1002, section 7.1.7); a
message bigger than ``max_message_size`` or split into more than
``max_fragments`` frames is closed with 1009. Protocol-level errors (bad
JSON, unknown types, bad fields, binary messages, 2D clicks) get an error
frame and the connection stays open; see ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Union, get_args

import msgspec

from viewer_bridge.core.protocol import (
    Click,
    Estop,
    Event,
    ProtocolError,
    Reason,
    Stop,
    TwistCommand,
    encode_error,
    parse_message,
)
from viewer_bridge.core.ratelimit import TokenBucket
from viewer_bridge.core.roles import PERMITTED, Role, may_send

__all__ = [
    "Answered",
    "Close",
    "CloseCode",
    "Connection",
    "ConnectionLimits",
    "MessageAssembler",
    "Opcode",
    "Pong",
    "Refusal",
    "Result",
]


class Opcode(enum.IntEnum):
    """WebSocket frame opcodes (RFC 6455 section 5.2)."""

    CONTINUATION = 0
    TEXT = 1
    BINARY = 2
    CLOSE = 8
    PING = 9
    PONG = 10


class CloseCode(enum.IntEnum):
    """The close codes the bridge sends (RFC 6455 section 7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009


def valid_close_code(code: int) -> bool:
    """Whether a peer may send ``code`` (RFC 6455 section 7.4; 1012-1014 are IANA-registered since)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class Refusal(msgspec.Struct, frozen=True, gc=False):
    """A message or frame that was not accepted.

    The server counts and logs it, and sends :attr:`frame` when ``tell`` is
    true (a flood is told once a second, not once per dropped message).
    """

    reason: str
    detail: str
    field: str | None = None
    tell: bool = True

    @property
    def frame(self) -> bytes:
        return encode_error(self.reason, self.detail, self.field)


class Pong(msgspec.Struct, frozen=True, gc=False):
    """Answer a ping with this payload (RFC 6455 section 5.5.3)."""

    payload: bytes


class Answered(msgspec.Struct, frozen=True, gc=False):
    """The client answered a ping of ours with this payload (the server measures its round trip)."""

    payload: bytes


class Close(msgspec.Struct, frozen=True, gc=False):
    """Send a close frame with ``code`` and ``reason`` and end the connection.

    ``answered`` is true when the peer's close frame has already arrived (the
    server then disconnects as soon as its own close frame is written);
    otherwise the server waits briefly for the peer's answer.
    """

    code: int
    reason: str = ""
    answered: bool = False


Result = Union[Event, Refusal, Pong, Answered, Close, None]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client may send. Every limit is explained where the bridge's settings define it."""

    max_message_size: int = 64 * 1024
    max_fragments: int = 128
    rate: float = 200.0
    burst: float = 400.0
    work_rate: float = 2000.0
    work_burst: float = 4000.0
    # A new connection may spend this much at once (at most work_burst), the rest as its budget refills:
    # closing and reconnecting must not buy a flooder another whole burst. The viewer's reconnect flush
    # (up to 256 queued messages) still fits.
    work_start: float = 512.0
    malformed_cost: float = 8.0
    flood_close_after: float = 5.0

    def __post_init__(self) -> None:
        for name in ("rate", "work_rate", "flood_close_after"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("burst", "work_burst", "work_start"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1):
                raise ValueError(f"{name} must be a finite number >= 1, got {value!r}")
        if not (math.isfinite(self.malformed_cost) and self.malformed_cost >= 0):
            raise ValueError(f"malformed_cost must be a finite number >= 0, got {self.malformed_cost!r}")
        if self.max_message_size < 1 or self.max_fragments < 1:
            raise ValueError("max_message_size and max_fragments must be >= 1")


class MessageAssembler:
    """Joins a fragmented message (RFC 6455 section 5.4), bounding its bytes and its frame count.

    ``feed`` takes one data frame and returns the whole message once its last
    fragment arrives, else ``None``. It raises :class:`ProtocolError` for a
    framing violation (``reason`` is ``"framing"``), an oversized message
    (``message_too_big``) and a binary message (``binary_frame``, raised after
    the last fragment so the stream stays in step).
    """

    __slots__ = ("_binary", "_chunks", "_frames", "_max_frames", "_max_size", "_open", "_size")

    def __init__(self, max_size: int, max_frames: int = 128) -> None:
        self._max_size = max_size
        self._max_frames = max_frames
        self._chunks: list[bytes] = []
        self._size = 0
        self._frames = 0
        self._open = False
        self._binary = False

    @property
    def in_message(self) -> bool:
        """True between a message's first and last fragment."""
        return self._open

    def feed(self, opcode: int, fin: bool, payload: bytes) -> bytes | None:
        """``opcode`` is 0 (continuation), 1 (text) or 2 (binary)."""
        if opcode == Opcode.CONTINUATION:
            if not self._open:
                raise ProtocolError(_FRAMING, "continuation frame without a message to continue")
        else:
            if self._open:
                self._reset()
                raise ProtocolError(_FRAMING, "new message started before the previous one ended")
            self._open = True
            self._binary = opcode == Opcode.BINARY
        self._frames += 1
        self._size += len(payload)
        if self._size > self._max_size:
            self._reset()
            raise ProtocolError(Reason.MESSAGE_TOO_BIG, f"message exceeds the {self._max_size}-byte limit")
        if self._frames > self._max_frames:
            self._reset()
            raise ProtocolError(Reason.MESSAGE_TOO_BIG, f"message split into more than {self._max_frames} frames")
        if fin and not self._chunks:
            # A whole message in one frame: no copy.
            message = payload
        else:
            self._chunks.append(payload)
            if not fin:
                return None
            message = b"".join(self._chunks)
        binary = self._binary
        self._reset()
        if binary:
            raise ProtocolError(Reason.BINARY_FRAME, "binary frames are not part of the protocol; send JSON text")
        return message

    def _reset(self) -> None:
        self._chunks = []
        self._size = 0
        self._frames = 0
        self._open = False
        self._binary = False


# The message kinds the protocol has (its Event types' tags), for error details.
_KINDS: Final = tuple(str(kind.__struct_config__.tag) for kind in get_args(Event))
# Bounds of read_allowance(): a viewer message (~200 bytes) always fits; 16 KiB at most per read.
_MIN_READ: Final = 512
_MAX_READ: Final = 16 * 1024
_SMALLEST_FRAME: Final = 6  # a masked client frame with an empty payload
# Internal marker for RFC framing violations raised by the assembler.
_FRAMING: Final = "framing"
_TEXT: Final = int(Opcode.TEXT)
_KIB: Final = 1.0 / 1024.0


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # our close frame is sent; waiting for the peer's
    CLOSED = "closed"


class Connection:
    """The per-client state machine: assembler, budgets and the per-message rules.

    ``now`` is seconds on any monotonic clock, the same one for every call.
    """

    __slots__ = (
        "_allow",
        "_allowed",
        "_assembler",
        "_charge",
        "_host",
        "_host_limited",
        "_max_size",
        "_messages",
        "_over_since",
        "_restricted",
        "_state",
        "_told",
        "_work",
        "dropped",
        "frames",
        "limits",
        "name",
        "pause_until",
        "role",
    )

    def __init__(
        self,
        limits: ConnectionLimits,
        now: float,
        *,
        role: Role = Role.DRIVE,
        name: str = "",
        host: TokenBucket | None = None,
    ) -> None:
        """``role`` and ``name`` are the client's token's; ``host`` its address's shared message bucket."""
        self.limits = limits
        self.role = role
        self.name = name
        self._restricted = PERMITTED[role] is not None
        self._messages = TokenBucket(limits.rate, limits.burst, now)
        self._host = host
        self._host_limited = False
        self._work = TokenBucket(
            limits.work_rate, limits.work_burst, now, floor=-limits.work_burst,
            start=min(limits.work_start, limits.work_burst),
        )
        self._assembler: MessageAssembler | None = None
        # Bound once: receive() runs for every frame.
        self._charge = self._work.charge
        self._allow = self._messages.allow if host is None else self._allow_both
        self._max_size = limits.max_message_size
        self._state = _State.OPEN
        self._over_since: float | None = None
        self._told: dict[str, float] = {}
        self.pause_until: float | None = None
        self.frames = 0
        self.dropped = 0
        self._allowed = 0  # messages accepted in a prepaid run, charged at its end

    @property
    def closing(self) -> bool:
        return self._state is not _State.OPEN

    # -- input ----------------------------------------------------------------

    def receive(self, opcode: int, fin: bool, payload: bytes, now: float, rsv: int = 0) -> Result:
        """One frame as parsed off the wire (masking removed), at ``now``."""
        if (
            opcode == _TEXT and fin and not rsv and self._state is _State.OPEN and self._assembler is None
            and len(payload) <= self._max_size
        ):  # fmt: skip
            return self._text(payload, now)
        self.frames += 1
        if self._state is not _State.OPEN:
            return self._after_close(opcode, payload, now)
        flood = self._admit(payload, now)
        if flood is not None:
            return flood
        if rsv:
            return self._fail(CloseCode.PROTOCOL_ERROR, f"reserved bits {rsv:#x} set, but no extension was negotiated")
        if opcode >= Opcode.CLOSE:
            return self._control(opcode, payload, now)
        # Fragments, binary frames, and a frame too big (the assembler refuses it by size).
        assembled = self._assemble(opcode, fin, payload, now)
        if not isinstance(assembled, bytes):
            return assembled
        return self._message(assembled, now)

    def receive_texts(self, payloads: Sequence[bytes], now: float, start: int = 0) -> tuple[list[Result], int]:
        """Whole text frames that arrived together (one read), from ``payloads[start]`` on, at ``now``.

        The same as :meth:`receive` for each, in order, up to the first frame
        it cannot take as one: the connection is no longer open (a close, for
        flooding or an error, ends the run), a fragmented message is open (a
        new one inside it is a framing error) or the frame is over
        ``max_message_size``. Returns the results of the frames taken and the
        index of the first one not taken; the caller hands that one to
        :meth:`receive`, then may start another run after it.
        """
        end = len(payloads)
        if self._state is _State.OPEN and self._assembler is None and self._prepay(payloads, start, now):
            # Every frame of the run paid for already: each handled as _text would, minus the budgets.
            allow = self._allow
            self._allow = self._prepaid_allow
            self.frames += end - start
            try:
                return list(map(self._message_in, payloads[start:], itertools.repeat(now))), end
            finally:
                self._allow = allow
                self._settle_prepaid(now)
        results: list[Result] = []
        append = results.append
        max_size = self._max_size
        text = self._text
        for index in range(start, end):
            payload = payloads[index]
            if self._state is not _State.OPEN or self._assembler is not None or len(payload) > max_size:
                return results, index
            append(text(payload, now))
        return results, end

    def resumed(self, now: float) -> None:
        """The server has started reading again after :attr:`pause_until`."""
        self.pause_until = None

    def closed(self) -> None:
        """The transport is gone; nothing more will be received."""
        self._state = _State.CLOSED

    def close(self, code: int, reason: str) -> Close:
        """The bridge itself ends the connection (shutdown, a client that does not read)."""
        if self._state is _State.OPEN:
            self._state = _State.CLOSING
        return Close(code, reason)

    # -- internals --------------------------------------------------------------

    def _admit(self, payload: bytes, now: float) -> Close | None:
        """Charge a frame to the work budget before anything is parsed: looking at it costs whatever it holds."""
        if self._over_since is not None and self._work.level(now) >= self.limits.work_burst / 2:
            self._over_since = None  # the budget refilled halfway: that flood is over
        if self._charge(1.0 + len(payload) * _KIB, now) < 0.0:
            return self._in_debt(now)
        return None

    def _prepay(self, payloads: Sequence[bytes], start: int, now: float) -> bool:
        """Charge a run's frames at once, if its budgets cover the most it could cost; whether they did.

        The most is every frame's charge, every frame's malformed surcharge,
        and a message token for every frame. With that much in every bucket
        no charge in the run can reach debt nor any message be refused, so
        the connection stays open through it, and charges at one instant add
        up in any order: paying the frames' charge first, and the messages'
        once at the end (:meth:`_settle_prepaid`), leaves every bucket where
        frame-by-frame handling would. A run with a frame too big for the
        fast path is not prepaid.
        """
        if self._over_since is not None:
            return False
        count = len(payloads) - start
        if not count:
            return False
        lengths = list(map(len, payloads[start:]))
        largest = max(lengths)
        charge = count + sum(lengths) * _KIB
        host = self._host
        if (
            largest > self._max_size  # the assembler refuses it, in receive()
            or self._work.level(now) < charge + count * self.limits.malformed_cost
            or self._messages.level(now) < count
            or (host is not None and host.level(now) < count)
        ):  # fmt: skip
            return False
        self._charge(charge, now)
        return True

    def _prepaid_allow(self, now: float) -> bool:
        self._allowed += 1
        return True

    def _settle_prepaid(self, now: float) -> None:
        allowed = self._allowed
        if allowed:
            self._messages.charge(allowed, now)
            if self._host is not None:
                self._host.charge(allowed, now)
        self._allowed = 0

    def _text(self, payload: bytes, now: float) -> Result:
        """A whole message in one text frame, while open: the common case, a twist, handled first."""
        self.frames += 1
        flood = self._admit(payload, now)
        if flood is not None:
            return flood
        return self._message_in(payload, now)

    def _message_in(self, payload: bytes, now: float) -> Result:
        """A whole message's rules, its frame charged."""
        try:
            event = parse_message(payload)
        except ProtocolError as exc:
            return self._penalize(now) or Refusal(exc.reason, exc.detail, exc.field)
        if type(event) is TwistCommand:
            if self._restricted:
                return self._forbidden("twist", now)
            if (
                event.linear_x or event.linear_y or event.linear_z
                or event.angular_x or event.angular_y or event.angular_z
            ) and not self._allow(now):
                return self._rate_limited(now)
            return event  # a zero twist is never limited: a client's own rate must not keep its robot moving
        return self._event(event, now)

    def _assemble(self, opcode: int, fin: bool, payload: bytes, now: float) -> bytes | Result:
        assembler = self._assembler
        if assembler is None:
            assembler = self._assembler = MessageAssembler(self.limits.max_message_size, self.limits.max_fragments)
        try:
            return assembler.feed(opcode, fin, payload)
        except ProtocolError as exc:
            return self._framing_error(exc, now)
        finally:
            if not assembler.in_message:
                self._assembler = None

    def _message(self, data: bytes, now: float) -> Result:
        try:
            event = parse_message(data)
        except ProtocolError as exc:
            return self._penalize(now) or Refusal(exc.reason, exc.detail, exc.field)
        return self._event(event, now)

    def _event(self, event: Event, now: float) -> Result:
        kind = type(event)
        if self._restricted:
            tag = kind.__struct_config__.tag
            if not may_send(self.role, str(tag)):
                return self._forbidden(str(tag), now)
        if kind is Stop or kind is Estop or (kind is TwistCommand and _is_zero(event)):  # type: ignore[arg-type]
            # Never limited: a client's own rate must not keep its robot moving.
            return event
        if not self._allow(now):
            return self._rate_limited(now)
        if kind is Click and event.z is None:  # type: ignore[union-attr]
            assert isinstance(event, Click)
            where = event.entity_path or "an entity"
            return Refusal(
                Reason.CLICK_NOT_3D,
                f"click at ({event.x}, {event.y}) on {where} has no z: it came from a 2D view and is not a "
                "point in the world, so it was not published",
                "z",
            )
        return event

    def tell_once(self, reason: str, now: float) -> bool:
        """Whether to send a refusal for ``reason`` now: a repeated one is told at most once a second."""
        if now - self._told.get(reason, -math.inf) >= 1.0:
            self._told[reason] = now
            return True
        return False

    def _allow_both(self, now: float) -> bool:
        """The message budget with a shared per-address bucket: a message spends from both."""
        if not self._messages.allow(now):
            self._host_limited = False
            return False
        host = self._host
        assert host is not None
        if host.allow(now):
            return True
        self._host_limited = True
        return False

    def _rate_limited(self, now: float) -> Refusal:
        self.dropped += 1
        tell = self.tell_once(Reason.RATE_LIMITED, now)
        if self._host_limited and self._host is not None:
            what = (
                f"more than {self._host.rate:g} messages/s (burst {self._host.burst:g}) from your address, "
                "over all its connections"
            )
        else:
            what = f"more than {self.limits.rate:g} messages/s (burst {self.limits.burst:g})"
        return Refusal(
            Reason.RATE_LIMITED,
            f"{what}; excess messages are dropped ('stop' and zero twists never are)",
            tell=tell,
        )

    def _forbidden(self, kind: str, now: float) -> Refusal:
        # Told once a second per kind of message: a held key on a view-only page must not flood it.
        tell = self.tell_once(f"{Reason.FORBIDDEN}:{kind}", now)
        permitted = PERMITTED[self.role] or _KINDS
        may = ", ".join(k for k in _KINDS if k in permitted and k != "heartbeat") or "no commands"
        who = f"token {self.name!r} has" if self.name else "this connection has"
        return Refusal(
            Reason.FORBIDDEN,
            f"{who} role {self.role.value!r}, which may send {may}: the {kind} was not acted on",
            tell=tell,
        )

    def _control(self, opcode: int, payload: bytes, now: float) -> Result:
        if opcode == Opcode.PING:
            return Pong(payload)
        if opcode == Opcode.PONG:
            return Answered(payload) if payload else None
        if opcode == Opcode.CLOSE:
            self._state = _State.CLOSED
            if len(payload) >= 2:
                code = int.from_bytes(payload[:2], "big")
                if not valid_close_code(code):
                    return Close(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}", answered=True)
                return Close(code, answered=True)
            return Close(CloseCode.NORMAL, answered=True)
        return self._fail(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")

    def _framing_error(self, exc: ProtocolError, now: float) -> Result:
        if exc.reason == Reason.BINARY_FRAME:
            return self._penalize(now) or Refusal(exc.reason, exc.detail, exc.field)
        if exc.reason == Reason.MESSAGE_TOO_BIG:
            return self._fail(CloseCode.MESSAGE_TOO_BIG, exc.detail)
        return self._fail(CloseCode.PROTOCOL_ERROR, exc.detail)

    def _penalize(self, now: float) -> Close | None:
        """The surcharge for a malformed message, which cost the parser more than a valid one."""
        if self._work.charge(self.limits.malformed_cost, now) < 0.0:
            return self._in_debt(now)
        return None

    def _in_debt(self, now: float) -> Close | None:
        """The work budget is spent: pause reading, and close a client that keeps it spent."""
        if self._over_since is None:
            self._over_since = now
        elif now - self._over_since >= self.limits.flood_close_after:
            return self._fail(
                CloseCode.POLICY_VIOLATION,
                f"flooding: over the frame budget for {self.limits.flood_close_after:g} s",
            )
        if self.pause_until is None:
            self.pause_until = now + self._work.time_until(0.0, now)
        return None

    def _after_close(self, opcode: int, payload: bytes, now: float) -> Result:
        # After our close frame the peer's data is moot; its close frame completes the handshake.
        if opcode == Opcode.CLOSE and self._state is _State.CLOSING:
            self._state = _State.CLOSED
            return Close(CloseCode.NORMAL, answered=True)
        # Still charged: a flooder closed for flooding keeps sending, and reading that backlog at full
        # speed until the close grace runs out would cost the loop what the budget was there to bound.
        if self._charge(1.0 + len(payload) * _KIB, now) < 0.0 and self.pause_until is None:
            self.pause_until = now + self._work.time_until(0.0, now)
        return None

    def read_allowance(self, now: float) -> int:
        """How many bytes to read from the socket next: enough for the frames the work budget still covers.

        A read of tiny frames (an empty fragment is 6 bytes) would otherwise hand the loop thousands of
        frames in one callback, whatever the budget says; never less than a real message needs.
        """
        level = self._work.level(now)
        return max(_MIN_READ, min(_MAX_READ, int(level) * _SMALLEST_FRAME))

    def _fail(self, code: int, reason: str) -> Close:
        self._state = _State.CLOSING
        return Close(code, reason)


def _is_zero(event: TwistCommand) -> bool:
    return not (
        event.linear_x or event.linear_y or event.linear_z or event.angular_x or event.angular_y or event.angular_z
    )

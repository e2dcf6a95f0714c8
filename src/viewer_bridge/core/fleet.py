"""The fleet, sans I/O: the wire between operator stations and robot agents, and the agent's safety rules.

A fleet is one or more operator stations (``viewer-bridge serve`` with a
``robots`` table) and one ``viewer-bridge agent`` per robot, joined by Zenoh
(peers, or clients of ``zenohd`` routers). Everything that crosses Zenoh is
defined here: the key expressions, the three messages and their codecs, and
the robot-side state machine :class:`FleetAgent`, which owns the robot's last
line of safety. Nothing here reads a clock or touches a socket: times are
arguments, so every rule is tested to the boundary (``tests/core/test_fleet.py``).

Key expressions (a robot or station name is one key chunk, see :func:`check_name`)::

    viewer_bridge/fleet/<robot>/cmd              station -> agent: Order
    viewer_bridge/fleet/<robot>/state            agent -> every station: AgentState
    viewer_bridge/fleet/<robot>/reply/<station>  agent -> one station: Reply (a refused order)
    viewer_bridge/fleet/<robot>/agent            liveliness token of the robot's agent
    viewer_bridge/station/<station>/<epoch>      liveliness token of one station process

Each side may only write its own keys, which is what the example Zenoh access
control rules in ``docs/fleet.md`` enforce.

Messages are MessagePack arrays (msgspec), version first. A velocity travels
in DimOS's LCM encoding of ``geometry_msgs.Twist`` (56 bytes) and a click in
that of ``geometry_msgs.PointStamped``, so an agent republishes the bytes
DimOS expects without a conversion of its own.

The agent's rules, and why:

* One driver, named across stations. The lease is held by a drive: a
  station process (name and a random ``epoch`` per start), one of its
  clients, and the station's drive number. Another station's twists are
  refused (``not_driver``, naming who drives) while it is held.
* Anyone's stop wins at once: a ``STOP`` from any station publishes one zero
  and ends whatever drive is in force, and that drive is never resumed (its
  station hears ``stopped_by_other`` and must start a new one).
* The deadman is on the robot. A non-zero command lapses ``link_timeout``
  after its last refresh (the station refreshes it while someone drives);
  then exactly one zero is published. The same zero comes at once when the
  holding station's liveliness token disappears or the agent loses every
  link (its router).
* Nothing stale is replayed. Orders carry a sequence number per station
  process: anything not newer than the last one handled is dropped. A drive
  that ended on the robot's side (lapsed, stopped, e-stopped, link lost) is
  closed: late orders of it (a TCP buffer that drains when a cut link comes
  back) are refused with the reason, and only a new drive moves the robot.
  Orders from a station process known to be gone are dropped.
* A latched e-stop holds until someone clears it, from any station: one zero
  and ``estop`` set, every twist and click refused (``estopped``).
* After a stop, silence: one zero ends each drive, no stream of zeros.
"""

from __future__ import annotations

import enum
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, TypeVar, Union

import msgspec

from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist

__all__ = [
    "ALL_AGENTS",
    "ALL_STATES",
    "ALL_STATIONS",
    "PROTOCOL_VERSION",
    "AgentDecision",
    "AgentLatch",
    "AgentState",
    "Ended",
    "FleetAgent",
    "FleetWireError",
    "Holder",
    "Kind",
    "Order",
    "Reply",
    "agent_key",
    "check_name",
    "command_key",
    "decode_order",
    "decode_reply",
    "decode_state",
    "encode_order",
    "encode_reply",
    "encode_state",
    "estop_mirror",
    "replies_for",
    "reply_key",
    "robot_of",
    "state_key",
    "station_key",
    "station_of",
]

PROTOCOL_VERSION: Final = 1
_ROOT: Final = "viewer_bridge"
_FLEET: Final = f"{_ROOT}/fleet"
_STATIONS: Final = f"{_ROOT}/station"
ALL_AGENTS: Final = f"{_FLEET}/*/agent"
ALL_STATES: Final = f"{_FLEET}/*/state"
ALL_STATIONS: Final = f"{_STATIONS}/*/*"

# One Zenoh key chunk, and a readable name: no '/', no wildcard or verbatim characters ('*', '$', '@', '#', '?').
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
# Client names come from the station (a token's name, or "#0003"); bounded so a reply stays small.
_MAX_CLIENT: Final = 128
_MAX_REASON: Final = 200
_U64: Final = (1 << 64) - 1
_TWIST_SIZE: Final = 56
# Station processes remembered (last sequence number, closed drive, or gone), oldest forgotten first.
_MAX_STATIONS: Final = 1024


class FleetWireError(ValueError):
    """Bytes on a fleet key that are not a valid message; the message says what is wrong."""


def check_name(kind: str, name: str) -> str:
    """``name`` if it can name a robot or station (one key chunk); ValueError naming it otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-63 letters, digits, '_', '-' or '.', not starting with '-' or '.'"
        )
    return name


def command_key(robot: str) -> str:
    return f"{_FLEET}/{robot}/cmd"


def state_key(robot: str) -> str:
    return f"{_FLEET}/{robot}/state"


def reply_key(robot: str, station: str) -> str:
    return f"{_FLEET}/{robot}/reply/{station}"


def replies_for(station: str) -> str:
    """Every robot's replies to ``station``."""
    return f"{_FLEET}/*/reply/{station}"


def agent_key(robot: str) -> str:
    return f"{_FLEET}/{robot}/agent"


def station_key(station: str, epoch: int) -> str:
    return f"{_STATIONS}/{station}/{epoch:016x}"


def robot_of(key: str) -> str | None:
    """The robot a ``viewer_bridge/fleet/<robot>/...`` key is about, or None."""
    parts = key.split("/")
    if len(parts) < 4 or parts[0] != _ROOT or parts[1] != "fleet" or not _NAME_RE.match(parts[2]):
        return None
    return parts[2]


def station_of(key: str) -> tuple[str, int] | None:
    """``(station, epoch)`` of a station's liveliness key, or None."""
    parts = key.split("/")
    if len(parts) != 4 or parts[0] != _ROOT or parts[1] != "station" or not _NAME_RE.match(parts[2]):
        return None
    try:
        epoch = int(parts[3], 16)
    except ValueError:
        return None
    return (parts[2], epoch) if len(parts[3]) == 16 else None


# -- messages --------------------------------------------------------------------------------------


class Kind(enum.IntEnum):
    """What an order asks of the robot."""

    TWIST = 1
    """Drive (or keep driving) with this velocity: the drive's first order takes the lease."""
    STOP = 2
    """A person's explicit stop: one zero now, whatever drives."""
    RELEASE = 3
    """The station ended this drive (released, its own deadman, disconnect, shutdown): zero if still in force."""
    ESTOP = 4
    ESTOP_CLEAR = 5
    CLICK = 6
    """A navigation goal."""


@dataclass(frozen=True, slots=True)
class Order:
    """One order from a station to a robot's agent, decoded.

    ``epoch`` tells station processes apart (random per start) and ``seq``
    increases with every order a station process sends, to any robot.
    ``drive`` is the station's number for the drive (one lease) an order
    belongs to; 0 for orders outside a drive. ``client`` names who at the
    station it comes from. The payload is ``twist`` (TWIST), ``point``
    (CLICK) or ``reason`` (ESTOP, optional).
    """

    kind: Kind
    station: str
    epoch: int
    seq: int
    client: str
    drive: int = 0
    twist: Twist | None = None
    point: PointStamped | None = None
    reason: str | None = None

    @property
    def who(self) -> str:
        return f"{self.client} at {self.station}"


class _OrderWire(msgspec.Struct, array_like=True, frozen=True):
    version: int
    kind: int
    station: str
    epoch: int
    seq: int
    client: str
    drive: int
    body: bytes


class Holder(msgspec.Struct, array_like=True, frozen=True):
    """Who holds a robot's lease: a station process, its client, and the station's drive number."""

    station: str
    epoch: int
    client: str
    drive: int

    @property
    def who(self) -> str:
        return f"{self.client} at {self.station}"


class AgentLatch(msgspec.Struct, array_like=True, frozen=True):
    """A latched e-stop on the robot: who latched it, when (the agent's wall clock, epoch seconds), why."""

    by: str
    at: float
    reason: Union[str, None] = None


class Reply(msgspec.Struct, array_like=True, frozen=True):
    """An agent's answer to one refused order, sent to the station it came from.

    ``reason`` is a protocol error reason (``not_driver``, ``stopped_by_other``,
    ``estopped``, ``lapsed``, ``non_finite``); ``who`` names the driver, who
    stopped the drive, or who latched the e-stop.
    """

    version: int
    robot: str
    epoch: int
    seq: int
    client: str
    drive: int
    reason: str
    who: Union[str, None] = None


class AgentState(msgspec.Struct, array_like=True, frozen=True):
    """What a robot's agent tells every station, when it changes and periodically.

    ``agent`` is the agent process's random epoch and ``seq`` increases with
    every state it publishes, so a station keeps only the newest. ``seen``
    maps each live station process's epoch to the last order sequence number
    the agent handled from it (how a station knows its own e-stop orders were
    seen). ``linked``: the agent has a router or peer. ``zeros`` counts the
    zeros published, by cause.
    """

    version: int
    robot: str
    agent: int
    seq: int
    link_timeout: float
    holder: Union[Holder, None] = None
    estop: Union[AgentLatch, None] = None
    seen: dict[int, int] = {}
    linked: bool = True
    zeros: dict[str, int] = {}


_encoder: Final = msgspec.msgpack.Encoder()
_order_decoder: Final = msgspec.msgpack.Decoder(_OrderWire)
_reply_decoder: Final = msgspec.msgpack.Decoder(Reply)
_state_decoder: Final = msgspec.msgpack.Decoder(AgentState)
_W = TypeVar("_W", _OrderWire, Reply, AgentState)


def _decode(decoder: msgspec.msgpack.Decoder[_W], data: bytes, what: str, reader: str) -> _W:
    """``data`` as ``what``, in this protocol version; :class:`FleetWireError` naming the fault otherwise."""
    try:
        value = decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise FleetWireError(f"not {what}: {exc}") from None
    if value.version != PROTOCOL_VERSION:
        raise FleetWireError(f"fleet protocol version {value.version}; {reader} speaks {PROTOCOL_VERSION}")
    return value


def encode_order(order: Order) -> bytes:
    if order.kind is Kind.TWIST:
        assert order.twist is not None
        body = order.twist.lcm_encode()
    elif order.kind is Kind.CLICK:
        assert order.point is not None
        body = order.point.lcm_encode()
    elif order.kind is Kind.ESTOP and order.reason is not None:
        body = order.reason.encode("utf-8")
    else:
        body = b""
    return _encoder.encode(
        _OrderWire(
            PROTOCOL_VERSION, int(order.kind), order.station, order.epoch, order.seq, order.client, order.drive, body
        )
    )


def decode_order(data: bytes) -> Order:
    """An order from the wire; :class:`FleetWireError` saying what is wrong for anything else."""
    wire = _decode(_order_decoder, data, "a fleet order", "this agent")
    try:
        kind = Kind(wire.kind)
    except ValueError:
        raise FleetWireError(f"unknown order kind {wire.kind}") from None
    if not _NAME_RE.match(wire.station):
        raise FleetWireError(f"invalid station name {wire.station[:80]!r}")
    if not wire.client or len(wire.client) > _MAX_CLIENT or not wire.client.isprintable():
        raise FleetWireError(f"invalid client name {wire.client[:80]!r}")
    for name, value in (("epoch", wire.epoch), ("seq", wire.seq), ("drive", wire.drive)):
        if not 0 <= value <= _U64:
            raise FleetWireError(f"{name} {value} is out of range")
    body = wire.body
    twist = point = reason = None
    if kind is Kind.TWIST:
        if len(body) != _TWIST_SIZE:
            raise FleetWireError(f"a twist order carries a {_TWIST_SIZE}-byte LCM Twist, got {len(body)} bytes")
        try:
            twist = Twist.lcm_decode(body)
        except Exception as exc:
            raise FleetWireError(f"twist body is not an LCM geometry_msgs.Twist: {exc}") from None
    elif kind is Kind.CLICK:
        try:
            point = PointStamped.lcm_decode(body)
        except Exception as exc:
            raise FleetWireError(f"click body is not an LCM geometry_msgs.PointStamped: {exc}") from None
    elif kind is Kind.ESTOP and body:
        try:
            reason = body.decode("utf-8")
        except UnicodeDecodeError:
            raise FleetWireError("e-stop reason is not UTF-8") from None
        if len(reason) > _MAX_REASON:
            raise FleetWireError(f"e-stop reason is {len(reason)} characters; at most {_MAX_REASON}")
    elif body:
        raise FleetWireError(f"a {kind.name.lower()} order carries no body, got {len(body)} bytes")
    return Order(kind, wire.station, wire.epoch, wire.seq, wire.client, wire.drive, twist, point, reason)


def encode_reply(reply: Reply) -> bytes:
    return _encoder.encode(reply)


def decode_reply(data: bytes) -> Reply:
    return _decode(_reply_decoder, data, "a fleet reply", "this station")


def encode_state(state: AgentState) -> bytes:
    return _encoder.encode(state)


def decode_state(data: bytes) -> AgentState:
    return _decode(_state_decoder, data, "a fleet agent state", "this station")


# -- the agent ------------------------------------------------------------------------------------------


class Ended(enum.StrEnum):
    """Why a drive ended on the robot (one zero published); log and metric labels."""

    STOP = "stop"
    RELEASE = "release"
    LAPSED = "lapsed"
    STATION_GONE = "station_gone"
    LINK_LOST = "link_lost"
    ESTOP = "estop"
    SHUTDOWN = "shutdown"


TELE_CMD_VEL: Final = "tele_cmd_vel"
STOP_MOVEMENT: Final = "stop_movement"
ESTOP: Final = "estop"
CLICKED_POINT: Final = "clicked_point"
_ZERO: Final = Twist.zero()

Publish = tuple[str, Message]


class AgentDecision(msgspec.Struct, frozen=True, gc=False):
    """What one input to the agent led to.

    ``publish`` lists ``(stream, message)`` for the robot's bus, in order.
    ``reply`` answers a refused order. ``ended`` says why a drive ended (and
    ``previous`` whose), ``started`` who took the lease. ``dropped`` says why
    an order was ignored without an answer (``stale``: not newer than one
    already handled; ``gone``: from a station process that has left;
    ``closed``: a late order of a drive its own station ended). ``changed``:
    what stations see (holder, e-stop) changed.
    """

    publish: tuple[Publish, ...] = ()
    reply: Union[Reply, None] = None
    ended: Union[Ended, None] = None
    previous: Union[Holder, None] = None
    started: Union[Holder, None] = None
    dropped: Union[str, None] = None
    changed: bool = False


_NOTHING: Final = AgentDecision()
_STALE: Final = AgentDecision(dropped="stale")
_GONE: Final = AgentDecision(dropped="gone")
_CLOSED: Final = AgentDecision(dropped="closed")


class FleetAgent:
    """The robot-side state machine: lease across stations, the robot's deadman, e-stop, no replays.

    ``link_timeout`` is how long a command stays in force without a refresh.
    ``announce_drive`` publishes one ``stop_movement`` when a drive starts (so
    a planner cancels its goal). ``epoch`` identifies this agent process in
    its state. Every method takes ``now`` (the agent's monotonic clock, in
    seconds); ``wall`` (epoch seconds) only stamps an e-stop.
    """

    def __init__(
        self, robot: str, *, link_timeout: float = 0.5, announce_drive: bool = True, epoch: int = 0
    ) -> None:
        check_name("robot", robot)
        if not (math.isfinite(link_timeout) and link_timeout > 0):
            raise ValueError(f"link_timeout must be a finite number > 0, got {link_timeout!r}")
        self.robot = robot
        self.link_timeout = link_timeout
        self.announce_drive = announce_drive
        self.epoch = epoch
        self.holder: Holder | None = None
        self.command: Twist | None = None
        self.deadline = math.inf
        self.estop: AgentLatch | None = None
        self.linked = True
        # Per station process (epoch): the last order sequence number handled.
        self._seen: OrderedDict[int, int] = OrderedDict()
        # Per station process: the newest drive that ended here, why ("released" needs no answer) and by whom.
        self._closed: OrderedDict[int, tuple[int, str, str | None]] = OrderedDict()
        self._gone: OrderedDict[int, None] = OrderedDict()
        # Counters.
        self.zeros: dict[str, int] = {}
        self.orders = 0
        self.refused: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    # -- inputs ----------------------------------------------------------------------------------

    def receive(self, order: Order, now: float, wall: float = 0.0) -> AgentDecision:
        """An order from a station."""
        epoch = order.epoch
        if epoch in self._gone and order.kind not in (Kind.STOP, Kind.ESTOP):
            # A gone station's late orders are dropped; a person's stop or e-stop is honoured however it arrives.
            return self._drop(_GONE)
        last = self._seen.get(epoch)
        if last is not None and order.seq <= last:
            return self._drop(_STALE)
        self._remember(self._seen, epoch, order.seq)
        self.orders += 1
        if self.holder is not None and now >= self.deadline:
            # The command in force lapsed before this order was handled (a late timer): end it first.
            return self._merge(self._halt(Ended.LAPSED, "lapsed", None), self._handle(order, now, wall))
        return self._handle(order, now, wall)

    def tick(self, now: float) -> AgentDecision:
        """Advance time: the deadman, if due."""
        if self.holder is not None and now >= self.deadline:
            return self._halt(Ended.LAPSED, "lapsed", None)
        return _NOTHING

    def station_gone(self, station: str, epoch: int, now: float) -> AgentDecision:
        """A station process's liveliness token disappeared: its drive ends, its late orders are dropped."""
        self._seen.pop(epoch, None)
        self._closed.pop(epoch, None)
        self._remember(self._gone, epoch, None)
        holder = self.holder
        if holder is not None and holder.epoch == epoch:
            return self._halt(Ended.STATION_GONE, "lapsed", None)
        return _NOTHING

    def station_back(self, station: str, epoch: int) -> None:
        """A station process's token is back (its link flapped): its new orders count again."""
        self._gone.pop(epoch, None)

    def link_lost(self, now: float) -> AgentDecision:
        """The agent has no router or peer left: whatever drives ends now."""
        self.linked = False
        if self.holder is not None:
            return self._halt(Ended.LINK_LOST, "lapsed", None)
        return AgentDecision(changed=True)

    def link_back(self, now: float) -> AgentDecision:
        self.linked = True
        return AgentDecision(changed=True)

    def shutdown(self, now: float) -> AgentDecision:
        """The agent is going away: stop whatever drives."""
        if self.holder is not None:
            return self._halt(Ended.SHUTDOWN, "lapsed", None)
        return _NOTHING

    def next_deadline(self) -> float | None:
        return self.deadline if self.holder is not None else None

    def state(self, seq: int) -> AgentState:
        return AgentState(
            PROTOCOL_VERSION,
            self.robot,
            self.epoch,
            seq,
            self.link_timeout,
            self.holder,
            self.estop,
            dict(self._seen),
            self.linked,
            dict(self.zeros),
        )

    # -- orders -------------------------------------------------------------------------------------

    def _handle(self, order: Order, now: float, wall: float) -> AgentDecision:
        kind = order.kind
        if kind is Kind.TWIST:
            return self._twist(order, now)
        if kind is Kind.RELEASE:
            return self._release(order)
        if kind is Kind.STOP:
            return self._stop(order)
        if kind is Kind.ESTOP:
            return self._latch(order, wall)
        if kind is Kind.ESTOP_CLEAR:
            if self.estop is None:
                return _NOTHING
            self.estop = None
            return AgentDecision(((ESTOP, Bool(False)),), changed=True)
        # A click: a goal, from anyone, unless the e-stop holds.
        if self.estop is not None:
            return self._refuse(order, "estopped", self.estop.by)
        assert order.point is not None
        return AgentDecision(((CLICKED_POINT, order.point),))

    def _twist(self, order: Order, now: float) -> AgentDecision:
        twist = order.twist
        assert twist is not None
        holder = self.holder
        if not twist.is_finite():
            return self._refuse(order, "non_finite", None)
        if twist.is_zero():
            # A zero twist is the drive's release.
            return self._release(order)
        closed = self._closed.get(order.epoch)
        if closed is not None and order.drive <= closed[0]:
            # A late order of a drive that ended here: never resumed, only a new drive moves the robot.
            if closed[1] == "released":
                return self._drop(_CLOSED)
            return self._refuse(order, closed[1], closed[2])
        if holder is not None and holder.epoch != order.epoch:
            return self._refuse(order, "not_driver", holder.who)
        if self.estop is not None:
            return self._refuse(order, "estopped", self.estop.by)
        if holder is not None and order.drive < holder.drive:
            return self._drop(_STALE)
        self.command = twist
        self.deadline = now + self.link_timeout
        if holder is not None and holder.drive == order.drive:
            return AgentDecision(((TELE_CMD_VEL, twist),))
        # A new drive: from nobody, or the same station's next drive (its release of the last one was lost).
        started = Holder(order.station, order.epoch, order.client, order.drive)
        self.holder = started
        if holder is not None:
            self._close(holder, "released", None)
        if self.announce_drive and holder is None:
            return AgentDecision(((STOP_MOVEMENT, Bool(True)), (TELE_CMD_VEL, twist)), started=started, changed=True)
        return AgentDecision(((TELE_CMD_VEL, twist),), started=started, changed=True)

    def _release(self, order: Order) -> AgentDecision:
        holder = self.holder
        if holder is not None and holder.epoch == order.epoch and holder.drive == order.drive:
            return self._halt(Ended.RELEASE, "released", None)
        # Not the drive in force (it already ended here, with its one zero): nothing to publish.
        return _NOTHING

    def _stop(self, order: Order) -> AgentDecision:
        holder = self.holder
        if holder is None:
            # Every explicit stop acts, whoever drives or nobody.
            self.zeros[Ended.STOP] = self.zeros.get(Ended.STOP, 0) + 1
            return AgentDecision(((TELE_CMD_VEL, _ZERO),))
        own = holder.epoch == order.epoch and holder.client == order.client
        if own:
            return self._halt(Ended.STOP, "released", None)
        return self._halt(Ended.STOP, "stopped_by_other", order.who)

    def _latch(self, order: Order, wall: float) -> AgentDecision:
        if self.estop is not None:
            return _NOTHING
        self.estop = AgentLatch(order.who, wall, order.reason)
        if self.holder is not None:
            halted = self._halt(Ended.ESTOP, "estopped", order.who)
            return AgentDecision(
                ((ESTOP, Bool(True)), *halted.publish), ended=halted.ended, previous=halted.previous, changed=True
            )
        self.zeros[Ended.ESTOP] = self.zeros.get(Ended.ESTOP, 0) + 1
        return AgentDecision(((ESTOP, Bool(True)), (TELE_CMD_VEL, _ZERO)), changed=True)

    # -- internals ----------------------------------------------------------------------------------

    def _halt(self, cause: Ended, why: str, by: str | None) -> AgentDecision:
        previous = self.holder
        assert previous is not None
        self._close(previous, why, by)
        self.holder = None
        self.command = None
        self.deadline = math.inf
        self.zeros[cause] = self.zeros.get(cause, 0) + 1
        return AgentDecision(((TELE_CMD_VEL, _ZERO),), ended=cause, previous=previous, changed=True)

    def _close(self, holder: Holder, why: str, by: str | None) -> None:
        if holder.epoch not in self._gone:
            self._remember(self._closed, holder.epoch, (holder.drive, why, by))

    def _refuse(self, order: Order, reason: str, who: str | None) -> AgentDecision:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        reply = Reply(PROTOCOL_VERSION, self.robot, order.epoch, order.seq, order.client, order.drive, reason, who)
        return AgentDecision(reply=reply)

    def _drop(self, decision: AgentDecision) -> AgentDecision:
        why = decision.dropped
        assert why is not None
        self.dropped[why] = self.dropped.get(why, 0) + 1
        return decision

    @staticmethod
    def _remember(table: OrderedDict, key: int, value: object) -> None:  # type: ignore[type-arg]
        table[key] = value
        table.move_to_end(key)
        if len(table) > _MAX_STATIONS:
            table.popitem(last=False)

    @staticmethod
    def _merge(first: AgentDecision, then: AgentDecision) -> AgentDecision:
        return AgentDecision(
            first.publish + then.publish,
            then.reply,
            first.ended,
            first.previous,
            then.started,
            then.dropped,
            True,
        )


def estop_mirror(
    latched_here: bool, state: AgentState, station_epoch: int, last_estop_seq: int
) -> str | None:
    """What a station does with its own e-stop for a robot, given the agent's newest state.

    The agent is where the e-stop acts; each station mirrors it so its own
    clients are refused and told. ``"latch"`` when the robot is latched and
    the station is not (someone at another station latched it). ``"clear"``
    when the robot is not latched and the station is: someone cleared it,
    possibly elsewhere. Either only once the agent has seen the station's own
    last e-stop order (``last_estop_seq``, 0 for none): a state older than
    the station's own latch or clear changes nothing, so a state in flight
    can never undo an e-stop just latched or cleared here. A mirrored latch
    or clear is not sent back to the robot.
    """
    if state.seen.get(station_epoch, 0) < last_estop_seq:
        return None
    if state.estop is not None:
        return None if latched_here else "latch"
    return "clear" if latched_here else None

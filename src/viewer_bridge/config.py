"""The bridge's configuration: every setting, its type, default and help, and where values come from.

Each field of :class:`BridgeConfig` carries its help text and bounds in its
``msgspec.Meta`` (see :func:`_setting`). That one place feeds the ``serve``
flags and their ``--help``, the checks on every value, the error messages,
and the settings tables in the README and ``docs/configuration.md`` (a test
compares those with :func:`settings_markdown`).

Precedence, lowest first: defaults, a TOML file, ``VIEWER_BRIDGE_*``
environment variables, command-line flags (or keyword arguments in Python).
Each value is checked where it comes from, so an error names its source (the
flag, the variable, or the file and key), what was expected and what was
given. TOML values are checked strictly (``port = "3135"`` is a string, not
a port); environment variables and flags are text and are parsed. Unknown
keys are errors that name the key, so a typo never silently falls back to a
default on a robot.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Union

import msgspec

from viewer_bridge.core.auth import NamedToken, TokenTable
from viewer_bridge.core.link import LinkLimits
from viewer_bridge.core.roles import Role
from viewer_bridge.core.topics import TopicMap, mux_topics

__all__ = [
    "SETTINGS",
    "TRANSPORT_NAMES",
    "BridgeConfig",
    "ConfigError",
    "Setting",
    "add_flags",
    "flag_values",
    "load_config",
    "settings_markdown",
]

ENV_PREFIX: Final = "VIEWER_BRIDGE_"
# The bus transports a bridge can publish on (see viewer_bridge.bus.transports).
Transport = Literal["lcm", "zenoh"]
TRANSPORT_NAMES: Final[tuple[str, ...]] = typing.get_args(Transport)
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR")
# The TOML table that may hold the settings when the file holds other things too.
TOML_TABLE: Final = "bridge"


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names it, and where it came from."""


def read_token_file(path: str) -> str:
    """The token in a file (its first line; ``~`` expanded): what the bridge and its clients both read.

    Raises :class:`ConfigError` naming the file when it cannot be read or holds none.
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read token_file {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"token_file {path!r} is not UTF-8 text") from None
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError(f"token_file {path!r} is empty")
    return token


def _setting(description: str, **extra: Any) -> msgspec.Meta:
    """A field's help and bounds.

    ``extra`` may hold ``ge``/``gt``/``le`` (numeric bounds), ``nonempty``,
    ``starts_with``, ``flag`` (the command-line flag when it is not the field's
    name, e.g. a repeatable ``--transport``), ``metavar``, ``value`` (what a
    value looks like, when the type alone does not say) and ``file_only``
    (no flag and no environment variable: the setting holds secrets, which
    must not be in argv or the environment).
    """
    return msgspec.Meta(description=description, extra=extra)


_AXES: Final = ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z")


def _scale(axis: str) -> msgspec.Meta:
    kind, _, name = axis.partition("_")
    return _setting(f"factor applied to {kind}.{name} before clamping", metavar="X")


def _clamp(axis: str) -> msgspec.Meta:
    kind, _, name = axis.partition("_")
    unit = "m/s" if kind == "linear" else "rad/s"
    return _setting(f"clamp on |{kind}.{name}| after scaling, in {unit} (none = no clamp)", ge=0, metavar=unit.upper())


Number = float
OptionalNumber = Union[float, None]
OptionalText = Union[str, None]


class RobotSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One robot of a fleet, a ``[robots.NAME]`` table (see docs/fleet.md).

    ``namespace`` prefixes the robot's topics where this station publishes
    them itself (its own ``transports``: robots sharing one bus); a robot with
    an agent publishes on its own bus under the agent's ``--namespace``.
    ``entity_prefix``: a click on an entity under it (e.g.
    ``/world/robots/go2-1``) is a goal for this robot. ``agent``: the robot
    runs ``viewer-bridge agent`` (orders over Zenoh, online when its token is
    seen, its own deadman); false drives it on this station's buses only.
    ``scale_*``/``max_*`` replace the station's limit for this robot.
    """

    namespace: str = ""
    entity_prefix: Union[str, None] = None
    agent: bool = True
    scale_linear_x: Union[float, None] = None
    scale_linear_y: Union[float, None] = None
    scale_linear_z: Union[float, None] = None
    scale_angular_x: Union[float, None] = None
    scale_angular_y: Union[float, None] = None
    scale_angular_z: Union[float, None] = None
    max_linear_x: Union[float, None] = None
    max_linear_y: Union[float, None] = None
    max_linear_z: Union[float, None] = None
    max_angular_x: Union[float, None] = None
    max_angular_y: Union[float, None] = None
    max_angular_z: Union[float, None] = None


class BridgeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    # -- where to listen --------------------------------------------------
    host: Annotated[str, _setting("address to bind; anything but loopback needs a token (or insecure)")] = "127.0.0.1"
    port: Annotated[int, _setting("TCP port; 3030 is what dimos-viewer dials, 0 picks a free one", ge=0, le=65535)] = (
        3030
    )
    path: Annotated[str, _setting("the HTTP path that upgrades to the viewer WebSocket", starts_with="/")] = "/ws"

    # -- what is published ------------------------------------------------
    # The viewer's entity path is not a TF frame, so clicks get this one.
    frame_id: Annotated[str, _setting("frame_id of published clicks", nonempty=True)] = "world"
    remap: Annotated[
        dict[str, str],
        _setting(
            "rename a stream on every bus transport, e.g. tele_cmd_vel=cmd_vel", flag="--remap", metavar="STREAM=TOPIC"
        ),
    ] = {}
    namespace: Annotated[str, _setting("prefix for every topic on the bus, e.g. robot1", metavar="NAME")] = ""
    transports: Annotated[
        list[Transport], _setting("bus to publish on besides in-process subscribers", flag="--transport")
    ] = []
    lcm_url: Annotated[
        OptionalText,
        _setting(
            "LCM URL; none = $LCM_DEFAULT_URL, else udpm://239.255.76.67:7667?ttl=0 (ttl=1 reaches the LAN)",
            metavar="URL",
        ),
    ] = None
    zenoh_mode: Annotated[
        Literal["peer", "client"], _setting("Zenoh session mode: peer, or client (through a zenohd router)")
    ] = "peer"
    zenoh_connect: Annotated[
        list[str],
        _setting("Zenoh endpoint to connect to, e.g. tcp/10.0.0.2:7447", flag="--zenoh-connect", metavar="ENDPOINT"),
    ] = []
    zenoh_listen: Annotated[
        list[str], _setting("Zenoh endpoint to listen on", flag="--zenoh-listen", metavar="ENDPOINT")
    ] = []
    zenoh_multicast_scouting: Annotated[
        bool, _setting("find Zenoh peers by UDP multicast (Zenoh's default); off = only the given endpoints")
    ] = True
    mux: Annotated[
        OptionalText,
        _setting(
            "navigation Twist topic to mux with teleop into mux_output (teleop wins), e.g. nav_cmd_vel; "
            "namespaced like every topic",
            metavar="TOPIC",
        ),
    ] = None
    mux_output: Annotated[
        str,
        _setting(
            "topic the mux publishes: teleop while a person drives (plus mux_cooldown), else navigation",
            metavar="TOPIC",
        ),
    ] = "cmd_vel"
    mux_cooldown: Annotated[
        Number,
        _setting("seconds after the last teleop command before navigation commands pass again", ge=0, metavar="S"),
    ] = 1.0

    # -- compatibility profile (DimOS 0.0.15's stack; see docs/dimos.md) ---
    # "off" suits a DimOS 0.0.15 stack, whose MovementManager announces it (viewer_bridge.dimos's default).
    stop_movement: Annotated[
        Literal["publish", "off"],
        _setting(
            "publish: one stop_movement Bool(True) when someone starts driving (and when teleop takes the "
            "mux from navigation), so a planner can cancel its goal; off: never"
        ),
    ] = "publish"
    click_frame: Annotated[
        Literal["frame_id", "entity_path"],
        _setting(
            "frame_id of published clicks: the frame_id setting, or the viewer's entity path as DimOS 0.0.15 "
            "does (frame_id when a click carries none)"
        ),
    ] = "frame_id"
    # A far pick is a mis-click: DimOS's MovementManager drops goals beyond 500 m horizontally and 50 m
    # vertically, and the DimOS module defaults to those.
    max_goal_distance: Annotated[
        OptionalNumber,
        _setting(
            "refuse clicks farther than this from the frame's origin horizontally, in metres, with "
            "goal_out_of_range (none = no limit)",
            gt=0,
            metavar="M",
        ),
    ] = None
    max_goal_height: Annotated[
        OptionalNumber,
        _setting(
            "refuse clicks more than this above or below the frame's origin, in metres, with "
            "goal_out_of_range (none = no limit)",
            gt=0,
            metavar="M",
        ),
    ] = None

    # -- safety -----------------------------------------------------------
    # The viewer's key-repeat gap is ~0.6 s: a shorter deadman stops a held key mid-drive.
    deadman_timeout: Annotated[
        Number, _setting("seconds a non-zero command stays valid without a refresh", gt=0, metavar="S")
    ] = 1.0
    republish_hz: Annotated[
        Number,
        _setting(
            "re-send the command in force at this rate, for bases with a short watchdog (0 = off)", ge=0, metavar="HZ"
        ),
    ] = 0.0
    scale_linear_x: Annotated[Number, _scale("linear_x")] = 1.0
    scale_linear_y: Annotated[Number, _scale("linear_y")] = 1.0
    scale_linear_z: Annotated[Number, _scale("linear_z")] = 1.0
    scale_angular_x: Annotated[Number, _scale("angular_x")] = 1.0
    scale_angular_y: Annotated[Number, _scale("angular_y")] = 1.0
    scale_angular_z: Annotated[Number, _scale("angular_z")] = 1.0
    max_linear_x: Annotated[OptionalNumber, _clamp("linear_x")] = None
    max_linear_y: Annotated[OptionalNumber, _clamp("linear_y")] = None
    max_linear_z: Annotated[OptionalNumber, _clamp("linear_z")] = None
    max_angular_x: Annotated[OptionalNumber, _clamp("angular_x")] = None
    max_angular_y: Annotated[OptionalNumber, _clamp("angular_y")] = None
    max_angular_z: Annotated[OptionalNumber, _clamp("angular_z")] = None

    # -- operator control (e-stop, the link) ------------------------------
    estop_state_file: Annotated[
        OptionalText,
        _setting(
            "file that keeps a latched e-stop across restarts: a bridge that finds it latched starts latched "
            "(an unreadable one counts as latched); none = the latch lives only in memory",
            metavar="FILE",
        ),
    ] = None
    link_limits: Annotated[
        bool,
        _setting(
            "scale each driver's commands by its measured round trip, refuse driving on a link too slow, and "
            "refuse stale commands (the link_* settings); off turns all of it off"
        ),
    ] = True
    link_full_speed_rtt: Annotated[
        Number, _setting("round trip (s) up to which a driver gets full speed", gt=0, metavar="S")
    ] = 0.15
    link_slow_rtt: Annotated[
        Number,
        _setting(
            "round trip (s) at which the speed factor has fallen linearly to link_min_speed_factor", gt=0, metavar="S"
        ),
    ] = 0.6
    link_min_speed_factor: Annotated[
        Number, _setting("the speed factor from link_slow_rtt up to link_max_rtt, in (0, 1]", gt=0, le=1, metavar="X")
    ] = 0.3
    link_max_rtt: Annotated[
        Number,
        _setting(
            "round trip (s) beyond which (or a ping unanswered that long) driving is refused: link_too_slow",
            gt=0,
            metavar="S",
        ),
    ] = 1.5
    max_command_age: Annotated[
        Number,
        _setting(
            "twists that carry timestamp_ms (the bridge's own clients add it) and took this much longer (s) "
            "than the link's best to arrive are refused as stale",
            gt=0,
            metavar="S",
        ),
    ] = 0.5

    # -- security and limits ----------------------------------------------
    token: Annotated[
        OptionalText,
        _setting(
            "shared secret clients must present (?token=... or Authorization: Bearer); "
            "prefer token_file or VIEWER_BRIDGE_TOKEN to a flag"
        ),
    ] = None
    token_file: Annotated[
        OptionalText,
        _setting("file whose first line is the token (keeps it out of argv and shell history)", metavar="FILE"),
    ] = None
    # Names appear in logs, /status, metric labels and other clients' errors; secrets nowhere.
    tokens: Annotated[
        dict[str, dict[str, str]],
        _setting(
            "named tokens, each with a role: drive (everything), stop (stop and latching the e-stop; releasing "
            "it takes drive), view (status only); TOML only, e.g. [tokens.field-laptop] role = \"drive\", "
            "secret = \"...\"",
            file_only=True,
            value="a table of name = { role, secret }",
        ),
    ] = {}
    tokens_file: Annotated[
        OptionalText,
        _setting("file of named tokens, one 'name role secret' per line (# starts a comment)", metavar="FILE"),
    ] = None
    # DNS rebinding: a page whose own name now points at the robot sends that name as Host.
    allowed_hosts: Annotated[
        list[str],
        _setting(
            "Host name clients may use besides IP addresses, localhost, the bind host and this machine's name "
            "(others get 403); .example.org allows its subdomains, * any",
            flag="--allowed-host",
            metavar="NAME",
        ),
    ] = []
    insecure: Annotated[bool, _setting("allow a non-loopback bind without a token (warns at start)")] = False
    allowed_origins: Annotated[
        list[str],
        _setting(
            "browser Origin allowed besides the bridge's own; * allows any", flag="--allowed-origin", metavar="ORIGIN"
        ),
    ] = []
    tls_cert: Annotated[
        OptionalText,
        _setting("PEM certificate (chain) file: serve wss:// and https:// (needs tls_key)", metavar="FILE"),
    ] = None
    tls_key: Annotated[OptionalText, _setting("PEM private key file for tls_cert", metavar="FILE")] = None
    # Real messages are ~200 bytes.
    max_message_size: Annotated[
        int, _setting("largest message in bytes; a bigger one closes the connection with 1009", ge=256, metavar="BYTES")
    ] = 64 * 1024
    max_connections: Annotated[
        int, _setting("open WebSocket connections beyond this get HTTP 503", ge=1, metavar="N")
    ] = 256
    rate_limit: Annotated[
        Number,
        _setting("messages per second per client, sustained; excess is dropped (stop never is)", gt=0, metavar="PER_S"),
    ] = 200.0
    # dimos-viewer flushes up to 256 queued messages when it reconnects.
    rate_burst: Annotated[
        Number, _setting("token-bucket depth per client: the burst allowed above rate_limit", ge=1, metavar="N")
    ] = 400.0
    # Every frame counts, big and malformed ones more, and the budget holds two seconds' worth. A client
    # over it is not read until it has paid off the debt, so a flood cannot hold up anyone else; it is
    # ten times what a person driving sends.
    frame_budget: Annotated[
        Number,
        _setting(
            "frames per second a client may make the bridge look at; over it, its reading pauses", gt=0, metavar="PER_S"
        ),
    ] = 2000.0
    flood_close_after: Annotated[
        Number,
        _setting("seconds a client may stay over its frame budget before it is closed with 1008", gt=0, metavar="S"),
    ] = 5.0
    ping_interval: Annotated[
        Number, _setting("seconds of silence before the server pings a client", gt=0, metavar="S")
    ] = 30.0
    ping_timeout: Annotated[
        Number,
        _setting(
            "seconds to wait for the pong before dropping the client (and stopping it if it drove)", gt=0, metavar="S"
        ),
    ] = 30.0
    # Twice one client's budget: a browser tab and the viewer on one machine never reach it.
    host_rate_limit: Annotated[
        OptionalNumber,
        _setting(
            "messages per second from one address over all its connections; none = twice rate_limit, 0 = off",
            ge=0,
            metavar="PER_S",
        ),
    ] = None
    host_rate_burst: Annotated[
        OptionalNumber,
        _setting("depth of that per-address budget; none = twice rate_burst", ge=1, metavar="N"),
    ] = None
    handshake_timeout: Annotated[
        Number,
        _setting(
            "seconds from accept until the request head (and, with TLS, the TLS handshake) is complete",
            gt=0,
            metavar="S",
        ),
    ] = 10.0
    # A page load is a few connections (the bridge closes each HTTP answer's), a viewer reconnects every
    # second or slower: twenty a second with a hundred at once never bites them. A handshake and its
    # session cost the loop about 0.65 ms; a refusal here about half that, and it never becomes a session.
    connect_rate: Annotated[
        Number,
        _setting(
            "new connections per second one address may open (WebSocket or HTTP; stops and e-stops never "
            "count); more get 429 at once; 0 = off",
            ge=0,
            metavar="PER_S",
        ),
    ] = 20.0
    connect_burst: Annotated[
        Number,
        _setting("how many of them it may open at once, before connect_rate applies", ge=1, metavar="N"),
    ] = 100.0
    # A browser opens at most six at a time.
    max_pending_per_address: Annotated[
        int,
        _setting(
            "connections one address may hold before its request is upgraded or answered; more get 503 at once",
            ge=1,
            metavar="N",
        ),
    ] = 32
    max_pending: Annotated[
        int,
        _setting(
            "such connections from all addresses (lowered at start to fit the fd limit); past it the oldest of "
            "the address holding the most is dropped",
            ge=1,
            metavar="N",
        ),
    ] = 512
    auth_failures: Annotated[
        int,
        _setting("wrong or missing tokens from one address within auth_window before it gets 429", ge=1, metavar="N"),
    ] = 10
    auth_window: Annotated[
        Number, _setting("seconds over which auth_failures are counted", gt=0, metavar="S")
    ] = 60.0

    # -- serving extras and output ----------------------------------------
    rerun_url: Annotated[
        OptionalText,
        _setting(
            "Rerun gRPC URL (rerun+http://HOST:9876/proxy) for the web page's 3D view; needs the web3d extra",
            metavar="URL",
        ),
    ] = None
    rerun_connect: Annotated[
        OptionalText,
        _setting(
            "Rerun gRPC URL to log the bridge into (status, goals, refusals, commands), e.g. "
            "rerun+http://127.0.0.1:9877/proxy, the server DimOS's Rerun bridge runs; none = off; needs the "
            "rerun extra (docs/viewer-awareness.md)",
            metavar="URL",
        ),
    ] = None
    # The robot's application id (DimOS's is "dimos"), so the entities join its recording.
    rerun_app_id: Annotated[str, _setting("Rerun application id to log under", nonempty=True, metavar="ID")] = "dimos"
    # None: $RERUN_RECORDING_ID if set, else the id rr.init() picks in this process (shared by every process
    # multiprocessing starts from one parent: DimOS's module workers).
    rerun_recording_id: Annotated[
        OptionalText,
        _setting("Rerun recording id to log into; none = $RERUN_RECORDING_ID, else the SDK's own", metavar="ID"),
    ] = None
    # A 3D view shows the goal only if this is under its origin: DimOS's 3D view is "world".
    rerun_prefix: Annotated[
        str,
        _setting(
            "entity path the bridge logs under (status, goal, refused, cmd_vel); world/bridge/ with DimOS's layout",
            metavar="PATH",
        ),
    ] = "bridge/"
    web: Annotated[bool, _setting("serve the browser teleop page at /")] = True

    # -- a fleet: several robots, each through its agent over Zenoh (docs/fleet.md) --
    robots: Annotated[
        dict[str, RobotSettings],
        _setting(
            "robots this station drives, as [robots.NAME] tables (namespace, entity_prefix, agent, per-robot "
            "scale_*/max_*; docs/fleet.md), or as flag or variable just their names; none = one robot on this "
            "bridge's own buses",
            named_tables=True,
            metavar="NAME",
        ),
    ] = {}
    station: Annotated[
        OptionalText,
        _setting("this station's name in the fleet, shown to other stations' operators; none = the host name",
                 metavar="NAME"),
    ] = None
    # Faster than the agents' link timeout (0.5 s by default), which must fire only when the station or the
    # network is gone, never in a held key's key-repeat gap.
    fleet_refresh_hz: Annotated[
        Number,
        _setting("how often the command in force is re-sent to a robot's agent while someone drives", gt=0,
                 metavar="HZ"),
    ] = 10.0
    echo: Annotated[
        Union[Literal["text", "json"], None], _setting("print every published message on stdout, as text or JSON lines")
    ] = None
    log_format: Annotated[Literal["text", "json"], _setting("log lines on stderr as text or JSON")] = "text"
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], _setting("least severe log level shown")] = (
        "INFO"
    )

    def __post_init__(self) -> None:
        for name, setting in SETTINGS.items():
            problem = setting.problem(getattr(self, name))
            if problem is not None:
                raise ConfigError(f"{name}: {problem}")
        # Topic clashes (a remap onto another stream's topic, a mux loop) are found here,
        # so they are errors at start that name the setting, not surprises on the bus.
        try:
            topic_map = TopicMap(self.remap, self.namespace)
            if self.mux is not None:
                mux_topics(topic_map, self.mux, self.mux_output)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        self._check_fleet()
        if self.rerun_connect is not None:
            _check_rerun_url(self.rerun_connect)
        if not self.rerun_prefix.strip("/") or any(c.isspace() for c in self.rerun_prefix):
            raise ConfigError(
                f"rerun_prefix must be an entity path like 'bridge/' (not empty, no spaces), got {self.rerun_prefix!r}"
            )
        if not self.link_full_speed_rtt < self.link_slow_rtt <= self.link_max_rtt:
            raise ConfigError(
                "link_full_speed_rtt < link_slow_rtt <= link_max_rtt must hold, got "
                f"{self.link_full_speed_rtt:g} / {self.link_slow_rtt:g} / {self.link_max_rtt:g}"
            )
        # The pong must be due before the next ping would be (picows refuses otherwise, per connection).
        if self.ping_timeout > self.ping_interval:
            raise ConfigError(
                f"ping_timeout ({self.ping_timeout:g} s) must not exceed ping_interval ({self.ping_interval:g} s)"
            )
        try:
            TokenTable(self.token, self.named_tokens())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def named_tokens(self) -> list[NamedToken]:
        """The ``tokens`` table as entries; raises ConfigError naming a malformed one (never its secret)."""
        entries: list[NamedToken] = []
        for name, spec in self.tokens.items():
            if set(spec) != {"role", "secret"}:
                raise ConfigError(f"tokens.{name} must have exactly 'role' and 'secret', got {sorted(spec)}")
            if spec["role"] not in Role.__members__.values():
                raise ConfigError(
                    f"tokens.{name}.role must be one of {', '.join(r.value for r in Role)}, got {spec['role']!r}"
                )
            entries.append(NamedToken(name, Role(spec["role"]), spec["secret"]))
        return entries

    def _check_fleet(self) -> None:
        from viewer_bridge.core.fleet import check_name

        if self.station is not None:
            try:
                check_name("station", self.station)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        prefixes: dict[str, str] = {}
        for name, robot in self.robots.items():
            try:
                check_name("robot", name)
                TopicMap(self.remap, robot.namespace)
            except ValueError as exc:
                raise ConfigError(f"robots.{name}: {exc}") from None
            for axis in _AXES:
                scale, limit = getattr(robot, f"scale_{axis}"), getattr(robot, f"max_{axis}")
                if scale is not None and not math.isfinite(scale):
                    raise ConfigError(f"robots.{name}.scale_{axis} must be a finite number, got {scale!r}")
                if limit is not None and not (math.isfinite(limit) and limit >= 0):
                    raise ConfigError(f"robots.{name}.max_{axis} must be a finite number >= 0, got {limit!r}")
            prefix = robot.entity_prefix
            if prefix is None:
                continue
            if not prefix.startswith("/") or prefix.rstrip("/") == "":
                raise ConfigError(f"robots.{name}.entity_prefix must be an entity path like /world/robots/{name}, "
                                  f"got {prefix!r}")
            clean = prefix.rstrip("/")
            for other_prefix, other in prefixes.items():
                if clean == other_prefix or clean.startswith(other_prefix + "/") or other_prefix.startswith(
                        clean + "/"):
                    raise ConfigError(f"robots.{name}.entity_prefix {prefix!r} overlaps robots.{other}'s "
                                      f"{other_prefix!r}: a click must belong to one robot")
            prefixes[clean] = name

    def link(self) -> LinkLimits:
        """The link_* settings as the link monitor takes them."""
        return LinkLimits(
            enabled=self.link_limits,
            full_speed_rtt=self.link_full_speed_rtt,
            slow_rtt=self.link_slow_rtt,
            min_factor=self.link_min_speed_factor,
            max_rtt=self.link_max_rtt,
            max_command_age=self.max_command_age,
        )

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` is a loopback address as written (names are resolved, and checked, by the server)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def resolved_token(self) -> str | None:
        """The token from ``token`` or ``token_file``; raises ConfigError if the file is unreadable."""
        if self.token:
            return self.token
        if self.token_file:
            token = read_token_file(self.token_file)
            try:
                TokenTable(token)
            except ValueError as exc:
                raise ConfigError(f"token_file {self.token_file!r}: {exc}") from None
            return token
        return None

    def replace(self, **changes: Any) -> BridgeConfig:
        """A copy with ``changes`` applied and validated."""
        return from_mapping({**msgspec.structs.asdict(self), **changes}, source="arguments")


_RERUN_SCHEMES: Final = ("rerun", "rerun+http", "rerun+https")


def _check_rerun_url(url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ConfigError(f"rerun_connect {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in _RERUN_SCHEMES or not parts.hostname or parts.path != "/proxy":
        raise ConfigError(
            f"rerun_connect must look like rerun+http://HOST:PORT/proxy (scheme rerun, rerun+http or "
            f"rerun+https, path /proxy), got {url!r}"
        )


# -- one description per setting ----------------------------------------------------------


def _plain(value: Any) -> str:
    """A default or a given value as a person writes it on the command line."""
    if value is None or value == [] or value == {} or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


_TOML_KINDS: Final = {
    str: "the string",
    bool: "the boolean",
    int: "the integer",
    float: "the number",
    list: "the array",
    dict: "the table",
}


@dataclass(frozen=True)
class Setting:
    """One field of :class:`BridgeConfig`: its type, default, help and bounds, read from its ``Meta``."""

    name: str
    type: Any
    """The field's type, without ``Annotated``."""
    default: Any
    description: str
    extra: Mapping[str, Any]

    # -- the type, in words -------------------------------------------------

    @property
    def optional(self) -> bool:
        return typing.get_origin(self.type) is Union and type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The type without ``None``."""
        if self.optional:
            (inner,) = [a for a in typing.get_args(self.type) if a is not type(None)]
            return inner
        return self.type

    @property
    def choices(self) -> tuple[str, ...] | None:
        base = self.base
        if typing.get_origin(base) is list:
            base = typing.get_args(base)[0]
        return typing.get_args(base) if typing.get_origin(base) is Literal else None

    @property
    def is_list(self) -> bool:
        return typing.get_origin(self.base) is list

    @property
    def is_table(self) -> bool:
        return typing.get_origin(self.base) is dict

    @property
    def named_tables(self) -> bool:
        """A table of tables by name (``robots``): a config file gives each its table, a flag only names them."""
        return bool(self.extra.get("named_tables"))

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return str(self.extra.get("flag") or "--" + self.name.replace("_", "-"))

    def _bounds(self) -> str:
        ge, gt, le = self.extra.get("ge"), self.extra.get("gt"), self.extra.get("le")
        if ge is not None and le is not None:
            return f" from {ge:g} to {le:g}"
        if gt is not None:
            return f" > {gt:g}"
        if ge is not None:
            return f" >= {ge:g}"
        return ""

    def expected(self, style: Literal["python", "toml", "text"] = "python") -> str:
        """What a value must be, in words: ``an integer from 0 to 65535``.

        ``text`` is for environment variables and flags (lists comma-separated,
        empty for none), ``toml`` for a config file, ``python`` for keyword arguments.
        """
        base = self.base
        choices = self.choices
        if "value" in self.extra:
            what = str(self.extra["value"])
        elif self.named_tables:
            what = (
                "names, comma-separated (each with its defaults; a config file's tables set more)"
                if style == "text"
                else f"a table of [{self.name}.NAME] tables"
            )
        elif self.is_table:
            words = {"text": "STREAM=TOPIC pairs, comma-separated", "toml": 'a table of stream = "topic"'}
            what = words.get(style, "a dict of stream -> topic")
        elif self.is_list:
            item = f"one of {', '.join(choices)}" if choices else "a string"
            what = (
                f"a comma-separated list, each {item}"
                if style == "text"
                else (f"a list of {', '.join(choices)}" if choices else "a list of strings")
            )
        elif choices:
            what = "one of " + ", ".join(choices)
        elif base is bool:
            what = "true or false" if style != "python" else "True or False"
        elif base is int:
            what = "an integer" + self._bounds()
        elif base is float:
            what = "a finite number" + self._bounds()
        elif self.extra.get("starts_with"):
            what = f"a string starting with {self.extra['starts_with']!r}"
        elif self.extra.get("nonempty"):
            what = "a non-empty string"
        else:
            what = "a string"
        if self.optional and style == "text":
            what += ", or empty for none"
        elif self.optional and style == "python":
            what += ", or None"
        return what

    # -- checking -----------------------------------------------------------

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is right for this setting, else ``expected ..., got ...``."""
        if self._fits(value):
            return None
        return f"expected {self.expected('python')}, got {value!r}"

    def _fits(self, value: Any) -> bool:
        try:
            msgspec.convert(value, self.type, strict=True)
        except msgspec.ValidationError:
            return False
        if value is None:
            return True
        if self.base in (int, float) and not isinstance(value, bool):
            number = float(value)
            ge, gt, le = self.extra.get("ge"), self.extra.get("gt"), self.extra.get("le")
            return (
                math.isfinite(number)
                and (ge is None or number >= ge)
                and (gt is None or number > gt)
                and (le is None or number <= le)
            )
        if isinstance(value, str):
            starts = self.extra.get("starts_with")
            if starts and not value.startswith(starts):
                return False
            if self.extra.get("nonempty") and not value.strip():
                return False
        return True

    def check(self, value: Any, where: str, style: Literal["python", "toml", "text"], given: str) -> Any:
        """``value`` converted to this setting's type, or a ConfigError naming ``where`` it came from."""
        if self.named_tables:
            # A table of tables: each inner table is checked on its own, so the error names it
            # (robots.go2-1: unknown field `speed`).
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: expected {self.expected(style)}, got {given}")
            inner = typing.get_args(self.base)[1]
            checked = {}
            for key, table in value.items():
                try:
                    checked[key] = msgspec.convert(table, inner, strict=True)
                except msgspec.ValidationError as exc:
                    detail = str(exc).replace("Object contains unknown field", "unknown key").replace(" - at `$`", "")
                    detail = re.sub(r" - at `\$\.(\w+)`", r" (key \1)", detail)
                    raise ConfigError(f"{where}: [{self.name}.{key}] {detail}") from None
            return checked
        if not self._fits(value):
            raise ConfigError(f"{where}: expected {self.expected(style)}, got {given}")
        return msgspec.convert(value, self.type, strict=True)

    def from_text(self, raw: str) -> Any:
        """The value written as ``raw`` (an environment variable or a flag); raises ValueError saying why not.

        Lists are comma-separated, a table is ``a=b,c=d``, empty is none (for a
        setting that may be none), and choices match in any case.
        """
        value: Any
        if self.named_tables:
            names = [item.strip() for item in raw.split(",") if item.strip()]
            try:
                return self.check({name: {} for name in names}, "", "text", repr(raw))
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix(": ")) from None
        if self.is_table:
            value = {}
            for item in raw.split(","):
                if not item.strip():
                    continue
                source, sep, target = item.partition("=")
                if not sep or not source.strip() or not target.strip():
                    raise ValueError(f"expected STREAM=TOPIC, got {item!r}")
                value[source.strip()] = target.strip()
        elif self.is_list:
            value = [self._choice(item.strip()) for item in raw.split(",") if item.strip()]
        elif raw == "" and self.optional:
            return None
        elif self.base in (int, float, bool):
            try:
                value = msgspec.convert(raw.strip(), self.base, strict=False)
            except msgspec.ValidationError:
                raise ValueError(f"expected {self.expected('text')}, got {raw!r}") from None
        else:
            value = self._choice(raw)
        if not self._fits(value):
            raise ValueError(f"expected {self.expected('text')}, got {raw!r}")
        return msgspec.convert(value, self.type, strict=True)

    def _choice(self, text: str) -> str:
        for choice in self.choices or ():
            if text.lower() == choice.lower():
                return choice
        return text

    def parse_text(self, raw: str, where: str) -> Any:
        """:meth:`from_text`, with a ConfigError naming ``where`` the text came from."""
        try:
            return self.from_text(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def toml_hint(self, value: Any) -> str:
        """A fix for a TOML value of the wrong type, when there is an obvious one."""
        if isinstance(value, str) and not self.is_list:
            try:
                fixed = self.from_text(value)
            except ValueError:
                return ""
            if not isinstance(fixed, str):
                return f" (write {self.name} = {_toml_value(fixed)}, without quotes)"
        if isinstance(value, str) and self.is_list:
            return f" (write {self.name} = {_toml_value([value])})"
        return ""

    def help(self) -> str:
        """The ``--help`` line: description, choices and default."""
        parts = [self.description]
        choices = self.choices
        if choices:
            parts.append("choices: " + ", ".join(choices) + (" (repeatable)" if self.is_list else ""))
        elif self.is_list or self.is_table:
            parts.append("repeatable")
        parts.append(f"default: {_plain(self.default)}")
        return "; ".join(parts)


def _settings() -> dict[str, Setting]:
    hints = typing.get_type_hints(BridgeConfig, include_extras=True)
    found: dict[str, Setting] = {}
    for field in msgspec.structs.fields(BridgeConfig):
        annotated = hints[field.name]
        meta = next(m for m in annotated.__metadata__ if isinstance(m, msgspec.Meta))
        default = field.default if field.default is not msgspec.NODEFAULT else field.default_factory()
        found[field.name] = Setting(
            field.name, typing.get_args(annotated)[0], default, meta.description or "", dict(meta.extra or {})
        )
    return found


SETTINGS: Final = _settings()
FIELDS: Final = frozenset(SETTINGS)


def _unknown(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_remaps(items: Iterable[str], where: str = "--remap") -> dict[str, str]:
    """``["a=b", "c=d"]`` -> ``{"a": "b", "c": "d"}``; a ConfigError names ``where`` for a malformed item."""
    return dict(SETTINGS["remap"].parse_text(",".join(items), where))


# -- sources ------------------------------------------------------------------------------


def from_mapping(values: Mapping[str, Any], source: str = "arguments") -> BridgeConfig:
    """A config from Python values (keyword arguments), checked strictly; errors name the setting."""
    return _build(check_python(values, source))


def check_python(values: Mapping[str, Any], source: str = "arguments") -> dict[str, Any]:
    """Python values (keyword arguments) checked one by one against their settings."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        setting = SETTINGS.get(name)
        if setting is None:
            raise ConfigError(f"unknown setting {name!r} in {source}{_unknown(name, SETTINGS)}")
        checked[name] = setting.check(value, name, "python", repr(value))
    return checked


def read_flags(values: Mapping[str, Any]) -> dict[str, Any]:
    """Values from the command line (already parsed by their flags), checked; errors name the flag."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        setting = SETTINGS[name]
        checked[name] = setting.check(value, setting.flag, "text", repr(value))
    return checked


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in a TOML file, checked strictly; errors name the file and the key.

    Settings are top-level keys, or keys of a ``[bridge]`` table. With a
    ``[bridge]`` table, other top-level tables (not settings) are left to the
    programs they belong to, so one file can configure several.
    """
    name = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {name!r} is not valid TOML: {exc}") from None
    table = data.get(TOML_TABLE)
    keys: dict[str, tuple[str, Any]] = {}  # setting -> (key as written, value)
    if TOML_TABLE in data and not isinstance(table, dict):
        raise ConfigError(f"config file {name!r}: {TOML_TABLE} must be a table ([{TOML_TABLE}]), got {table!r}")
    for key, value in data.items():
        if key == TOML_TABLE:
            continue
        if key in SETTINGS:
            keys[key] = (key, value)
        elif table is None or not isinstance(value, dict):
            raise ConfigError(f"config file {name!r}: unknown setting {key!r}{_unknown(key, SETTINGS)}")
    for key, value in (table or {}).items():
        written = f"{TOML_TABLE}.{key}"
        if key not in SETTINGS:
            raise ConfigError(f"config file {name!r}: unknown setting {written!r}{_unknown(key, SETTINGS)}")
        if key in keys:
            raise ConfigError(f"config file {name!r}: {key} is set twice, as {key!r} and {written!r}")
        keys[key] = (written, value)
    values: dict[str, Any] = {}
    for setting_name, (written, value) in keys.items():
        setting = SETTINGS[setting_name]
        given = f"{_TOML_KINDS.get(type(value), 'the value')} {_toml_value(value)}"
        try:
            values[setting_name] = setting.check(value, f"config file {name!r}, key {written}", "toml", given)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{setting.toml_hint(value)}") from None
    return values


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``VIEWER_BRIDGE_<SETTING>`` variables, parsed and checked; errors name the variable.

    Lists are comma-separated, remap is ``a=b,c=d``, and empty means none for
    a setting that may be none.
    """
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        setting = SETTINGS.get(name)
        if setting is None:
            envs = {s.env: s for s in SETTINGS.values()}
            raise ConfigError(f"unknown environment variable {key}{_unknown(key, envs)}")
        if setting.extra.get("file_only"):
            raise ConfigError(
                f"environment variable {key}: {name} holds secrets and is read only from the --config file "
                f"(or use {ENV_PREFIX}{name.upper()}_FILE)"
            )
        values[name] = setting.parse_text(raw, f"environment variable {key}")
    return values


def _build(values: Mapping[str, Any]) -> BridgeConfig:
    try:
        return BridgeConfig(**values)
    except TypeError as exc:  # pragma: no cover - every key was checked against SETTINGS
        raise ConfigError(str(exc)) from None


def load_config(
    file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    flags: Mapping[str, Any] | None = None,
) -> BridgeConfig:
    """Defaults < TOML ``file`` < environment < ``flags`` (from the command line) < ``overrides`` (Python).

    Each value is checked where it comes from, so a ConfigError names the
    file and key, the environment variable, the flag or the argument.
    """
    values: dict[str, Any] = {}
    if file is not None:
        values.update(read_toml(file))
    values.update(read_env(os.environ if environ is None else environ))
    values.update(read_flags(flags or {}))
    values.update(check_python(overrides or {}))
    return _build(values)


# -- command-line flags ----------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser | Any, names: Iterable[str] | None = None) -> None:
    """Add a flag for each setting (all, or ``names``), with its help, default and choices.

    Flags leave ``None`` in the namespace when not given, so that lower layers
    (environment, file, defaults) show through; :func:`flag_values` collects
    the ones given.
    """
    for name in names if names is not None else SETTINGS:
        setting = SETTINGS[name]
        if setting.extra.get("file_only"):
            continue  # secrets: never in argv
        options: dict[str, Any] = {"dest": name, "default": None, "help": setting.help().replace("%", "%%")}
        if setting.base is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = _FlagType(setting)
            if setting.is_table:
                options["action"] = "append"
            elif setting.is_list:
                options["action"] = "extend"
            if setting.choices:
                options["metavar"] = "{" + ",".join(setting.choices) + "}"
                if not setting.is_list:
                    options["choices"] = setting.choices
            elif "metavar" in setting.extra:
                options["metavar"] = setting.extra["metavar"]
        parser.add_argument(setting.flag, **options)


class _FlagType:
    """argparse ``type=``: parses a flag's text as its setting does, with the reason when it cannot."""

    def __init__(self, setting: Setting) -> None:
        self.setting = setting
        self.__name__ = setting.name  # argparse names the type in some messages

    def __call__(self, raw: str) -> Any:
        try:
            return self.setting.from_text(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def flag_values(args: argparse.Namespace, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The settings given as flags, for :func:`load_config`'s ``flags``."""
    values: dict[str, Any] = {}
    for name in names if names is not None else SETTINGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if SETTINGS[name].is_table:
            value = {k: v for part in value for k, v in part.items()}
        values[name] = value
    return values


# -- documentation -------------------------------------------------------------------------


def settings_markdown(names: Iterable[str] | None = None) -> str:
    """A Markdown table of settings (all, or ``names``): name, default, value and help, as the docs show it."""
    rows = ["| setting | default | value | meaning |", "|---|---|---|---|"]
    for name in names if names is not None else SETTINGS:
        setting = SETTINGS[name]
        plain = _plain(setting.default)
        default = "none" if plain == "none" else f"`{plain}`"
        value = setting.expected("toml").removeprefix("a ").removeprefix("an ")
        cells = [f"`{name}`", default, value, setting.description]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"

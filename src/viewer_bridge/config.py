"""The bridge's configuration: every setting, its default and why, and where values come from.

Precedence, lowest first: defaults, a TOML file, ``VIEWER_BRIDGE_*``
environment variables, command-line flags (or keyword arguments in Python).
Unknown keys are errors that name the key, so a typo never silently falls
back to a default on a robot.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, Union

import msgspec

from viewer_bridge.core.link import LinkLimits
from viewer_bridge.core.topics import TopicMap, mux_topics

__all__ = ["BridgeConfig", "ConfigError", "load_config"]

ENV_PREFIX: Final = "VIEWER_BRIDGE_"
# The bus transports a bridge can publish on (see viewer_bridge.bus.transports).
TRANSPORT_NAMES: Final = ("lcm", "zenoh")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names it."""


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
    host: str = "127.0.0.1"
    """Address to bind. Loopback by default: anything wider needs a token (or ``insecure``)."""
    port: int = 3030
    """TCP port; 3030 is what dimos-viewer dials. 0 picks a free port."""
    path: str = "/ws"
    """The one HTTP path that upgrades to the viewer WebSocket."""

    # -- what is published ------------------------------------------------
    frame_id: str = "world"
    """frame_id of published clicks. The viewer's entity path is not a TF frame."""
    remap: dict[str, str] = {}
    """Stream -> topic renames applied on every bus transport, e.g. tele_cmd_vel = "cmd_vel"."""
    namespace: str = ""
    """Prefix for every topic on the bus, e.g. "robot1"."""
    transports: list[str] = []
    """Bus transports besides in-process subscribers: "lcm", "zenoh"."""
    lcm_url: Union[str, None] = None
    """LCM URL; None uses $LCM_DEFAULT_URL, else udpm://239.255.76.67:7667?ttl=0."""
    zenoh_mode: Literal["peer", "client"] = "peer"
    zenoh_connect: list[str] = []
    """Zenoh endpoints to connect to, e.g. tcp/10.0.0.2:7447."""
    zenoh_listen: list[str] = []
    """Zenoh endpoints to listen on."""
    zenoh_multicast_scouting: bool = True
    """Find Zenoh peers by UDP multicast (Zenoh's default). Turn off to use only the explicit endpoints."""
    mux: Union[str, None] = None
    """Navigation command topic (Twist) to read from the bus and mux with teleop into mux_output,
    e.g. "nav_cmd_vel"; None = no mux. Namespaced like every topic."""
    mux_output: str = "cmd_vel"
    """Topic the mux publishes: teleop while a person drives (plus mux_cooldown), navigation otherwise."""
    mux_cooldown: float = 1.0
    """Seconds after the last teleop command before navigation commands pass again."""

    # -- compatibility profile (DimOS 0.0.15's stack; see docs/dimos.md) ---
    stop_movement: Literal["publish", "off"] = "publish"
    """"publish": one stop_movement Bool(True) when someone starts driving (and when teleop takes the
    mux from navigation), so a planner can cancel its goal. "off": never; a DimOS 0.0.15 stack's
    MovementManager announces it (the default of viewer_bridge.dimos.RerunWebSocketServer)."""
    click_frame: Literal["frame_id", "entity_path"] = "frame_id"
    """frame_id of published clicks: the frame_id setting, or the viewer's entity path as DimOS 0.0.15
    does (frame_id when a click carries none)."""
    max_goal_distance: Union[float, None] = None
    """Refuse clicks farther than this many metres from the frame's origin horizontally, with a
    goal_out_of_range error; None = no limit. A far pick is a mis-click (DimOS's MovementManager drops
    goals beyond 500 m); the DimOS module defaults to 500."""
    max_goal_height: Union[float, None] = None
    """Refuse clicks more than this many metres above or below the frame's origin (goal_out_of_range);
    None = no limit. The DimOS module defaults to 50, as MovementManager."""

    # -- safety -----------------------------------------------------------
    deadman_timeout: float = 1.0
    """Seconds a non-zero command stays valid without a refresh. The viewer's
    key-repeat gap is ~0.6 s, so less than that stops a held key mid-drive."""
    republish_hz: float = 0.0
    """Re-send the command in force at this rate (0 = off), for bases with a short watchdog."""
    scale_linear_x: float = 1.0
    scale_linear_y: float = 1.0
    scale_linear_z: float = 1.0
    scale_angular_x: float = 1.0
    scale_angular_y: float = 1.0
    scale_angular_z: float = 1.0
    max_linear_x: Union[float, None] = None
    """Clamp on |linear.x| after scaling (m/s); None = no clamp. Likewise for each axis."""
    max_linear_y: Union[float, None] = None
    max_linear_z: Union[float, None] = None
    max_angular_x: Union[float, None] = None
    max_angular_y: Union[float, None] = None
    max_angular_z: Union[float, None] = None

    # -- operator control (e-stop, the link) ------------------------------
    estop_state_file: Union[str, None] = None
    """File that keeps a latched e-stop across restarts: a bridge that finds it latched starts latched
    (and an unreadable one counts as latched). None = the latch lives only in memory."""
    link_limits: bool = True
    """Scale each driver's commands by its measured round trip, refuse driving on a link too slow, and
    refuse stale commands (see the link_* settings). False turns all of it off."""
    link_full_speed_rtt: float = 0.15
    """Round trip (s) up to which a driver gets full speed."""
    link_slow_rtt: float = 0.6
    """Round trip (s) at which the speed factor has fallen linearly to link_min_speed_factor."""
    link_min_speed_factor: float = 0.3
    """The speed factor from link_slow_rtt up to link_max_rtt."""
    link_max_rtt: float = 1.5
    """Round trip (s) beyond which (or a ping unanswered that long) driving is refused: link_too_slow."""
    max_command_age: float = 0.5
    """Twists that carry timestamp_ms (the bridge's own clients add it) and took this much longer (s)
    than the link's best to arrive are refused as stale."""

    # -- security and limits ----------------------------------------------
    token: Union[str, None] = None
    """Shared secret clients must present (?token=... or Authorization: Bearer ...)."""
    token_file: Union[str, None] = None
    """File holding the token (first line), so it stays out of argv and shell history."""
    insecure: bool = False
    """Allow a non-loopback bind without a token (warns at start)."""
    allowed_origins: list[str] = []
    """Origins allowed in addition to the bridge's own; "*" allows any."""
    tls_cert: Union[str, None] = None
    tls_key: Union[str, None] = None
    max_message_size: int = 64 * 1024
    """Largest message accepted; bigger closes the connection with 1009. Real
    messages are ~200 bytes."""
    max_connections: int = 256
    """Open WebSocket connections beyond this get HTTP 503."""
    rate_limit: float = 200.0
    """Messages per second per client (sustained)."""
    rate_burst: float = 400.0
    """Token-bucket depth; covers the viewer's 256-message reconnect flush."""
    frame_budget: float = 2000.0
    """Frames per second a client may make the bridge look at (every frame counts, big and malformed
    ones more; the budget holds two seconds' worth). A client over it is not read until it has paid
    off the debt, so a flood cannot hold up anyone else; ten times what a person driving sends."""
    flood_close_after: float = 5.0
    """Seconds a client may stay over its frame budget before it is closed with 1008."""
    ping_interval: float = 30.0
    """Seconds of silence before the server pings a client."""
    ping_timeout: float = 30.0
    """Seconds to wait for the pong before dropping the client."""

    # -- serving extras and output ----------------------------------------
    rerun_url: Union[str, None] = None
    """Rerun gRPC URL for the web page's embedded 3D viewer."""
    web: bool = True
    """Serve the browser teleop page at /."""
    # -- a fleet: several robots, through their agents over Zenoh (docs/fleet.md) ---
    robots: dict[str, RobotSettings] = {}
    """Robots this station drives, by name ([robots.NAME] tables: namespace, entity_prefix, agent, per-robot
    scale_*/max_*). Empty: one robot, driven on this bridge's own buses, as always."""
    station: Union[str, None] = None
    """This station's name in the fleet, shown to other stations' operators (default: the host name)."""
    fleet_refresh_hz: float = 10.0
    """How often the station re-sends the command in force to a robot's agent while someone drives, so
    the agent's link timeout (0.5 s by default) fires only when the station or the network is gone."""

    rerun_connect: Union[str, None] = None
    """Rerun gRPC URL to log the bridge into (status, goals, refusals, commands; docs/viewer-awareness.md),
    e.g. rerun+http://127.0.0.1:9877/proxy, the server DimOS's Rerun bridge runs and dimos-viewer reads.
    None = off. Needs the Rerun SDK (pip install 'viewer-bridge[rerun]')."""
    rerun_app_id: str = "dimos"
    """Application id to log under: the robot's (DimOS's is "dimos"), so the entities join its recording."""
    rerun_recording_id: Union[str, None] = None
    """Recording id to log into; None = $RERUN_RECORDING_ID if set, else the id rr.init() picks in this
    process (shared by every process multiprocessing starts from one parent: DimOS's module workers)."""
    rerun_prefix: str = "bridge/"
    """Entity path under which the bridge logs (status, goal, refused, cmd_vel). A 3D view shows the goal
    only if this is under its origin: use "world/bridge/" with DimOS's layout (its 3D view is "world")."""

    echo: Union[Literal["text", "json"], None] = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        if not self.path.startswith("/"):
            raise ConfigError(f"path must start with '/', got {self.path!r}")
        if not self.frame_id:
            raise ConfigError("frame_id must not be empty")
        for name in ("deadman_timeout", "ping_interval", "ping_timeout", "rate_limit", "frame_budget",
                     "flood_close_after", "max_command_age"):
            _require(name, getattr(self, name), lambda v: v > 0, "> 0")
        _require("rate_burst", self.rate_burst, lambda v: v >= 1, ">= 1")
        _require("republish_hz", self.republish_hz, lambda v: v >= 0, ">= 0")
        _require("mux_cooldown", self.mux_cooldown, lambda v: v >= 0, ">= 0")
        for name in ("max_goal_distance", "max_goal_height"):
            if getattr(self, name) is not None:
                _require(name, getattr(self, name), lambda v: v > 0, "> 0")
        # Topic clashes (a remap onto another stream's topic, a mux loop) are found here,
        # so they are errors at start that name the setting, not surprises on the bus.
        try:
            topic_map = TopicMap(self.remap, self.namespace)
            if self.mux is not None:
                mux_topics(topic_map, self.mux, self.mux_output)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for axis in ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z"):
            _require(f"scale_{axis}", getattr(self, f"scale_{axis}"), lambda v: True, "finite")
            limit = getattr(self, f"max_{axis}")
            if limit is not None:
                _require(f"max_{axis}", limit, lambda v: v >= 0, ">= 0")
        try:
            self.link()
        except ValueError as exc:
            raise ConfigError(str(exc).replace("full_speed_rtt", "link_full_speed_rtt").replace(
                "slow_rtt", "link_slow_rtt").replace("max_rtt", "link_max_rtt").replace(
                "min_factor", "link_min_speed_factor")) from None
        if self.max_message_size < 256:
            raise ConfigError(f"max_message_size must be >= 256 bytes, got {self.max_message_size}")
        if self.max_connections < 1:
            raise ConfigError(f"max_connections must be >= 1, got {self.max_connections}")
        for name in self.transports:
            if name not in TRANSPORT_NAMES:
                raise ConfigError(f"unknown transport {name!r}; choose from: {', '.join(TRANSPORT_NAMES)}")
        self._check_fleet()
        if self.rerun_connect is not None:
            _check_rerun_url(self.rerun_connect)
        if not self.rerun_app_id.strip():
            raise ConfigError("rerun_app_id must not be empty")
        if not self.rerun_prefix.strip("/") or any(c.isspace() for c in self.rerun_prefix):
            raise ConfigError(
                f"rerun_prefix must be an entity path like 'bridge/' (not empty, no spaces), got {self.rerun_prefix!r}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")

    def _check_fleet(self) -> None:
        from viewer_bridge.core.fleet import check_name

        _require("fleet_refresh_hz", self.fleet_refresh_hz, lambda v: v > 0, "> 0")
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
            for axis in ("linear_x", "linear_y", "linear_z", "angular_x", "angular_y", "angular_z"):
                scale, limit = getattr(robot, f"scale_{axis}"), getattr(robot, f"max_{axis}")
                if scale is not None:
                    _require(f"robots.{name}.scale_{axis}", scale, lambda v: True, "finite")
                if limit is not None:
                    _require(f"robots.{name}.max_{axis}", limit, lambda v: v >= 0, ">= 0")
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
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    def resolved_token(self) -> str | None:
        """The token from ``token`` or ``token_file``; raises ConfigError if the file is unreadable."""
        if self.token:
            return self.token
        if self.token_file:
            try:
                text = Path(self.token_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot read token_file {self.token_file!r}: {exc.strerror}") from None
            token = text.strip().splitlines()[0].strip() if text.strip() else ""
            if not token:
                raise ConfigError(f"token_file {self.token_file!r} is empty")
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


def _require(name: str, value: float, ok: Any, what: str) -> None:
    if not (math.isfinite(value) and ok(value)):
        raise ConfigError(f"{name} must be a finite number {what}, got {value!r}")


FIELDS: Final = frozenset(BridgeConfig.__struct_fields__)


def field_docs() -> dict[str, str]:
    """Each setting's docstring (the string under its definition above), for ``--help``."""
    import ast
    import inspect
    import itertools
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(BridgeConfig)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def from_mapping(values: Mapping[str, Any], source: str) -> BridgeConfig:
    """Build a config from a mapping, with errors that name the key and the source."""
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {source}; known settings: {', '.join(sorted(FIELDS))}")
    try:
        return msgspec.convert(dict(values), BridgeConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting in {source}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{exc} (from {source})") from None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {os.fspath(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from None
    # Allow the settings either at top level or under [bridge].
    if set(data) == {"bridge"} and isinstance(data["bridge"], dict):
        data = data["bridge"]
    return data


_LIST_FIELDS: Final = frozenset(
    name for name, tp in BridgeConfig.__annotations__.items() if str(tp).startswith("list")
)


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``VIEWER_BRIDGE_<SETTING>`` variables; lists are comma-separated, remap is ``a=b,c=d``."""
    values: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in FIELDS:
            raise ConfigError(f"unknown environment variable {key}; known settings: {', '.join(sorted(FIELDS))}")
        if name in _LIST_FIELDS:
            values[name] = [item.strip() for item in raw.split(",") if item.strip()]
        elif name == "remap":
            values[name] = parse_remaps(item for item in raw.split(",") if item.strip())
        elif raw == "":
            values[name] = None
        else:
            values[name] = raw
    return values


def parse_remaps(items: Any) -> dict[str, str]:
    remap: dict[str, str] = {}
    for item in items:
        source, sep, target = str(item).partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ConfigError(f"remap must look like stream=topic, got {item!r}")
        remap[source.strip()] = target.strip()
    return remap


def load_config(
    file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BridgeConfig:
    """Defaults < TOML ``file`` < environment < ``overrides`` (flags or keyword arguments)."""
    values: dict[str, Any] = {}
    if file is not None:
        values.update(read_toml(file))
        from_mapping(values, source=f"config file {os.fspath(file)!r}")
    env_values = read_env(os.environ if environ is None else environ)
    values.update(env_values)
    if env_values:
        from_mapping(values, source="environment (VIEWER_BRIDGE_*)")
    values.update(overrides or {})
    return from_mapping(values, source="arguments")

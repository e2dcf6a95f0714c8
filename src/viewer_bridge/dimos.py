"""viewer-bridge as a DimOS module: the ``RerunWebSocketServer`` a blueprint composes.

A DimOS blueprint switches to viewer-bridge by changing one import::

    from viewer_bridge.dimos import RerunWebSocketServer

The class has the name, config fields (``host``, ``port``), outputs
(``clicked_point``, ``tele_cmd_vel``, with DimOS's message classes) and RPCs
(``websocket_url``, ``start``, ``stop``) of DimOS 0.0.15's module of that name,
so ``.remappings(...)``, ``autoconnect`` and ``RerunWebSocketServerSpec``
consumers work unchanged. Inside, it runs viewer-bridge's threaded server
(:class:`viewer_bridge.RerunWebSocketServer`) with every safety, security and
transport setting of :class:`~viewer_bridge.config.BridgeConfig`, and forwards
its streams to the module's outputs. Its defaults are the DimOS 0.0.15 profile
(``stop_movement="off"``, goals within 500 m / 50 m); docs/dimos.md lists each
difference from DimOS's module and the setting that restores DimOS's behaviour.

Importing this module needs DimOS (``pip install 'viewer-bridge[dimos]'``).
"""

from __future__ import annotations

import threading
import typing
from typing import Any, Final

import msgspec

try:
    from dimos.core.core import rpc
    from dimos.core.module import Module, ModuleConfig
    from dimos.core.stream import Out
    from dimos.msgs.geometry_msgs.PointStamped import PointStamped
    from dimos.msgs.geometry_msgs.Twist import Twist
    from dimos.msgs.geometry_msgs.Vector3 import Vector3
    from dimos.visualization.rerun.constants import RERUN_WEBSOCKET_PORT
    from dimos.visualization.rerun.spec import RerunWebSocketServerSpec
    from pydantic import Field, create_model
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"viewer_bridge.dimos is the DimOS module and needs DimOS ({exc}); "
        "install it with: pip install 'viewer-bridge[dimos]'",
        name=exc.name,
    ) from exc

from viewer_bridge import config as bridge_config
from viewer_bridge.config import BridgeConfig, ConfigError
from viewer_bridge.core import messages
from viewer_bridge.server.threaded import RerunWebSocketServer as ThreadedServer

__all__ = ["RerunWebSocketServer", "RerunWebSocketServerConfig", "RerunWebSocketServerSpec"]

# Settings whose default in a DimOS stack differs from the standalone server's:
# DimOS 0.0.15's MovementManager announces stop_movement, and goals are bounded.
DIMOS_PROFILE: Final[dict[str, Any]] = {
    "stop_movement": "off",
    # MovementManager's own limits; here the operator is told why a click went nowhere.
    "max_goal_distance": 500.0,
    "max_goal_height": 50.0,
    # DimOS's 3D view has origin "world": the goal marker is drawn only under it (docs/viewer-awareness.md).
    "rerun_prefix": "world/bridge/",
}

# Fields DimOS already defines: host and port with DimOS's defaults below, and
# ModuleConfig's own frame_id (None here means the bridge's default, "world").
_OWN_FIELDS: Final = frozenset({"host", "port", "frame_id"})

# How long websocket_url() waits for the listener when the port is 0 (DimOS waits as long).
_BIND_WAIT: Final = 10.0


def _descriptions() -> dict[str, str]:
    """Each setting's help text: from ``msgspec.Meta(description=...)``, or the docstring under it."""
    field_docs = getattr(bridge_config, "field_docs", None)
    docs: dict[str, str] = dict(field_docs()) if callable(field_docs) else {}
    info = msgspec.inspect.type_info(BridgeConfig)
    assert isinstance(info, msgspec.inspect.StructType)
    for field in info.fields:
        if isinstance(field.type, msgspec.inspect.Metadata) and field.type.extra_json_schema:
            description = field.type.extra_json_schema.get("description")
            if isinstance(description, str):
                docs[field.name] = description
    return docs


def _bridge_fields() -> dict[str, Any]:
    """Every BridgeConfig setting as a pydantic field, with its type, default and help text."""
    hints = typing.get_type_hints(BridgeConfig)
    docs = _descriptions()
    fields: dict[str, Any] = {}
    for info in msgspec.structs.fields(BridgeConfig):
        if info.name in _OWN_FIELDS:
            continue
        description = docs.get(info.name)
        if info.name in DIMOS_PROFILE:
            field = Field(default=DIMOS_PROFILE[info.name], description=description)
        elif info.default_factory is not msgspec.NODEFAULT:
            field = Field(default_factory=info.default_factory, description=description)
        else:
            field = Field(default=info.default, description=description)
        fields[info.name] = (hints[info.name], field)
    return fields


RerunWebSocketServerConfig = create_model(
    "RerunWebSocketServerConfig",
    __base__=ModuleConfig,
    __module__=__name__,
    __doc__="DimOS's host and port (bound to global_config.listen_host, port 3030) plus every viewer-bridge setting.",
    host=(str, Field(default_factory=lambda data: data["g"].listen_host)),
    port=(int, RERUN_WEBSOCKET_PORT),
    **_bridge_fields(),
)


def _to_dimos_twist(twist: messages.Twist) -> Twist:
    lin, ang = twist.linear, twist.angular
    return Twist(linear=Vector3(lin.x, lin.y, lin.z), angular=Vector3(ang.x, ang.y, ang.z))


def _to_dimos_point(point: messages.PointStamped) -> PointStamped:
    return PointStamped(x=point.x, y=point.y, z=point.z, ts=point.ts, frame_id=point.frame_id)


class RerunWebSocketServer(Module):  # type: ignore[misc]
    """dimos-viewer's teleop and click endpoint, served by viewer-bridge, as a DimOS module."""

    config: RerunWebSocketServerConfig  # type: ignore[valid-type]

    clicked_point: Out[PointStamped]
    tele_cmd_vel: Out[Twist]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        try:
            # Built now, so a bad setting fails the deploy with a message naming it.
            self.bridge_config = self._bridge_config()
        except BaseException:
            self._close_module()  # the loop thread and RPC service the base class opened
            raise
        self._lifecycle = threading.Lock()
        self._bound = threading.Event()
        self._bridge = self._make_bridge()

    def _make_bridge(self) -> ThreadedServer:
        bridge = ThreadedServer(self.bridge_config)
        # Subscribers run on the bridge's subscriber thread, in the order the bridge decided.
        bridge.tele_cmd_vel.subscribe(lambda twist: self.tele_cmd_vel.publish(_to_dimos_twist(twist)))
        bridge.clicked_point.subscribe(lambda point: self.clicked_point.publish(_to_dimos_point(point)))
        return bridge

    @property
    def _settings(self) -> Any:
        # The pydantic model built above; mypy cannot see its fields.
        return self.config

    def _bridge_config(self) -> BridgeConfig:
        settings = self._settings
        values = {name: getattr(settings, name) for name in BridgeConfig.__struct_fields__ if name != "frame_id"}
        if settings.frame_id is not None:
            values["frame_id"] = settings.frame_id
        try:
            return msgspec.convert(values, BridgeConfig)
        except (msgspec.ValidationError, ConfigError) as exc:
            raise ConfigError(f"{type(self).__name__} config: {exc}") from None

    @property
    def host(self) -> str:
        return str(self._settings.host)

    @property
    def port(self) -> int:
        return int(self._settings.port)

    @property
    def bridge(self) -> ThreadedServer:
        """The viewer-bridge server inside (its ``server.stats``, ``server.safety``, ``http_url()``)."""
        return self._bridge

    @property
    def bound_port(self) -> int:
        """The port listened on (the kernel's choice when ``port`` is 0); only while started."""
        port = self._bridge.bound_port
        if port is None:
            raise RuntimeError("RerunWebSocketServer is not listening; call start() first")
        return port

    @rpc  # type: ignore[untyped-decorator]
    def websocket_url(self) -> str:
        """The URL a viewer on this machine dials (no token in it; see docs/dimos.md).

        With ``port`` 0 it waits for the listener, since only then is the port known.
        """
        if self.port == 0 and not self._bound.wait(timeout=_BIND_WAIT):
            raise TimeoutError(f"RerunWebSocketServer has not bound a port within {_BIND_WAIT:g} s")
        return self._bridge.websocket_url()

    @rpc  # type: ignore[untyped-decorator]
    def start(self) -> None:
        """Listen; returns once connections are accepted, or raises why not (e.g. the port is taken)."""
        with self._lifecycle:
            if self._bound.is_set():
                return
            if self._loop is None:
                # DimOS closes a module's loop and RPC service in stop(): a stopped module stays stopped.
                raise RuntimeError("this RerunWebSocketServer was stopped; deploy a new one to serve again")
            super().start()
            self._bridge.start()
            self._bound.set()

    @rpc  # type: ignore[untyped-decorator]
    def stop(self) -> None:
        """Close clients, publish a zero if someone was driving, stop listening, then stop the module."""
        with self._lifecycle:
            self._bound.clear()
            # Before the module's transports close, so the zero reaches the robot.
            self._bridge.stop()
            super().stop()

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        for name in ("_bridge", "_bound", "_lifecycle"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._lifecycle = threading.Lock()
        self._bound = threading.Event()
        self._bridge = self._make_bridge()

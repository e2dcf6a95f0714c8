"""Zenoh sessions for the fleet: how stations and agents join it, and how they learn a link is gone.

Both sides of a fleet (the station's :mod:`viewer_bridge.server.fleet` and the
robot's :mod:`viewer_bridge.bus.agent`) open one Zenoh session each, as a
peer or as a client of ``zenohd`` routers, with the same settings as the
Zenoh transport (``$ZENOH_CONFIG`` as the base, then mode, endpoints and
scouting), plus a *lease*: how long the other end of a link waits without
hearing from this session before it declares the link dead. That is what
bounds how long a robot whose network is cut still shows as online at the
station (its liveliness token goes with its last link). Zenoh's default is
10 s; the fleet's is shorter.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any, Final

from viewer_bridge.bus.transports.base import TransportError

__all__ = ["DEFAULT_LEASE", "open_session"]

log = logging.getLogger(__name__)

# Seconds a link's far end waits for this session before it drops the link (Zenoh sends keep-alives
# four times per lease). Short enough that a cut robot is offline at the station within seconds.
DEFAULT_LEASE: Final = 3.0


def open_session(
    *,
    mode: str = "peer",
    connect: Sequence[str] = (),
    listen: Sequence[str] = (),
    multicast_scouting: bool = True,
    lease: float = DEFAULT_LEASE,
    who: str = "fleet",
) -> Any:
    """Open a Zenoh session; :class:`TransportError` with a fix-it hint if it cannot be opened."""
    import zenoh

    if mode not in ("peer", "client"):
        raise TransportError(f"zenoh mode must be 'peer' or 'client', got {mode!r}")
    if not (math.isfinite(lease) and 0.1 <= lease <= 3600):
        raise TransportError(f"zenoh lease must be between 0.1 and 3600 seconds, got {lease!r}")
    try:
        config = zenoh.Config.from_env() if os.environ.get("ZENOH_CONFIG") else zenoh.Config()
        config.insert_json5("mode", json.dumps(mode))
        if connect:
            config.insert_json5("connect/endpoints", json.dumps(list(connect)))
        if listen:
            config.insert_json5("listen/endpoints", json.dumps(list(listen)))
        if not multicast_scouting:
            config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("transport/link/tx/lease", str(round(lease * 1000)))
    except zenoh.ZError as exc:
        raise TransportError(
            f"bad Zenoh configuration for the {who} (mode={mode}, connect={list(connect)}, listen={list(listen)}): "
            f"{_first_line(exc)}. Endpoints look like tcp/HOST:PORT."
        ) from None
    try:
        return zenoh.open(config)
    except zenoh.ZError as exc:
        why = _first_line(exc)
        if "Address already in use" in why:
            hint = "another process listens on that endpoint: choose another --zenoh-listen port"
        elif mode == "client":
            hint = "client mode needs a reachable zenohd router at --zenoh-connect (or use --zenoh-mode peer)"
        else:
            hint = "check --zenoh-connect/--zenoh-listen (tcp/HOST:PORT) and that the address is on this host"
        raise TransportError(f"the {who} could not open a Zenoh {mode} session: {why}. Fix: {hint}.") from None


def has_links(session: Any) -> bool:
    """Whether the session is connected to any router or peer now."""
    info = session.info
    return bool(info.routers_zid() or info.peers_zid())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" at /", 1)[0].rstrip(" .")

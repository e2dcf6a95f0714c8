"""Transports carry published messages off the process: the interface they share and how they are made.

The interface is :class:`~viewer_bridge.bus.transports.base.Transport`; the
LCM and Zenoh transports are imported only when one is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from viewer_bridge.bus.transports.base import TRANSPORT_NAMES, Transport, TransportError
from viewer_bridge.extras import missing_extra

if TYPE_CHECKING:  # pragma: no cover
    from viewer_bridge.config import BridgeConfig

__all__ = ["TRANSPORT_NAMES", "Transport", "TransportError", "create_transport"]


def create_transport(name: str, config: BridgeConfig) -> Transport:
    """Make the transport called ``name`` from the bridge configuration.

    Raises :class:`TransportError` naming the ``pip install`` when its extra is missing.
    """
    if name in TRANSPORT_NAMES:
        problem = missing_extra(name)
        if problem is not None:
            raise TransportError(problem)
    if name == "lcm":
        from viewer_bridge.bus.transports.lcm import LcmTransport

        return LcmTransport(url=config.lcm_url)
    if name == "zenoh":
        from viewer_bridge.bus.transports.zenoh import ZenohTransport

        return ZenohTransport(
            mode=config.zenoh_mode,
            connect=list(config.zenoh_connect),
            listen=list(config.zenoh_listen),
            multicast_scouting=config.zenoh_multicast_scouting,
        )
    raise TransportError(f"unknown transport {name!r}; choose from: {', '.join(TRANSPORT_NAMES)}")

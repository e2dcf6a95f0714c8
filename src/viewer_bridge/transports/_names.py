"""What a bus transport needs to read names back: the bridge's message types by wire name.

Publishing goes from a :class:`~viewer_bridge.streams.Topic` to a channel or
key; listening goes the other way, from whatever name is seen on the bus to a
topic and a message type to decode with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from viewer_bridge.messages import Bool, Message, PointStamped, Twist
from viewer_bridge.streams import Topic

__all__ = ["BUS_TYPES", "clean_namespace", "received_topic"]

# Every type the bridge publishes or the mux reads, by its LCM type name.
BUS_TYPES: Final[Mapping[str, type[Message]]] = {t.lcm_name: t for t in (Twist, PointStamped, Bool)}


def clean_namespace(namespace: str) -> str:
    """``"/robot1/"`` -> ``"robot1"``: the form topic names use."""
    return namespace.strip("/")


def received_topic(name: str, type_name: str) -> Topic | None:
    """The topic for a name and type seen on the bus, or None if the type is not one of ours."""
    message_type = BUS_TYPES.get(type_name)
    if message_type is None or not name:
        return None
    return Topic(name, name, message_type)

"""Topic names, sans I/O: what each stream is called on a bus after remapping and namespacing, and back.

Publishing goes from a stream to a :class:`Topic` (its remapped, namespaced
name and type), which gives the LCM channel and Zenoh key; listening goes
the other way, from a name seen on the bus to a topic and a type to decode
with. The mux's input and output names are checked here too, so a clash is
an error at start that names the setting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Final

from viewer_bridge.core.messages import Bool, Message, PointStamped, Twist

__all__ = [
    "BUS_TYPES",
    "STREAM_TYPES",
    "Topic",
    "TopicMap",
    "clean_namespace",
    "mux_topics",
    "received_topic",
]

# The streams the bridge publishes, with DimOS's names and types.
STREAM_TYPES: Final[Mapping[str, type[Message]]] = {
    "clicked_point": PointStamped,
    "tele_cmd_vel": Twist,
    "stop_movement": Bool,
    "estop": Bool,
}

# Every type the bridge publishes or the mux reads, by its LCM type name.
BUS_TYPES: Final[Mapping[str, type[Message]]] = {t.lcm_name: t for t in (Twist, PointStamped, Bool)}

_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Topic:
    """A stream as it appears on a bus: its (remapped, namespaced) name and its type."""

    stream: str
    name: str
    type: type[Message]

    @property
    def type_name(self) -> str:
        return self.type.lcm_name

    @cached_property  # read for every message a bus transport publishes
    def lcm_channel(self) -> str:
        """The DimOS LCM channel, ``/NAME#TYPE``."""
        return f"/{self.name}#{self.type_name}"

    @cached_property
    def zenoh_key(self) -> str:
        """The DimOS Zenoh key expression, ``dimos/NAME/TYPE``."""
        return f"dimos/{self.name}/{self.type_name}"


class TopicMap:
    """Resolves each stream to its topic after remapping and namespacing.

    Raises ``ValueError`` naming the problem when a remap refers to an unknown
    stream, a name is not a valid topic name, or two streams of different
    types would end up on one topic.
    """

    def __init__(
        self,
        remap: Mapping[str, str] | None = None,
        namespace: str = "",
        streams: Mapping[str, type[Message]] = STREAM_TYPES,
    ) -> None:
        remap = dict(remap or {})
        for source, target in remap.items():
            if source not in streams:
                raise ValueError(
                    f"cannot remap unknown stream {source!r}; streams are: {', '.join(streams)}"
                )
            if not _NAME_RE.match(target):
                raise ValueError(
                    f"invalid topic name {target!r} for stream {source!r}: use letters, digits, "
                    "'_' and '/' separators"
                )
        namespace = namespace.strip("/")
        if namespace and not _NAME_RE.match(namespace):
            raise ValueError(f"invalid namespace {namespace!r}: use letters, digits, '_' and '/' separators")
        self.namespace = namespace
        topics: dict[str, Topic] = {}
        taken: dict[str, Topic] = {}
        for stream, message_type in streams.items():
            name = remap.get(stream, stream)
            if namespace:
                name = f"{namespace}/{name}"
            topic = Topic(stream, name, message_type)
            other = taken.get(name)
            if other is not None and other.type is not message_type:
                raise ValueError(
                    f"remap puts stream {stream!r} ({message_type.lcm_name}) on topic {name!r}, "
                    f"already used by stream {other.stream!r} ({other.type.lcm_name})"
                )
            taken[name] = topic
            topics[stream] = topic
        self._topics = topics

    def __getitem__(self, stream: str) -> Topic:
        return self._topics[stream]

    def __iter__(self) -> Iterator[Topic]:
        return iter(self._topics.values())


def clean_namespace(namespace: str) -> str:
    """``"/robot1/"`` -> ``"robot1"``: the form topic names use."""
    return namespace.strip("/")


def received_topic(name: str, type_name: str) -> Topic | None:
    """The topic for a name and type seen on the bus, or None if the type is not one of ours."""
    message_type = BUS_TYPES.get(type_name)
    if message_type is None or not name:
        return None
    return Topic(name, name, message_type)


def mux_topics(topics: TopicMap, nav: str, output: str) -> tuple[Topic, Topic]:
    """The mux's input and output topics under ``topics``' namespace.

    Raises ``ValueError`` naming the clash if either would be one of the
    bridge's own topics (the mux would read the bridge's output, or two
    publishers would command one topic) or they are the same topic.
    """
    # TopicMap validates names and applies the namespace; reuse it for the mux's two names.
    names = TopicMap({"mux": nav, "mux_output": output}, topics.namespace, {"mux": Twist, "mux_output": Twist})
    nav_topic = Topic(nav, names["mux"].name, Twist)
    out_topic = Topic(output, names["mux_output"].name, Twist)
    if nav_topic.name == out_topic.name:
        raise ValueError(f"mux reads and writes the same topic {nav_topic.name!r}: choose another --mux-output")
    for topic in topics:
        if topic.name == nav_topic.name:
            raise ValueError(
                f"mux input {nav_topic.name!r} is the topic of the bridge's stream {topic.stream!r}: the mux "
                "would read the bridge's own output; give --mux the navigation stack's topic"
            )
        if topic.name == out_topic.name:
            raise ValueError(
                f"mux output {out_topic.name!r} is also the topic of the bridge's stream {topic.stream!r} "
                "(a --remap?): raw teleop and the mux would both command it; drop the remap or choose "
                "another --mux-output"
            )
    return nav_topic, out_topic

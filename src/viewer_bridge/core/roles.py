"""What each kind of token may do, sans I/O: the roles and the message kinds each may send.

A bridge may hand out several named tokens (see :mod:`viewer_bridge.core.auth`),
each with one role:

* ``drive``: every message (``twist``, ``click``, ``stop``, ...);
* ``stop``: ``stop`` only (and the status endpoints and frames): a safety
  officer's e-stop panel, which must be able to halt the robot and must not
  be able to move it;
* ``view``: nothing that acts (the status endpoints and frames only): a
  wall display.

Every role may send ``heartbeat`` (it only says the client is alive). The
latched e-stop's ``estop`` and ``estop_clear`` are listed for ``drive`` and
``stop`` already, so the messages that add them are permitted the moment
they exist; :func:`may_send` is the one place that says who may send what,
and :class:`~viewer_bridge.core.connection.Connection` asks it for every
message before acting on it. A message a role may not send is refused with
a ``forbidden`` error frame and never published.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

__all__ = ["PERMITTED", "Role", "may_send"]


class Role(enum.StrEnum):
    """What a token lets its holder do."""

    DRIVE = "drive"
    STOP = "stop"
    VIEW = "view"


PERMITTED: Final[Mapping[Role, frozenset[str] | None]] = {
    Role.DRIVE: None,
    Role.STOP: frozenset({"stop", "heartbeat", "estop", "estop_clear"}),
    Role.VIEW: frozenset({"heartbeat"}),
}
"""Message kinds (the protocol's ``type`` values) each role may send; ``None``: every kind."""


def may_send(role: Role, kind: str) -> bool:
    """Whether a client holding ``role`` may send a message of type ``kind``."""
    permitted = PERMITTED[role]
    return permitted is None or kind in permitted

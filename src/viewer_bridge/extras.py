"""The optional parts of viewer-bridge: which pip extra brings which feature, and the message when one is missing.

Serving (the viewer endpoint, the browser page, ``--echo``) needs only the
core install. Everything else is an extra, checked when the feature is asked
for, so a missing one is a one-line error naming the ``pip install`` to run
rather than an ImportError traceback. ``viewer-bridge[all]`` has them all.
"""

from __future__ import annotations

import importlib.util
from typing import Final, NamedTuple

__all__ = ["EXTRAS", "missing_extra"]


class Extra(NamedTuple):
    module: str
    """Top-level module whose presence means the extra is installed."""
    needs: str
    """What needs it and what it brings, for the message."""


EXTRAS: Final = {
    "lcm": Extra("lcm", "the LCM transport needs the lcm package"),
    "zenoh": Extra("zenoh", "the Zenoh transport needs the eclipse-zenoh package"),
    "teleop": Extra("textual", "the terminal teleop needs the textual package"),
    "web3d": Extra("rerun_bindings", "rerun_url (the page's 3D view) needs the Rerun web viewer from rerun-sdk"),
}


def missing_extra(name: str) -> str | None:
    """None when extra ``name`` is installed, else the one-line message saying what to install."""
    extra = EXTRAS[name]
    if importlib.util.find_spec(extra.module) is not None:
        return None
    return f"{extra.needs}: pip install 'viewer-bridge[{name}]'"

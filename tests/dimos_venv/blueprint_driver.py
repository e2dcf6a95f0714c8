"""Build a blueprint with DimOS's coordinator, then serve commands on stdin with JSON lines on stdout.

    python blueprint_driver.py viewer_bridge.dimos   (or dimos.visualization.rerun.websocket_server)
    python blueprint_driver.py viewer_bridge.dimos over-dimos

The blueprint is ``autoconnect(<that module>.RerunWebSocketServer.blueprint(port=0),
Recorder.blueprint())`` with ``tele_cmd_vel`` remapped to the recorder's
``twist_command``; with ``over-dimos`` that blueprint is written with DimOS's
own server and ours is autoconnected on top, replacing it. Once every module has started it prints
``{"event": "ready", "url": ..., "url_from_spec": ...}``: the server's
``websocket_url()`` over DimOS RPC, from here and from the recorder's worker.
Then, per line on stdin: ``received`` prints what the recorder has received;
``stop`` (or end of input) stops the blueprint and prints ``{"event": "stopped"}``.
Only these lines go to stdout; DimOS's logs go to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any, TextIO


def main() -> None:
    # DimOS and its worker processes log to stdout too: the protocol gets its own
    # copy of the stdout pipe, and file descriptor 1 becomes stderr for everyone else.
    sys.stdout.flush()
    out: TextIO = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def say(**message: Any) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    from dimos.core.coordination.blueprints import autoconnect
    from dimos.core.coordination.module_coordinator import ModuleCoordinator
    from recorder import Recorder

    server_class = importlib.import_module(sys.argv[1]).RerunWebSocketServer
    if sys.argv[2:] == ["over-dimos"]:
        # A stack written for DimOS's server (remapping keyed by DimOS's class), with ours added on top.
        from dimos.visualization.rerun.websocket_server import RerunWebSocketServer as DimosServer

        stack = autoconnect(DimosServer.blueprint(port=0), Recorder.blueprint()).remappings(
            [(DimosServer, "tele_cmd_vel", "twist_command")]
        )
        blueprint = autoconnect(stack, server_class.blueprint(port=0))
    else:
        blueprint = autoconnect(server_class.blueprint(port=0), Recorder.blueprint()).remappings(
            [(server_class, "tele_cmd_vel", "twist_command")]
        )
    blueprint = blueprint.global_config(n_workers=2)
    coordinator = ModuleCoordinator.build(blueprint)
    try:
        server = coordinator.get_instance(server_class)
        recorder = coordinator.get_instance(Recorder)
        say(
            event="ready",
            server=f"{server_class.__module__}.{server_class.__qualname__}",
            url=server.websocket_url(),
            url_from_spec=recorder.server_url(),
        )
        for line in sys.stdin:
            command = line.strip()
            if command == "received":
                say(event="received", messages=recorder.received())
            elif command == "stop":
                break
            else:
                say(event="error", detail=f"unknown command {command!r}")
    finally:
        coordinator.stop()
    say(event="stopped")


if __name__ == "__main__":
    main()

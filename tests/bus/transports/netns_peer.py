"""One side of a two-host test, run inside a network namespace by test_netns.py (not a test itself).

``bridge``: runs the bridge with the given transport and drives it from a
local WebSocket client on commands read from stdin, one per line:
``twist LINEAR_X ANGULAR_Z``, ``stop``, ``click X Y Z TS_MS``, ``status``,
``quit``. Every command is answered with one JSON line on stdout.

``subscribe``: a plain ``lcm`` or plain ``zenoh`` subscriber (not
viewer-bridge code) that prints ``{"name": ..., "hex": ...}`` per message,
until stdin closes.

Both print ``{"ready": true}`` once they are set up.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import threading
from typing import Any


def say(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_bridge(args: argparse.Namespace) -> None:
    from websockets.sync.client import connect

    from viewer_bridge import RerunWebSocketServer
    from viewer_bridge.bus.transports import TransportError

    settings: dict[str, Any] = {"transports": [args.transport], "namespace": args.namespace}
    if args.transport == "lcm":
        settings["lcm_url"] = args.lcm_url
    else:
        settings.update(zenoh_listen=[args.zenoh_listen], zenoh_multicast_scouting=False)
    server = RerunWebSocketServer(port=0, **settings)
    try:
        server.start()
    except TransportError as exc:
        say(ready=False, error=str(exc))
        return
    inprocess: list[Any] = []
    server.tele_cmd_vel.subscribe(inprocess.append)
    try:
        with connect(server.websocket_url(), open_timeout=10) as ws:
            say(ready=True)
            for line in sys.stdin:
                cmd, *rest = line.split()
                if cmd == "twist":
                    ws.send(json.dumps({"type": "twist", "linear_x": float(rest[0]), "angular_z": float(rest[1])}))
                elif cmd == "stop":
                    ws.send(json.dumps({"type": "stop"}))
                elif cmd == "click":
                    x, y, z, ts = (float(v) for v in rest)
                    ws.send(
                        json.dumps(
                            {"type": "click", "x": x, "y": y, "z": z, "entity_path": "/world", "timestamp_ms": int(ts)}
                        )
                    )
                elif cmd == "status":
                    # A ping round trip proves the WebSocket side is alive and every earlier frame handled.
                    ws.ping().wait(10)
                    sinks = {stream: list(n) for (stream, _), n in server.snapshot().deliveries.items()}
                    health = server.server.health()
                    say(
                        sinks=sinks,
                        inprocess=len(inprocess),
                        running=server.is_running,
                        healthy=health["up"],
                        problems=health["problems"],
                    )
                    continue
                elif cmd == "quit":
                    break
                say(ok=cmd)
    finally:
        server.stop()


def run_subscriber(args: argparse.Namespace) -> None:
    lock = threading.Lock()

    def emit(name: str, data: bytes) -> None:
        with lock:
            say(name=name, hex=bytes(data).hex())

    if args.lcm_url:
        import lcm

        lc = lcm.LCM(args.lcm_url)
        lc.subscribe(".*#.*", emit)
        say(ready=True)
        fd = lc.fileno()
        while True:
            readable, _, _ = select.select([fd, sys.stdin], [], [])
            if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1024):
                return
            if fd in readable:
                lc.handle_timeout(0)
    else:
        import zenoh

        config = zenoh.Config()
        config.insert_json5("mode", '"peer"')
        config.insert_json5("scouting/multicast/enabled", "false")
        config.insert_json5("listen/endpoints", "[]")
        config.insert_json5("connect/endpoints", json.dumps([args.zenoh_connect]))
        session = zenoh.open(config)
        subscriber = session.declare_subscriber("dimos/**", lambda s: emit(str(s.key_expr), s.payload.to_bytes()))
        say(ready=True)
        sys.stdin.read()
        subscriber.undeclare()
        session.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    bridge = sub.add_parser("bridge")
    bridge.add_argument("--transport", choices=("lcm", "zenoh"), required=True)
    bridge.add_argument("--lcm-url")
    bridge.add_argument("--zenoh-listen")
    bridge.add_argument("--namespace", default="")
    subscriber = sub.add_parser("subscribe")
    subscriber.add_argument("--lcm-url")
    subscriber.add_argument("--zenoh-connect")
    args = parser.parse_args()
    if args.role == "bridge":
        run_bridge(args)
    else:
        run_subscriber(args)


if __name__ == "__main__":
    main()

"""Parts of the fleet topology run in network namespaces by test_fleet_netns.py (not a test itself).

``router``: a Zenoh session in router mode (what ``zenohd`` is), listening on
the given endpoints, with a short lease so a robot whose link is cut is
dropped within about a second. Runs until stdin closes.

``client``: an operator's WebSocket client of a station, driven by commands
on stdin, one per line, each answered with one JSON line on stdout:
``twist LX AZ``, ``hold LX AZ HZ`` (keep sending that twist at HZ, as a
held key does), ``release`` (stop holding, send ``stop``), ``pause`` (stop
holding, send nothing: the key is still down but the client is silent), ``stop``,
``click X Y Z ENTITY_PATH``, ``errors`` (the error frames received so far),
``status`` (the station's ``/status``), ``quit``.

Both print ``{"ready": true}`` once set up.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import urllib.request
from typing import Any
from urllib.parse import urlsplit


def say(**record: Any) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_router(args: argparse.Namespace) -> None:
    import zenoh

    config = zenoh.Config()
    config.insert_json5("mode", '"router"')
    config.insert_json5("scouting/multicast/enabled", "false")
    config.insert_json5("listen/endpoints", json.dumps(args.listen))
    config.insert_json5("transport/link/tx/lease", str(round(args.lease * 1000)))
    session = zenoh.open(config)
    say(ready=True)
    sys.stdin.read()
    session.close()


def run_client(args: argparse.Namespace) -> None:
    from websockets.sync.client import connect

    errors: list[dict[str, Any]] = []
    lock = threading.Lock()
    released = threading.Event()
    hold_args: list[float] = [0.0, 0.0, 10.0]
    parts = urlsplit(args.url)
    status_url = f"http://{parts.netloc}/status"

    with connect(args.url, open_timeout=20) as ws:

        def receive() -> None:
            try:
                for frame in ws:
                    message = json.loads(frame)
                    if message.get("type") == "error":
                        with lock:
                            errors.append(message)
            except Exception:
                return

        def hold() -> None:
            # Like a held key: the same twist again and again, until released.
            while True:
                lx, az, hz = hold_args
                try:
                    ws.send(json.dumps({"type": "twist", "linear_x": lx, "angular_z": az}))
                except Exception:
                    return
                if released.wait(1.0 / hz):
                    return

        threading.Thread(target=receive, daemon=True).start()
        holder: threading.Thread | None = None
        say(ready=True)
        for line in sys.stdin:
            cmd, *rest = line.split()
            if cmd == "twist":
                ws.send(json.dumps({"type": "twist", "linear_x": float(rest[0]), "angular_z": float(rest[1])}))
            elif cmd == "hold":
                hold_args[:] = [float(v) for v in rest]
                if holder is None or not holder.is_alive():
                    released.clear()
                    holder = threading.Thread(target=hold, daemon=True)
                    holder.start()
            elif cmd in ("release", "pause"):
                released.set()
                if holder is not None:
                    holder.join()
                if cmd == "release":
                    ws.send(json.dumps({"type": "stop"}))
            elif cmd == "stop":
                ws.send(json.dumps({"type": "stop"}))
            elif cmd == "click":
                x, y, z = (float(v) for v in rest[:3])
                ws.send(json.dumps({"type": "click", "x": x, "y": y, "z": z, "entity_path": rest[3],
                                    "timestamp_ms": 1_700_000_000_000}))
            elif cmd == "errors":
                with lock:
                    say(errors=list(errors))
                continue
            elif cmd == "status":
                with urllib.request.urlopen(status_url, timeout=10) as response:
                    say(status=json.loads(response.read()))
                continue
            elif cmd == "quit":
                break
            say(ok=cmd)
        released.set()


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="role", required=True)
    router = sub.add_parser("router")
    router.add_argument("--listen", action="append", required=True)
    router.add_argument("--lease", type=float, default=1.0)
    client = sub.add_parser("client")
    client.add_argument("--url", required=True)
    args = parser.parse_args()
    if args.role == "router":
        run_router(args)
    else:
        run_client(args)


if __name__ == "__main__":
    main()

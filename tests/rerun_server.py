"""A Rerun gRPC server (``rr.serve_grpc``) holding a robot's recording, run as a child process by the tests.

Usage: ``python tests/rerun_server.py --recording-id ID [--app-id dimos] [--port 0] [--cloud]``.
Prints the server's URL (``rerun+http://127.0.0.1:PORT/proxy``) on one line
once it listens and its scene is logged, then serves until its stdin closes.
``--cloud`` logs the interop harness's magenta grid (``world/scene``), so
dimos-viewer connected to this server has something to click on; without it
only the world's coordinate frame is logged, as a robot's recording would
start.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import psutil
import rerun as rr

# The interop harness's PointCloudScene: 200 x 200 points 5 cm apart on z = 0, radius 3 cm, magenta.
CLOUD_SIDE = 200
CLOUD_SPACING = 0.05
CLOUD_RADIUS = 0.03
CLOUD_RGB = (255, 0, 255)


def listening_port() -> int:
    # serve_grpc(grpc_port=0) binds a free port but reports ":0" in its URL.
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        ports = [c.laddr.port for c in psutil.Process().net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        if ports:
            return int(ports[0])
        time.sleep(0.01)
    raise SystemExit("the gRPC server did not start listening")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--app-id", default="dimos")
    parser.add_argument("--recording-id", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cloud", action="store_true")
    args = parser.parse_args()
    rr.init(args.app_id, recording_id=args.recording_id, spawn=False)
    rr.serve_grpc(grpc_port=args.port)
    port = listening_port() if args.port == 0 else args.port
    rr.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    if args.cloud:
        half = (CLOUD_SIDE - 1) * CLOUD_SPACING / 2
        axis = np.arange(CLOUD_SIDE) * CLOUD_SPACING - half
        xs, ys = np.meshgrid(axis, axis)
        points = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], axis=1)
        rr.log("world/scene", rr.Points3D(points, colors=[CLOUD_RGB], radii=CLOUD_RADIUS), static=True)
    print(f"rerun+http://127.0.0.1:{port}/proxy", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()

"""A Rerun gRPC server with a small scene, for the browser tests (run as a child process).

Prints ``<grpc url> <box center x,y,z> <box half size>`` on one line once the
scene is logged, then serves until its stdin closes.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import psutil
import rerun as rr
import rerun.blueprint as rrb

BOX_CENTER = (2.0, 1.0, 0.5)
BOX_HALF = 0.75


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
    rr.init("viewer_bridge_test", spawn=False)
    blueprint = rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(
                name="world",
                origin="/world",
                # Looking straight at the box, so the view's centre is on it.
                eye_controls=rrb.EyeControls3D(
                    position=[BOX_CENTER[0] + 3.0, BOX_CENTER[1] - 4.0, BOX_CENTER[2] + 3.0],
                    look_target=list(BOX_CENTER),
                    eye_up=[0.0, 0.0, 1.0],
                ),
            ),
            rrb.Spatial2DView(name="camera", origin="/camera"),
        ),
        collapse_panels=True,
    )
    rr.serve_grpc(grpc_port=0, default_blueprint=blueprint)
    port = listening_port()
    rr.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rr.log(
        "world/box",
        rr.Boxes3D(centers=[BOX_CENTER], half_sizes=[[BOX_HALF] * 3], fill_mode="solid", colors=[[200, 80, 80]]),
        static=True,
    )
    rr.log("camera/image", rr.Image(np.full((48, 64, 3), 120, dtype=np.uint8)), static=True)
    center = ",".join(str(v) for v in BOX_CENTER)
    print(f"rerun+http://127.0.0.1:{port}/proxy {center} {BOX_HALF}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()

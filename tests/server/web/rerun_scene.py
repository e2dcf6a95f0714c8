"""A Rerun gRPC server with a small scene, for the browser tests (run as a child process: ``SCENE_COMMAND``).

Prints ``<grpc url> <box center x,y,z> <box half size>`` on one line once the
scene is logged, then serves until its stdin closes. ``--demo`` logs a room
with a robot instead, for the README's screenshots.
"""

from __future__ import annotations

import sys

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from tests.rerun_server import listening_port

BOX_CENTER = (2.0, 1.0, 0.5)
BOX_HALF = 0.75


def demo() -> None:
    """A walled room with a robot and its planned path: what a DimOS map looks like, roughly."""
    rng = np.random.default_rng(7)
    walls = []
    for (x0, y0), (x1, y1) in [
        ((0, 0), (8, 0)),
        ((8, 0), (8, 6)),
        ((8, 6), (0, 6)),
        ((0, 6), (0, 0)),
        ((3, 0), (3, 3.5)),
    ]:
        t = rng.uniform(0, 1, 900)
        z = rng.uniform(0, 1.2, 900)
        walls.append(np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, z], axis=1))
    cloud = np.concatenate(walls) + rng.normal(0, 0.02, (len(walls) * 900, 3))
    heights = cloud[:, 2] / 1.2
    colors = np.stack([60 + 120 * heights, 140 + 60 * heights, 255 - 80 * heights], axis=1).astype(np.uint8)
    blueprint = rrb.Blueprint(
        rrb.Spatial3DView(
            name="map",
            origin="/world",
            eye_controls=rrb.EyeControls3D(position=[-2.5, -5.0, 7.0], look_target=[4.0, 3.0, 0.0], eye_up=[0, 0, 1]),
        ),
        collapse_panels=True,
    )
    rr.serve_grpc(grpc_port=0, default_blueprint=blueprint)
    port = listening_port()
    rr.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    rr.log("world/map", rr.Points3D(cloud, colors=colors, radii=0.03), static=True)
    rr.log(
        "world/floor",
        rr.Boxes3D(centers=[[4, 3, -0.01]], half_sizes=[[4, 3, 0.01]], fill_mode="solid", colors=[[40, 44, 52]]),
        static=True,
    )
    rr.log(
        "world/robot",
        rr.Boxes3D(
            centers=[[1.5, 1.5, 0.2]], half_sizes=[[0.35, 0.25, 0.2]], fill_mode="solid", colors=[[230, 90, 70]]
        ),
        static=True,
    )
    path = [[1.5, 1.5, 0.05], [1.5, 4.5, 0.05], [5.0, 4.8, 0.05], [6.5, 2.0, 0.05]]
    rr.log("world/path", rr.LineStrips3D([path], colors=[[80, 220, 120]], radii=0.04), static=True)
    rr.log("world/goal", rr.Points3D([path[-1]], colors=[[80, 220, 120]], radii=0.15), static=True)
    print(f"rerun+http://127.0.0.1:{port}/proxy 1.5,1.5,0.2 0.35", flush=True)
    sys.stdin.read()


def main() -> None:
    rr.init("viewer_bridge_test", spawn=False)
    if "--demo" in sys.argv:
        demo()
        return
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

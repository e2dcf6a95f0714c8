"""The real dimos-viewer (0.32.0a3, under Xvfb) shows what the bridge logs into the robot's Rerun recording.

A Rerun gRPC server (``rr.serve_grpc`` in a child process) holds the robot's
recording: a magenta grid in ``world``. The viewer reads it (``--connect``) and
drives the bridge (``--ws-url``); the bridge logs into the same recording
(``--rerun-connect``, same application and recording id) under
``world/bridge/``, so the goal marker is inside the viewer's 3D view (whose
origin is ``world``, as in DimOS's layout). What the viewer draws is read from
screenshots by colour: the goal marker's green appears where the operator
clicked, and the ``linear_x`` series' amber appears in the plot once a key is
held, where neither was before.

Run as a script to (re)make the documentation's screenshot::

    python -m tests.interop.test_viewer_rerun docs/img/viewer-awareness.png
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.conftest import Recorder, require, wait_until
from tests.interop.viewer_harness import CLOUD_RGB, DimosViewer, Rect, XvfbDisplay, missing_tools
from tests.rerun_support import RerunServer, require_rerun
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.bus.rerun_sink import CMD_VEL_RGB, GOAL_RGB

pytestmark = [pytest.mark.viewer, pytest.mark.timeout(300)]

# Software rendering on 2 shared cores: frames can be seconds apart.
DRAWN = 60.0
AMBER = CMD_VEL_RGB[0]  # the linear_x series


@dataclass
class Session:
    rerun: RerunServer
    bridge: RerunWebSocketServer
    recorder: Recorder
    display: XvfbDisplay
    viewer: DimosViewer


@contextmanager
def awareness_session() -> Iterator[Session]:
    """Rerun server, bridge logging into it (with one refusal already logged), the viewer reading both."""
    require(missing_tools() is None, str(missing_tools()))
    require_rerun()
    with RerunServer(cloud=True) as rerun:
        # A deadman longer than any frame gap here: the viewer sends a twist per redrawn frame.
        bridge = RerunWebSocketServer(
            port=0, deadman_timeout=5.0, rerun_connect=rerun.url, rerun_recording_id=rerun.recording_id,
            rerun_prefix="world/bridge/",
        )
        recorder = Recorder(bridge)
        bridge.start()
        try:
            # A click from a 2D view, refused before the viewer starts: the refusal log is in its layout at once.
            with connect(bridge.websocket_url(), open_timeout=5) as ws:
                ws.send('{"type":"click","x":320,"y":240,"z":null,"entity_path":"/camera/image"}')
                # Status frames may come first; the refusal's error frame follows.
                while '"type":"error"' not in (frame := str(ws.recv(timeout=5))):
                    pass
                assert "click_not_3d" in frame
            with XvfbDisplay() as display, DimosViewer(
                display, bridge.websocket_url(), sources=[], extra_args=["--connect", rerun.url]
            ) as viewer:
                yield Session(rerun, bridge, recorder, display, viewer)
        finally:
            bridge.stop()


def click_goal(session: Session) -> tuple[int, int]:
    """Click the middle of the cloud; returns the pixel. The pointer is parked afterwards (no hover highlight)."""
    viewer, display = session.viewer, session.display
    # The viewer draws its scene whether or not its WebSocket is up yet; on a loaded machine it may not be.
    wait_until(lambda: session.bridge.snapshot().clients == 1, DRAWN, 0.05, "the viewer connected to the bridge")
    viewer.park_pointer()
    pixel = wait_until(lambda: display.grab().find_solid_region_pixel(CLOUD_RGB, viewer.view_rect), DRAWN, 0.2,
                       "the cloud on screen")
    viewer.click_at(*pixel)
    session.recorder.wait_points(1, timeout=DRAWN)
    viewer.park_pointer()
    return pixel


def around(pixel: tuple[int, int], half: int = 60) -> Rect:
    return Rect(pixel[0] - half, pixel[1] - half, 2 * half, 2 * half)


def goal_pixels(session: Session, pixel: tuple[int, int]) -> int:
    return session.display.grab().count_color(GOAL_RGB, around(pixel), tolerance=40, shaded=True)


def amber_pixels(session: Session) -> int:
    return session.display.grab().count_color(AMBER, tolerance=40)


def test_the_viewer_shows_the_goal_marker_and_the_commands_the_bridge_logged() -> None:
    with awareness_session() as session:
        viewer, recorder = session.viewer, session.recorder
        amber_before = amber_pixels(session)
        pixel = click_goal(session)
        [goal] = recorder.points
        # Nothing green there before the bridge logged the goal (the cloud is magenta, the grid grey).
        wait_until(lambda: goal_pixels(session, pixel) > 30, DRAWN, 0.3,
                   lambda: f"the goal marker at {pixel} (goal {goal}; {goal_pixels(session, pixel)} green pixels)")

        viewer.engage_teleop()
        viewer.key_down("w")
        try:
            recorder.wait_twists(1, timeout=DRAWN)
            # The linear_x series (amber) is drawn at 0.5 m/s: a line across the plot.
            wait_until(lambda: amber_pixels(session) > amber_before + 100, DRAWN, 0.3,
                       lambda: f"the cmd_vel plot ({amber_pixels(session)} amber pixels, {amber_before} before)")
        finally:
            viewer.key_up("w")
        wait_until(lambda: recorder.twists and recorder.twists[-1].is_zero(), DRAWN, 0.05, "the stop's zero")
        assert {(t.linear.x, t.angular.z) for t in recorder.twists[:-1]} == {(0.5, 0.0)}


def make_screenshot(path: Path) -> None:
    """The documentation's screenshot: a goal clicked, W held, the status naming the driver."""
    with awareness_session() as session:
        pixel = click_goal(session)
        wait_until(lambda: goal_pixels(session, pixel) > 30, DRAWN, 0.3, "the goal marker")
        session.viewer.engage_teleop()
        session.viewer.key_down("w")
        try:
            wait_until(lambda: amber_pixels(session) > 300, DRAWN, 0.3, "the cmd_vel plot")
            session.viewer.park_pointer()
            session.display.screenshot(path)
        finally:
            session.viewer.key_up("w")


if __name__ == "__main__":
    make_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "viewer-awareness.png"))

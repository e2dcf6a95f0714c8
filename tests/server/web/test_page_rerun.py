"""Click-to-navigate in the page's embedded Rerun viewer, against a real ``rr.serve_grpc()`` scene.

The viewer takes ~15 s to start on a software renderer (SwiftShader compiles
every shader on the CPU), so the tests of this module share one bridge and
one page, and each looks only at what it caused.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Recorder
from tests.server.web.conftest import RerunScene, SentFrames, hold, open_page, wait_for
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.server.web import rerun_assets

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


@dataclass
class Viewer:
    server: RerunWebSocketServer
    recorder: Recorder
    page: Page
    frames: SentFrames
    requested: list[str]

    def spots(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """Screen points in the 3D view and in the 2D view, as the page is scrolled now."""
        canvas = self.page.locator("#rerun-canvas")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box is not None
        # The scene's blueprint puts the 3D view in the left half and the 2D
        # view in the right, with the box in the middle of the 3D view.
        y = box["y"] + box["height"] * 0.5
        return (box["x"] + box["width"] * 0.25, y), (box["x"] + box["width"] * 0.75, y)


@pytest.fixture(scope="module")
def viewer(browser: Browser, rerun_scene: RerunScene) -> Iterator[Viewer]:
    server = RerunWebSocketServer(port=0, rerun_url=rerun_scene.url)
    recorder = Recorder(server)
    server.start()
    # Small, because SwiftShader renders every pixel on the CPU (~1 s a
    # frame at 1280x800 on two cores); the phone layout puts the viewer on top.
    context = browser.new_context(viewport={"width": 720, "height": 640}, has_touch=True)
    try:
        requested: list[str] = []
        context.on("request", lambda request: requested.append(request.url))
        page, frames = open_page(context, server.http_url("/"))
        page.wait_for_selector("#view3d[data-state=ready]", timeout=90_000)
        yield Viewer(server, recorder, page, frames, requested)
    finally:
        context.close()
        server.stop()


def next_frames(page: Page) -> None:
    """Wait until the page has drawn two more animation frames."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def pick_until(page: Page, attempt: Callable[[], None], done: Callable[[], object], what: str) -> None:
    """Run ``attempt`` (one click or tap) until ``done()``, for up to 30 s.

    Rerun picks with the hover result of an earlier frame, read back from the
    GPU a frame or two later, so a click that comes too soon after the
    pointer arrived selects nothing; on a slow software renderer one round
    may not be enough.
    """
    deadline = time.monotonic() + 30.0
    while True:
        attempt()
        try:
            wait_for(page, done, what, timeout=2.0)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def click_until(page: Page, x: float, y: float, done: Callable[[], object], what: str) -> None:
    """Hover, let the viewer draw, then click at (x, y), until ``done()``."""

    def attempt() -> None:
        page.mouse.move(x, y)
        next_frames(page)
        page.mouse.move(x + 1, y)
        next_frames(page)
        page.mouse.click(x + 1, y)

    pick_until(page, attempt, done, what)


def test_click_on_3d_entity_publishes_a_world_point(viewer: Viewer, rerun_scene: RerunScene) -> None:
    page, frames, rec = viewer.page, viewer.frames, viewer.recorder
    before, points_before = len(frames.of("click")), len(rec.points)
    spot3d, _ = viewer.spots()
    click_until(page, *spot3d, lambda: len(frames.of("click")) > before, "a click message")
    # On a loaded machine click_until may click more than once: pair this test's first click with the
    # first point published after it (one connection, so the bridge keeps their order).
    point = rec.wait_points(points_before + 1)[points_before]
    assert rerun_scene.distance_to_box(point.x, point.y, point.z) < 0.05, point
    assert point.frame_id == viewer.server.config.frame_id
    sent = frames.of("click")[before]
    assert sent["entity_path"] == "/world/box", sent
    assert math.isclose(sent["x"], point.x) and math.isclose(sent["y"], point.y) and math.isclose(sent["z"], point.z)
    assert isinstance(sent["timestamp_ms"], int) and abs(sent["timestamp_ms"] / 1000 - time.time()) < 60
    assert (page.locator("#goal").text_content() or "").startswith("Goal sent: (")


def test_tap_on_3d_entity_sends_a_goal(viewer: Viewer) -> None:
    # What a phone does: a finger down on the map, a few frames, finger up.
    page, frames = viewer.page, viewer.frames
    touch = page.context.new_cdp_session(page)
    (x, y), _ = viewer.spots()

    def tap() -> None:
        touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x - 10, "y": y + 5}]})
        next_frames(page)
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    before = len(frames.of("click"))
    pick_until(page, tap, lambda: len(frames.of("click")) > before, "a click message from a tap")
    assert frames.of("click")[-1]["entity_path"] == "/world/box"


def test_click_in_2d_view_is_not_sent(viewer: Viewer) -> None:
    page, frames = viewer.page, viewer.frames
    before = len(frames.items)
    notice = page.locator("#notice")
    _, spot2d = viewer.spots()
    click_until(page, *spot2d, lambda: "2D view" in (notice.text_content() or ""), "the 2D-click notice")
    # Image coordinates are no place to drive to: nothing was sent for it.
    assert frames.items[before:] == []


def test_goals_can_be_turned_off(viewer: Viewer) -> None:
    page, frames = viewer.page, viewer.frames
    page.locator("#click-nav").uncheck()
    try:
        (x, y), _ = viewer.spots()
        before = len(frames.items)
        goal = page.locator("#goal")
        click_until(page, x + 12, y - 8, lambda: "goals are off" in (goal.text_content() or ""), "the picked note")
        assert frames.items[before:] == []
    finally:
        page.locator("#click-nav").check()
    (x, y), _ = viewer.spots()
    before = len(frames.of("click"))
    click_until(page, x - 12, y + 8, lambda: len(frames.of("click")) > before, "a click message")


def test_typing_in_the_viewer_does_not_drive(viewer: Viewer) -> None:
    page, frames = viewer.page, viewer.frames
    viewer.spots()  # scrolls the viewer into view
    page.locator("#rerun-canvas").focus()
    page.keyboard.press("Control+k")  # Rerun's command palette: a text field
    typing = "() => document.activeElement && document.activeElement.tagName === 'INPUT'"
    page.wait_for_function(typing)
    before = len(frames.items)
    page.keyboard.type("wasd qe")
    hold(page, lambda: len(frames.items) == before, 0.3, "typing in the viewer drove the robot")
    page.keyboard.press("Escape")  # closes the palette: the viewer's key, not a stop
    page.wait_for_function(f"() => !({typing})()")
    assert frames.items[before:] == []


def test_page_talks_only_to_the_bridge_and_the_rerun_server(viewer: Viewer, rerun_scene: RerunScene) -> None:
    # The viewer's own analytics and update checks are stopped in the page
    # rather than left to time out on a closed network.
    own = viewer.server.http_url("/")
    grpc = rerun_scene.url.replace("rerun+", "").rsplit("/", 1)[0]
    others = [u for u in viewer.requested if not u.startswith((own, grpc))]
    assert others == []
    assert any("/rerun/" in u and u.endswith("re_viewer_bg.wasm") for u in viewer.requested)


def test_missing_rerun_sdk_leaves_teleop_working(
    bridge_factory: Factory, context: BrowserContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> rerun_assets.RerunAssets:
        raise rerun_assets.RerunAssetsError("rerun-sdk is not installed (test)")

    monkeypatch.setattr(rerun_assets, "load", missing)
    server, rec = bridge_factory(rerun_url="rerun+http://127.0.0.1:9/proxy")
    page, frames = open_page(context, server.http_url("/"))
    page.wait_for_selector("#view3d[data-state=message]")
    assert "rerun-sdk is not installed" in (page.locator("#view3d-status").text_content() or "")
    page.keyboard.down("w")
    rec.wait_twists(1)
    page.keyboard.up("w")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="stop")


def test_rerun_server_refusing_the_page_origin_is_explained(browser: Browser, rerun_scene: RerunScene) -> None:
    # The gRPC server allows only localhost origins by default: a page served
    # from another address (here 127.0.0.2, as a robot's LAN address would be)
    # is refused by CORS, which a browser reports only as a network error.
    server = RerunWebSocketServer(host="127.0.0.2", port=0, rerun_url=rerun_scene.url)
    server.start()
    context = browser.new_context(viewport={"width": 720, "height": 640})
    try:
        page, _ = open_page(context, server.http_url("/"))
        notice = page.locator("#notice")
        wait_for(page, lambda: "cors_allow_origin" in (notice.text_content() or ""), "the CORS hint", timeout=60)
        assert "http://127.0.0.2:" in (notice.text_content() or "")
    finally:
        context.close()
        server.stop()

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
from tests.web.conftest import RerunScene, SentFrames, open_page, wait_for
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.web import rerun_assets

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
    context = browser.new_context(viewport={"width": 720, "height": 640})
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


def click_until(page: Page, x: float, y: float, done: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Hover then click at (x, y) until ``done()``, retrying until ``timeout``.

    Rerun picks with the hover result of an earlier frame, read back from the
    GPU a frame or two later, so each click follows a hover and the frames
    that resolve it; on a slow software renderer one round may not be enough.
    """
    deadline = time.monotonic() + timeout
    while True:
        page.mouse.move(x, y)
        next_frames(page)
        page.mouse.move(x + 1, y)
        next_frames(page)
        page.mouse.click(x + 1, y)
        try:
            wait_for(page, done, what, timeout=2.0)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def test_click_on_3d_entity_publishes_a_world_point(viewer: Viewer, rerun_scene: RerunScene) -> None:
    page, frames, rec = viewer.page, viewer.frames, viewer.recorder
    before = len(frames.of("click"))
    spot3d, _ = viewer.spots()
    click_until(page, *spot3d, lambda: len(frames.of("click")) > before, "a click message")
    point = rec.wait_points(1)[-1]
    assert rerun_scene.distance_to_box(point.x, point.y, point.z) < 0.05, point
    assert point.frame_id == viewer.server.config.frame_id
    sent = frames.of("click")[-1]
    assert sent["entity_path"] == "/world/box", sent
    assert math.isclose(sent["x"], point.x) and math.isclose(sent["y"], point.y) and math.isclose(sent["z"], point.z)
    assert isinstance(sent["timestamp_ms"], int) and abs(sent["timestamp_ms"] / 1000 - time.time()) < 60
    assert (page.locator("#goal").text_content() or "").startswith("Goal sent: (")


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

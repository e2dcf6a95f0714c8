"""The browser page's teleop in real headless Chromium against a real bridge: keys, buttons, joystick, stops."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Recorder
from tests.server.web.conftest import hold, open_page, wait_for
from viewer_bridge import RerunWebSocketServer

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


def axes(frame: dict[str, float]) -> tuple[float, float, float]:
    return frame["linear_x"], frame["linear_y"], frame["angular_z"]


def test_hold_w_resends_until_release_then_one_stop(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("w")
    # 1.5 s of holding with no key repeat (Playwright sends one keydown):
    # only the page's own resend keeps the bridge's 1 s deadman from firing.
    rec.wait_twists(15, timeout=5)
    # No zero among them: the deadman never fired during the hold.
    assert all(t.linear.x == 0.5 and t.angular.z == 0.0 for t in rec.twists), rec.twists
    page.keyboard.up("w")
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="a zero twist after release")
    wait_for(page, lambda: "stop" in frames.types(), what="the stop frame")
    sent = frames.types()
    assert sent.count("stop") == 1 and sent[-1] == "stop", sent
    twists = frames.of("twist")
    assert all(axes(f) == (0.5, 0, 0) for f in twists)
    assert all(f["linear_z"] == 0 and f["angular_x"] == 0 and f["angular_y"] == 0 for f in twists)
    # Idle: not one more frame, and the bridge published exactly one zero.
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.4, "the page sent something while idle")
    assert sum(t.is_zero() for t in rec.twists) == 1


def test_keys_combine_and_shift_doubles(bridge_factory: Factory, context: BrowserContext) -> None:
    server, _ = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("w")
    page.keyboard.down("a")
    wait_for(page, lambda: any(axes(f) == (0.5, 0, 0.8) for f in frames.of("twist")), what="W+A twist")
    page.keyboard.down("Shift")
    wait_for(page, lambda: any(axes(f) == (1.0, 0, 1.6) for f in frames.of("twist")), what="Shift+W+A twist")
    page.keyboard.up("Shift")
    page.keyboard.up("a")
    page.keyboard.up("w")
    page.keyboard.down("q")
    wait_for(page, lambda: any(axes(f) == (0, 0.5, 0) for f in frames.of("twist")), what="Q twist")
    page.keyboard.up("q")
    page.keyboard.down("e")
    page.keyboard.down("d")
    wait_for(page, lambda: any(axes(f) == (0, -0.5, -0.8) for f in frames.of("twist")), what="E+D twist")
    page.keyboard.up("e")
    page.keyboard.up("d")
    wait_for(page, lambda: frames.types().count("stop") == 3, what="a stop after each of the three drives")
    assert page.locator("#out-lx").text_content() == "0.00"


def test_speed_slider_scales_commands(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.locator("#speed").fill("0.5")
    page.keyboard.down("s")
    rec.wait_twists(1)
    assert rec.twists[0].linear.x == -0.25
    page.keyboard.up("s")
    wait_for(page, lambda: "stop" in frames.types(), what="stop")


def test_stop_button_latches_the_estop_and_stops_a_held_key(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("w")
    rec.wait_twists(2)
    page.locator("#stop").click()
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="zero twist after STOP")
    wait_for(page, lambda: frames.types()[-1:] == ["estop"], what="the estop frame")
    assert server.snapshot().zeros == {"estop": 1}
    # W is still physically down: neither it nor its release restarts or re-stops.
    count = len(frames.items)
    page.keyboard.up("w")
    hold(page, lambda: len(frames.items) == count, 0.3, "the page sent something after STOP")
    assert frames.types()[-1] == "estop"


def test_space_is_an_emergency_stop(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("d")
    rec.wait_twists(1)
    page.keyboard.press("Space")
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="zero twist after Space")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="the stop frame")
    page.keyboard.up("d")


def test_on_screen_button_drives_while_held(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    button = page.locator('.pad button[data-key="KeyA"]').bounding_box()
    assert button is not None
    page.mouse.move(button["x"] + button["width"] / 2, button["y"] + button["height"] / 2)
    page.mouse.down()
    rec.wait_twists(3)
    assert all(t.angular.z == 0.8 and t.linear.x == 0.0 for t in rec.twists)
    page.mouse.up()
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="stop after the button is released")


def test_touch_joystick_drives_and_stops_on_lift(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    box = page.locator("#joystick").bounding_box()
    assert box is not None
    cx, cy, radius = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["width"] / 2
    # Real touch input through Chromium's input pipeline (touch -> pointer events).
    cdp = context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": cx, "y": cy}]})
    for step in range(1, 6):
        point = {"x": cx, "y": cy - radius * 1.2 * step / 5}  # straight up, past the rim
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    wait_for(page, lambda: any(t.linear.x == 0.5 for t in rec.twists), what="full forward from the joystick")
    assert all(t.angular.z == 0.0 and t.linear.x > 0 for t in rec.twists)
    # Drag left: a left turn is +angular_z.
    cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": cx - radius, "y": cy}]})
    wait_for(page, lambda: any(t.angular.z == 0.8 and t.linear.x == 0 for t in rec.twists), what="full left turn")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="stop when the finger lifts")
    assert frames.types().count("stop") == 1, frames.types()


def test_losing_focus_stops(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    # Headless Chromium pretends every page has focus unless told otherwise.
    context.new_cdp_session(page).send("Emulation.setFocusEmulationEnabled", {"enabled": False})
    page.keyboard.down("w")
    rec.wait_twists(2)
    other = context.new_page()
    other.bring_to_front()  # a real window blur for the first page
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="zero twist after blur")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="the stop frame")
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.3, "the page kept sending after blur")


def test_bridge_going_away_releases_and_reconnects(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("w")
    rec.wait_twists(2)
    port = server.bound_port
    server.stop()  # the bridge publishes its own zero on the way down
    page.wait_for_selector("#conn[data-state=closed], #conn[data-state=connecting]")
    assert page.locator("#out-lx").text_content() == "0.00"
    # Back on the same port: the page reconnects, and the key still down does not resume driving.
    again, rec2 = bridge_factory(port=port)
    page.wait_for_selector("#conn[data-state=open]", timeout=15_000)
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.3, "the page resumed driving after reconnecting")
    assert rec2.twists == []
    page.keyboard.up("w")
    page.keyboard.down("w")  # a fresh press drives again
    rec2.wait_twists(1)
    page.keyboard.up("w")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="stop")
    assert again.is_running


def test_token_from_page_url_is_forwarded(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory(token="s3cret-token-0123456789")
    page, _ = open_page(context, server.http_url("/?token=s3cret-token-0123456789"))
    page.keyboard.down("w")
    rec.wait_twists(1)
    page.keyboard.up("w")
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="stop")
    # Without it the page says what is missing instead of spinning.
    bare = context.new_page()
    bare.goto(server.http_url("/"))
    bare.wait_for_selector("#conn[data-state=unauthorized]")
    assert "token" in (bare.locator("#conn").text_content() or "").lower()


def test_second_page_sees_another_driver(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    first, _ = open_page(context, server.http_url("/"))
    second, _ = open_page(context, server.http_url("/"))
    first.keyboard.down("w")
    first.wait_for_selector("#driver[data-state=self]")
    second.wait_for_selector("#driver[data-state=other]")
    # The second page tries to drive: the bridge refuses, the page says so.
    second.keyboard.down("s")
    second.wait_for_selector("#driver[data-state=blocked]")
    assert all(t.linear.x == 0.5 for t in rec.twists)
    second.keyboard.up("s")
    first.keyboard.up("w")
    first.wait_for_selector("#driver[data-state=idle]")
    second.wait_for_selector("#driver[data-state=idle]")


def test_page_without_rerun_url_has_no_3d_view(bridge_factory: Factory, context: BrowserContext) -> None:
    server, _ = bridge_factory()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.http_url("/"))
    page.wait_for_selector("#conn[data-state=open]")
    assert page.locator("#view3d").is_hidden()
    assert page.locator("#nav-toggle").is_hidden()
    assert page.locator("#stop").is_visible()
    # Only the page's own files: no Rerun download, no other host.
    assert not [u for u in requested if "/rerun/" in u], requested
    assert all(u.startswith(server.http_url("/")) for u in requested), requested

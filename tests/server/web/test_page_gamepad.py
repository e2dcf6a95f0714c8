"""The page's gamepad driving in real headless Chromium against a real bridge, with a pad the test holds.

Headless Chromium has no gamepads, so ``fake_gamepad.js`` (an init script)
stands in for ``navigator.getGamepads()`` and fires ``gamepadconnected`` /
``gamepaddisconnected``; everything after that is the page's own code, the
bridge and what it publishes (the Recorder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import Recorder
from tests.server.web.conftest import SentFrames, hold, open_page, wait_for
from viewer_bridge import RerunWebSocketServer

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
FAKE_PAD = Path(__file__).with_name("fake_gamepad.js")

# The standard layout's indices.
LEFT_X, LEFT_Y, RIGHT_X, RIGHT_Y = 0, 1, 2, 3
A, B, LB, RB = 0, 1, 4, 5


class Pad:
    """The fake pad in the page's slot 0, moved from the test."""

    def __init__(self, page: Page) -> None:
        self.page = page

    @staticmethod
    def _state(axes: dict[int, float] | None, buttons: dict[int, bool] | None) -> dict[str, Any]:
        return {
            "axes": {str(i): v for i, v in (axes or {}).items()},
            "buttons": {str(i): v for i, v in (buttons or {}).items()},
        }

    def connect(self, axes: dict[int, float] | None = None, buttons: dict[int, bool] | None = None) -> None:
        self.page.evaluate("state => fakePad.connect(state)", self._state(axes, buttons))

    def set(self, axes: dict[int, float] | None = None, buttons: dict[int, bool] | None = None) -> None:
        self.page.evaluate("state => fakePad.set(state)", self._state(axes, buttons))

    def disconnect(self) -> None:
        self.page.evaluate("fakePad.disconnect()")


# Counts the page's twists as it sends them (the test's instrument, not the page's code).
TWIST_COUNTER = """
(() => {
  const send = WebSocket.prototype.send;
  window.twistsSent = 0;
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string" && data.includes('"type":"twist"')) window.twistsSent += 1;
    return send.call(this, data);
  };
})();
"""


def open_with_pad(context: BrowserContext, url: str) -> tuple[Page, SentFrames, Pad]:
    context.add_init_script(path=str(FAKE_PAD))
    page, frames = open_page(context, url)
    return page, frames, Pad(page)


def axes(frame: dict[str, float]) -> tuple[float, float, float]:
    return frame["linear_x"], frame["linear_y"], frame["angular_z"]


def last_axes(frames: SentFrames) -> tuple[float, float, float] | None:
    twists = frames.of("twist")
    return axes(twists[-1]) if twists else None


def page_ms(page: Page) -> float:
    result: float = page.evaluate("performance.now()")
    return result


def drive_forward(page: Page, pad: Pad, rec: Recorder) -> None:
    """Enable held, left stick full up: 0.5 forward, published."""
    pad.set(buttons={LB: True}, axes={LEFT_Y: -1.0})
    wait_for(page, lambda: any(t.linear.x == 0.5 for t in rec.twists), what="0.5 forward from the pad")


def assert_one_stop_then_silence(page: Page, frames: SentFrames, rec: Recorder, what: str) -> None:
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what=f"a zero twist after {what}")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what=f"the stop frame after {what}")
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.4, f"the page kept sending after {what}")
    assert frames.types().count("stop") == 1, frames.types()
    assert sum(t.is_zero() for t in rec.twists) == 1, rec.twists


def test_sticks_without_enable_publish_nothing(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    assert page.locator("#gamepad").get_attribute("data-state") == "none"
    pad.connect()
    pad.set(axes={LEFT_Y: -1.0, LEFT_X: 1.0, RIGHT_X: -1.0}, buttons={RB: True})
    # The page has seen the sticks (the panel shows them) and still sends nothing.
    page.wait_for_selector("#pad-left:text-is('1.00, -1.00')")
    hold(page, lambda: not frames.items, 0.5, "the page sent something without the enable button")
    assert rec.twists == []
    assert page.locator("#pad-enable").get_attribute("data-held") == "false"
    assert "hold LB / L1 to drive" in (page.locator("#pad-status").text_content() or "")


def test_enable_drives_at_a_steady_rate_and_release_sends_one_zero(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory()
    # The page's timers run on Playwright's clock: time flows as usual until the test holds it, so
    # the rate below is counted on the page's own timers, not on how busy this machine is. The page
    # counts the twists it sends, so a count taken while its clock is held is exact.
    context.clock.install()
    context.add_init_script(TWIST_COUNTER)
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    drive_forward(page, pad, rec)
    page.wait_for_selector("#gamepad[data-state=driving]")
    assert page.locator("#pad-enable").get_attribute("data-held") == "true"

    def settled() -> int:
        """The page's twists so far, once the bridge has taken every one (the page's clock is held)."""
        total: int = page.evaluate("window.twistsSent")
        wait_for(page, lambda: server.snapshot().frames["twist"] == total, what="the bridge to take every twist")
        return total

    # Exactly 1.5 s of the page's timers: the default 20 Hz sends 30 twists (the keyboard's
    # 10 Hz refresh would send 15), and the bridge takes each one. (Paused a second ahead, so the
    # page's clock cannot have passed that time yet; the jump fires each due timer once.)
    page.clock.pause_at(datetime.fromtimestamp(page.evaluate("Date.now()") / 1000 + 1.0, UTC))
    before = settled()
    page.clock.run_for(1500)
    sent = settled() - before
    assert sent in (30, 31), sent  # 31 when a period ends exactly at the pause
    # The page's own measure of its send rate, from its send times.
    rate = float(page.locator("#pad-sent").get_attribute("data-rate") or 0)
    assert rate == pytest.approx(20.0, abs=0.1), rate
    page.clock.resume()
    assert all((t.linear.x, t.linear.y, t.angular.z) == (0.5, 0.0, 0.0) for t in rec.twists), rec.twists
    pad.set(buttons={LB: False})  # the stick stays pushed: enable alone decides
    assert_one_stop_then_silence(page, frames, rec, "releasing enable")
    assert page.locator("#out-lx").text_content() == "0.00"


def test_twist_follows_the_sticks_through_dead_zone_and_curve(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    # Dead zone 0.1 and curve 2: |0.55| -> ((0.55 - 0.1) / 0.9)^2 = 0.25 of full.
    # Up and left are +: left stick left is strafe left (+y), right stick
    # right is a right turn (-z).
    pad.set(buttons={LB: True}, axes={LEFT_Y: -0.55, LEFT_X: -1.0, RIGHT_X: 0.55})
    wait_for(page, lambda: rec.twists, what="a twist")
    assert all((t.linear.x, t.linear.y, t.angular.z) == (0.125, 0.5, -0.2) for t in rec.twists), rec.twists
    assert all(f["linear_z"] == 0 and f["angular_x"] == 0 and f["angular_y"] == 0 for f in frames.of("twist"))
    assert page.locator("#out-ly").text_content() == "0.50"
    pad.set(axes={LEFT_Y: 0.0, LEFT_X: 0.0, RIGHT_X: 0.0})
    assert_one_stop_then_silence(page, frames, rec, "centring the sticks")


def test_dead_zone_sends_nothing_and_centring_sends_one_stop(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    # Enable held, every stick inside the dead zone (a worn stick rests off centre).
    pad.set(buttons={LB: True}, axes={LEFT_X: 0.09, LEFT_Y: -0.1, RIGHT_X: 0.1, RIGHT_Y: -0.09})
    page.wait_for_selector("#gamepad[data-state=enabled]")
    hold(page, lambda: not frames.items, 0.4, "the page sent something from inside the dead zone")
    assert rec.twists == []
    # Just outside it: ((0.2 - 0.1) / 0.9)^2 * 0.5 = 0.006.
    pad.set(axes={LEFT_Y: -0.2})
    wait_for(page, lambda: rec.twists, what="a twist from just outside the dead zone")
    assert (rec.twists[0].linear.x, rec.twists[0].linear.y, rec.twists[0].angular.z) == (0.006, 0.0, 0.0)
    # Back inside (not quite zero), enable still held: one stop, then no stream of zeros.
    pad.set(axes={LEFT_Y: -0.05})
    assert_one_stop_then_silence(page, frames, rec, "centring the stick")
    assert page.locator("#gamepad").get_attribute("data-state") == "enabled"


def test_turbo_scales_with_the_speed_slider(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    drive_forward(page, pad, rec)
    pad.set(buttons={RB: True}, axes={RIGHT_X: -1.0})
    wait_for(page, lambda: last_axes(frames) == (1.0, 0, 1.6), what="turbo, twice the speed")
    assert page.locator("#pad-turbo").get_attribute("data-held") == "true"
    # The Speed slider scales the pad as it does every input.
    page.locator("#speed").fill("0.5")
    wait_for(page, lambda: last_axes(frames) == (0.5, 0, 0.8), what="turbo at half speed")
    pad.set(buttons={RB: False})
    wait_for(page, lambda: last_axes(frames) == (0.25, 0, 0.4), what="no turbo at half speed")

    def published() -> set[tuple[float, float]]:
        return {(t.linear.x, t.angular.z) for t in rec.twists}

    # The page has sent the last one; the bridge publishes it a moment later.
    wait_for(page, lambda: (0.25, 0.4) in published(), what="the last twist published")
    assert {(0.5, 0.0), (1.0, 1.6), (0.5, 0.8), (0.25, 0.4)} <= published(), published()
    pad.set(buttons={LB: False})
    assert_one_stop_then_silence(page, frames, rec, "releasing enable")


def test_unplugging_while_driving_sends_one_zero(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    drive_forward(page, pad, rec)
    pad.disconnect()
    assert_one_stop_then_silence(page, frames, rec, "unplugging the pad")
    assert page.locator("#gamepad").get_attribute("data-state") == "none"
    # Plugged back in with enable and the stick still held: nothing until enable is pressed afresh.
    pad.connect(buttons={LB: True}, axes={LEFT_Y: -1.0})
    page.wait_for_selector("#gamepad[data-state=locked]")
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.3, "a re-plugged pad drove without a fresh enable")
    pad.set(buttons={LB: False})
    page.wait_for_selector("#gamepad[data-state=connected]")
    pad.set(buttons={LB: True})
    wait_for(page, lambda: len(frames.of("twist")) > count, what="driving after a fresh enable")
    pad.set(buttons={LB: False})
    wait_for(page, lambda: frames.types().count("stop") == 2, what="the second drive's stop")


def test_losing_focus_sends_one_zero(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    # Headless Chromium pretends every page has focus unless told otherwise.
    context.new_cdp_session(page).send("Emulation.setFocusEmulationEnabled", {"enabled": False})
    pad.connect()
    drive_forward(page, pad, rec)
    other = context.new_page()
    other.bring_to_front()  # a real window blur for the first page
    assert_one_stop_then_silence(page, frames, rec, "the tab losing focus")
    # Back in focus with enable still held: the pad waits for a fresh press.
    page.bring_to_front()
    wait_for(page, lambda: page.evaluate("document.hasFocus()"), what="focus back on the page")
    page.wait_for_selector("#gamepad[data-state=locked]")
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.3, "the pad resumed driving on focus")
    pad.set(buttons={LB: False})
    page.wait_for_selector("#gamepad[data-state=connected]")  # the page saw the release
    pad.set(buttons={LB: True})
    wait_for(page, lambda: len(frames.of("twist")) > count, what="driving after a fresh enable")
    pad.set(buttons={LB: False})
    wait_for(page, lambda: frames.types().count("stop") == 2, what="the second drive's stop")


def test_stop_button_stops_and_holds_until_enable_is_pressed_again(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    pad.connect()
    drive_forward(page, pad, rec)
    pad.set(buttons={B: True})
    assert_one_stop_then_silence(page, frames, rec, "the pad's stop button")
    pad.set(buttons={B: False})
    count = len(frames.items)
    hold(page, lambda: len(frames.items) == count, 0.3, "enable still held restarted the drive after a stop")
    # Stop works without enable too, even when nothing drives (it may stop another client).
    pad.set(buttons={LB: False})
    pad.set(buttons={B: True})
    wait_for(page, lambda: frames.types().count("stop") == 2, what="a stop from the pad while idle")
    pad.set(buttons={B: False, LB: True})
    wait_for(page, lambda: len(frames.of("twist")) > count, what="driving after a fresh enable")
    pad.set(buttons={LB: False})
    wait_for(page, lambda: frames.types().count("stop") == 3, what="the last drive's stop")


def test_settings_are_checked_kept_and_reset(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    page.locator(".pad-settings summary").click()
    form = page.locator("#pad-form")
    # This bridge has the latched e-stop, so the pad may have a button for it.
    assert form.locator("select[name=estop]").is_enabled()
    form.locator("select[name=enable]").select_option(str(A))
    rate = form.locator("input[name=rateHz]")
    rate.fill("500")
    rate.press("Tab")
    error = page.locator("#pad-form-error")
    assert "Send rate must be 5 to 50, not \"500\"" in (error.text_content() or "")
    rate.fill("5")
    rate.press("Tab")
    wait_for(page, lambda: error.text_content() == "", what="the error cleared")
    # Two roles on one button are refused, naming both, and nothing is applied.
    form.locator("select[name=stop]").select_option(str(A))
    assert "Stop and Enable are both A / ✕" in (error.text_content() or "")
    form.locator("select[name=stop]").select_option(str(B))
    wait_for(page, lambda: error.text_content() == "", what="the conflict cleared")
    stored = json.loads(page.evaluate("localStorage.getItem('viewer-bridge.gamepad')"))
    assert stored["enable"] == A and stored["rateHz"] == 5 and stored["stop"] == B

    # Kept across a reload, and the help follows the mapping.
    page.reload()
    page.wait_for_selector("#conn[data-state=open]")
    assert form.locator("input[name=rateHz]").input_value() == "5"
    assert form.locator("select[name=enable]").input_value() == str(A)
    assert "hold A / ✕" in (page.locator("#pad-help").text_content() or "")
    pad.connect()
    pad.set(buttons={LB: True}, axes={LEFT_Y: -1.0})
    hold(page, lambda: not frames.items, 0.3, "LB drove after enable moved to A")
    pad.set(buttons={LB: False, A: True})
    wait_for(page, lambda: rec.twists, what="driving with A as enable")
    # 5 Hz: at most ~5 a second, where the default would send 20.
    start, before = page_ms(page), len(rec.twists)
    wait_for(page, lambda: page_ms(page) - start >= 1500, what="1.5 s on the page's clock")
    published = len(rec.twists) - before
    assert published <= 5 * (page_ms(page) - start) / 1000 + 2, published
    pad.set(buttons={A: False})
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="stop on releasing A")

    page.locator(".pad-settings summary").click()
    page.locator("#pad-reset").click()
    assert page.evaluate("localStorage.getItem('viewer-bridge.gamepad')") is None
    assert form.locator("input[name=rateHz]").input_value() == "20"
    assert form.locator("select[name=enable]").input_value() == str(LB)


def test_bad_stored_settings_are_named_and_replaced(bridge_factory: Factory, context: BrowserContext) -> None:
    server, _ = bridge_factory()
    page, _, _ = open_with_pad(context, server.http_url("/"))
    page.evaluate("""localStorage.setItem('viewer-bridge.gamepad', '{"rateHz": "fast", "enable": -1}')""")
    page.reload()
    page.wait_for_selector("#conn[data-state=open]")
    notice = page.locator("#notice").text_content() or ""
    assert 'Send rate must be 5 to 50, not "fast"' in notice and "Enable: no button -1" in notice, notice
    form = page.locator("#pad-form")
    assert form.locator("input[name=rateHz]").input_value() == "20"
    assert form.locator("select[name=enable]").input_value() == str(LB)

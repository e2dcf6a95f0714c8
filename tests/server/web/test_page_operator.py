"""The page and operator control, in real headless Chromium against a real bridge and real clients.

STOP latches the e-stop and the bridge then refuses another client's twists;
releasing takes a held press; the header follows the bridge's status frames
(driver, the command sent and the one in force, the link, who stopped this
page); the gamepad's e-stop button latches too.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Recorder, wait_until
from tests.server.web.conftest import hold, open_page, wait_for
from tests.server.web.test_page_gamepad import LB, Pad, open_with_pad
from viewer_bridge import Bool, RerunWebSocketServer, Twist, Vector3
from viewer_bridge.clients.client import ServerError, ViewerClient

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
FWD = Twist(Vector3(0.5, 0, 0), Vector3())
Y_BUTTON = 3  # the standard layout's Y / triangle


def text(page: Page, selector: str) -> str:
    return page.locator(selector).text_content() or ""


def state(page: Page, selector: str) -> str | None:
    return page.locator(selector).get_attribute("data-state")


def press_and_hold(page: Page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()


def test_stop_latches_the_estop_a_client_is_refused_and_release_takes_a_held_press(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))  # the bridge's #0001
    assert page.evaluate("JSON.parse(document.getElementById('bridge-config').textContent).estop") is True
    assert "latches the e-stop" in text(page, "#stop")
    with ViewerClient(server.websocket_url()) as robot:  # #0002
        robot.twist(linear_x=0.5)
        robot.sync()
        page.locator("#stop").click()
        wait_for(page, lambda: rec.of("estop") == [Bool(True)], what="the e-stop latched on the bridge")
        assert frames.of("estop") == [{"type": "estop", "reason": "STOP on the browser page"}]
        assert "stop" not in frames.types(), "the bridge publishes the e-stop's zero itself"
        assert rec.twists == [FWD, Twist.zero()]

        # The banner names who, when and why; the header says so too.
        page.wait_for_selector("#estop-banner:not([hidden])")
        banner = text(page, "#estop-text")
        assert "E-STOP latched by you (#0001)" in banner and "STOP on the browser page" in banner, banner
        assert state(page, "#driver") == "estop"

        # Another client (here a ViewerClient driving the robot) is refused, told who latched it.
        robot.twist(linear_x=0.5)
        with pytest.raises(ServerError) as caught:
            robot.sync()
        assert caught.value.reason == "estopped"
        assert "e-stop latched by #0001" in caught.value.detail and "(STOP on the browser page)" in caught.value.detail
        status = robot.wait_status(lambda s: s.estop is not None)
        assert status.estop is not None and status.estop.by == "#0001"

        # A click on Release is not enough: it takes a held press.
        page.locator("#release").click()
        hold(page, lambda: "estop_clear" not in frames.types(), 1.8, "a click released the e-stop")
        assert server.snapshot().rejects["estopped"] == 1 and rec.of("estop") == [Bool(True)]
        press_and_hold(page, "#release")
        try:
            wait_for(page, lambda: "estop_clear" in frames.types(), what="the release after a held press")
        finally:
            page.mouse.up()
        wait_for(page, lambda: rec.of("estop") == [Bool(True), Bool(False)], what="the clear on the bridge")
        page.wait_for_selector("#estop-banner", state="hidden")
        assert frames.types().count("estop_clear") == 1

        # The client drove when it latched: it lets go, then drives again.
        robot.stop()
        robot.twist(linear_x=0.5)
        robot.sync()
    assert rec.twists[-2:] == [FWD, Twist.zero()]


def test_the_header_shows_the_driver_the_command_in_force_and_the_link(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory(max_linear_x=0.3)
    page, frames = open_page(context, server.http_url("/"))
    before = time.time() * 1000
    page.keyboard.down("w")
    rec.wait_twists(2)
    page.wait_for_selector("#driver[data-state=self]")
    # Sent 0.5; the bridge's limit makes it 0.3 on the robot.
    wait_for(page, lambda: text(page, "#cmd-applied") == "0.30 0.00 0.00", what="the command in force")
    assert text(page, "#cmd-sent") == "0.50 0.00 0.00"
    assert state(page, "#cmd-applied") == "yours"
    page.wait_for_selector("#link:not([hidden])")
    assert text(page, "#link").startswith("RTT ") and text(page, "#link").endswith("speed \u00d71.00")
    # Every twist carries the page's wall clock, for the bridge's stale check.
    twists = frames.of("twist")
    assert all(before - 1000 <= f["timestamp_ms"] <= time.time() * 1000 + 1000 for f in twists), twists
    page.keyboard.up("w")
    wait_for(page, lambda: text(page, "#cmd-applied") == "stopped", what="the robot stopped, in the header")
    page.wait_for_selector("#driver[data-state=idle]")


def test_status_frames_reach_the_page_after_each_change(bridge_factory: Factory, context: BrowserContext) -> None:
    server, _ = bridge_factory()
    page, _ = open_page(context, server.http_url("/"))
    with ViewerClient(server.websocket_url()) as other:
        changed = time.monotonic()
        other.twist(linear_x=0.2, angular_z=-0.4)
        page.wait_for_selector("#driver[data-state=other]")
        print(f"a new driver reached the page {(time.monotonic() - changed) * 1000:.1f} ms after its twist")
        assert text(page, "#driver") == "#0002 is driving"
        wait_for(page, lambda: text(page, "#cmd-applied") == "0.20 0.00 -0.40", what="the other's command")
        assert state(page, "#cmd-applied") == "other"

        changed = time.monotonic()
        request = urllib.request.Request(
            server.http_url("/estop"), data=json.dumps({"reason": "forklift crossing"}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        page.wait_for_selector("#estop-banner:not([hidden])")
        print(f"the e-stop reached the page {(time.monotonic() - changed) * 1000:.1f} ms after the POST")
        banner = text(page, "#estop-text")
        assert "E-STOP latched by http:127.0.0.1 at" in banner and "forklift crossing" in banner, banner
        assert text(page, "#cmd-applied") == "stopped"

        other.estop_clear()
        page.wait_for_selector("#estop-banner", state="hidden")
        wait_for(page, lambda: state(page, "#driver") == "idle", what="nobody driving after the clear")


def test_someone_elses_stop_holds_the_page_until_it_lets_go(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames = open_page(context, server.http_url("/"))
    page.keyboard.down("w")
    rec.wait_twists(1)
    with ViewerClient(server.websocket_url()) as other:
        other.stop()
        other.sync()
    page.wait_for_selector("#driver[data-state=held]")
    assert text(page, "#driver") == "Stopped by #0002: let go to drive again"
    # W is still down: the page keeps sending, and the bridge keeps refusing.
    wait_for(page, lambda: server.snapshot().rejects["stopped_by_other"] >= 2, what="the held key refused")
    assert rec.twists[-1] == Twist.zero() and rec.twists.count(Twist.zero()) == 1
    page.keyboard.up("w")  # the page's stop is its release
    page.wait_for_selector("#driver[data-state=idle]")
    page.keyboard.down("w")
    wait_for(page, lambda: rec.twists[-1] == FWD, what="driving again after letting go")
    page.wait_for_selector("#driver[data-state=self]")
    page.keyboard.up("w")
    wait_for(page, lambda: frames.types()[-1:] == ["stop"], what="the last stop")


def test_the_gamepads_estop_button_latches(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory()
    page, frames, pad = open_with_pad(context, server.http_url("/"))
    page.locator(".pad-settings summary").click()
    select = page.locator("#pad-form select[name=estop]")
    assert select.is_enabled()  # this bridge has the e-stop
    select.select_option(str(Y_BUTTON))
    assert "latch the e-stop" in text(page, "#pad-help")
    pad.connect()
    _drive_then_latch(page, pad, rec)
    assert frames.of("estop") == [{"type": "estop", "reason": "the gamepad's e-stop button on the browser page"}]
    page.wait_for_selector("#estop-banner:not([hidden])")


def _drive_then_latch(page: Page, pad: Pad, rec: Recorder) -> None:
    pad.set(buttons={LB: True}, axes={1: -1.0})
    wait_for(page, lambda: any(t.linear.x == 0.5 for t in rec.twists), what="driving from the pad")
    pad.set(buttons={LB: True, Y_BUTTON: True})  # the e-stop acts with or without enable
    wait_for(page, lambda: rec.of("estop") == [Bool(True)], what="the e-stop from the pad")
    assert rec.twists[-1] == Twist.zero()
    pad.set(buttons={LB: False, Y_BUTTON: False}, axes={1: 0.0})


def test_with_its_websocket_refused_the_page_still_stops_and_latches_over_http(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory(max_connections=1, deadman_timeout=30)
    with ViewerClient(server.websocket_url()) as driver:  # the one connection the bridge takes
        driver.twist(linear_x=0.5)
        driver.sync()
        page = context.new_page()
        page.goto(server.http_url("/"))
        page.wait_for_selector("#conn[data-state=closed]")  # the page's upgrade got 503
        page.keyboard.press("Space")
        rec.wait_twists(2)
        wait_for(page, lambda: "Stop sent over HTTP (not connected)" in text(page, "#notice"), "the notice")
        page.locator("#stop").click()
        wait_until(lambda: rec.of("estop") == [Bool(True)], what="the latch on the estop stream")
        wait_for(page, lambda: "E-stop latched over HTTP (not connected)" in text(page, "#notice"), "the notice")
        assert server.snapshot().clients == 1  # the page never got in: both went over HTTP
    with urllib.request.urlopen(server.http_url("/healthz"), timeout=5) as response:
        assert json.load(response)["estop"]["reason"] == "STOP on the browser page"
    assert rec.twists[:2] == [FWD, Twist.zero()] and set(rec.twists[2:]) <= {Twist.zero()}


def test_a_stop_over_http_that_is_never_answered_says_it_was_not_sent(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory(max_connections=1, deadman_timeout=30)
    with ViewerClient(server.websocket_url()):  # the one connection the bridge takes
        page = context.new_page()
        held: list[str] = []
        # The request reaches a host that takes it and never answers (the route is never fulfilled).
        page.route("**/stop", lambda route: held.append(route.request.method))
        page.goto(server.http_url("/"))
        page.wait_for_selector("#conn[data-state=closed]")  # the page's upgrade got 503
        page.keyboard.press("Space")
        wait_for(page, lambda: held == ["POST"], "the POST /stop on its way")
        assert "Not connected: sending the stop over HTTP" in text(page, "#notice")
        wait_for(
            page,
            lambda: "the stop over HTTP failed (no answer within 5 s): it was NOT sent" in text(page, "#notice"),
            "the notice that it failed",
            timeout=15,
        )
        page.unroute_all(behavior="ignoreErrors")
    assert server.snapshot().zeros.get("stop", 0) == 0 and rec.twists == []


def test_a_stop_over_http_that_is_redirected_is_not_followed(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory(max_connections=1, deadman_timeout=30)
    with ViewerClient(server.websocket_url()):  # the one connection the bridge takes
        page = context.new_page()
        followed: list[str] = []
        # As a proxy in front of the bridge might: the POST is sent on elsewhere, where a GET would land.
        page.route("**/stop", lambda route: route.fulfill(status=301, headers={"Location": "/elsewhere"}))
        page.route("**/elsewhere", lambda route: (followed.append(route.request.method), route.fulfill(status=200)))
        page.goto(server.http_url("/"))
        page.wait_for_selector("#conn[data-state=closed]")  # the page's upgrade got 503
        page.keyboard.press("Space")
        wait_for(
            page,
            lambda: "the stop over HTTP failed (redirected elsewhere, not followed): it was NOT sent"
            in text(page, "#notice"),
            "the notice that it was not sent",
        )
        page.unroute_all(behavior="ignoreErrors")
    assert followed == [] and server.snapshot().zeros.get("stop", 0) == 0 and rec.twists == []

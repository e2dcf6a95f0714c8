"""The browser page at a fleet station, in real headless Chromium: the robot picker chooses what W drives."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from tests.bus.transports.bus_support import require_zenoh
from tests.conftest import UNSEEN_ROBOT_STATION, Recorder
from tests.server.web.conftest import open_page, wait_for
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.clients.client import ViewerClient

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
# Robots without agents: driven on the station's own streams, so no Zenoh is needed here.
ROBOTS = {"go2-1": {"agent": False}, "go2-2": {"agent": False}}


def test_the_picker_lists_the_robots_and_drives_the_one_chosen(bridge_factory: Factory,
                                                               context: BrowserContext) -> None:
    server, _ = bridge_factory(robots=ROBOTS)
    got: dict[str, list[Any]] = {name: [] for name in ROBOTS}
    for name, robot in server.robots.items():
        robot.tele_cmd_vel.subscribe(got[name].append)
    page, _ = open_page(context, server.http_url("/"))
    assert not page.locator("#robot-pick").is_hidden()
    assert page.locator("#robot option").all_inner_texts() == ["choose…", "go2-1", "go2-2"]
    page.select_option("#robot", "go2-2")
    page.wait_for_url("**/?robot=go2-2")
    page.wait_for_selector("#conn[data-state=open]")
    assert page.locator("#robot").input_value() == "go2-2"
    page.keyboard.down("w")
    wait_for(page, lambda: server.wait_delivered() and len(got["go2-2"]) >= 3, what="go2-2 driven")
    page.keyboard.up("w")
    wait_for(page, lambda: server.wait_delivered() and got["go2-2"][-1].is_zero(), what="go2-2's zero")
    assert got["go2-1"] == []
    assert all(t.linear.x == 0.5 for t in got["go2-2"][:-1])


def test_no_picker_without_robots(bridge_factory: Factory, context: BrowserContext) -> None:
    server, _ = bridge_factory()
    page, _ = open_page(context, server.http_url("/"))
    assert page.locator("#robot-pick").is_hidden()


def test_with_its_websocket_refused_the_pages_stop_latches_its_own_robot_over_http(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, _ = bridge_factory(robots=ROBOTS, max_connections=1)
    with ViewerClient(server.websocket_url()):  # the one connection the station takes
        page = context.new_page()
        page.goto(server.http_url("/?robot=go2-2"))
        page.wait_for_selector("#conn[data-state=closed]")  # the page's upgrade got 503
        page.locator("#stop").click()
        wait_for(page, lambda: "E-stop latched over HTTP (not connected)" in page.inner_text("#notice"), "the notice")
        robots = server.snapshot().robots
        # As STOP over the WebSocket would: this page's robot, not the others.
        latch = robots["go2-2"].estop
        assert latch is not None and latch.reason == "STOP on the browser page" and robots["go2-1"].estop is None


def test_a_stop_over_http_to_a_robot_the_station_does_not_see_says_it_may_not_reach_it(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    require_zenoh()
    # go2-2 has an agent that never comes: the station publishes its stop, but cannot say it was heard.
    server, _ = bridge_factory(**UNSEEN_ROBOT_STATION)
    with ViewerClient(server.websocket_url()):
        page = context.new_page()
        page.goto(server.http_url("/?robot=go2-2"))
        page.wait_for_selector("#conn[data-state=closed]")
        page.keyboard.press("Escape")  # the stop key: POST /stop?robot=go2-2 when not connected
        wait_for(page, lambda: "go2-2 is offline" in page.inner_text("#notice"), "the offline notice")
        notice = page.inner_text("#notice")
        assert "Stop sent over HTTP (not connected), but go2-2 is offline" in notice, notice
        assert "it may not reach it" in notice, notice
        page.locator("#stop").click()  # STOP: the e-stop, latched at the station all the same
        wait_for(page, lambda: "E-stop latched over HTTP" in page.inner_text("#notice"), "the e-stop notice")
        assert "but go2-2 is offline" in page.inner_text("#notice")
        assert server.snapshot().robots["go2-2"].estop is not None

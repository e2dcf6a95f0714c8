"""The page and the token, in real headless Chromium: out of the address bar, into the tab, asked for when missing."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Recorder
from tests.server.web.conftest import open_page, wait_for
from viewer_bridge import RerunWebSocketServer

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
TOKEN = "page-token-0123456789abcdef"


def test_the_token_leaves_the_address_bar_for_the_tabs_session_storage(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, rec = bridge_factory(token=TOKEN)
    page, _ = open_page(context, server.http_url(f"/?renderer=webgl&token={TOKEN}#here"))
    assert page.url == server.http_url("/?renderer=webgl#here")
    assert page.evaluate("sessionStorage.getItem('viewer-bridge-token')") == TOKEN
    assert TOKEN not in page.evaluate("history.state === null ? location.href : JSON.stringify(history.state)")
    page.keyboard.down("w")
    rec.wait_twists(1)
    page.keyboard.up("w")
    wait_for(page, lambda: any(t.is_zero() for t in rec.twists), what="stop")
    # A reload (no token in the URL now) still connects: the tab kept it.
    page.reload()
    page.wait_for_selector("#conn[data-state=open]")
    # Another tab does not have it.
    other = context.new_page()
    other.goto(server.http_url("/"))
    other.wait_for_selector("#conn[data-state=unauthorized]")
    assert other.locator("#token-form").is_visible()


def test_the_page_asks_for_a_missing_token_and_connects_with_it(
    bridge_factory: Factory, context: BrowserContext
) -> None:
    server, _ = bridge_factory(token=TOKEN)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.http_url("/"))
    page.wait_for_selector("#conn[data-state=unauthorized]")
    assert "needs a token" in (page.locator("#token-why").text_content() or "")
    # It asks instead of retrying: no WebSocket attempts, so no failed tokens counted against this machine.
    assert not [u for u in requests if u.startswith("ws")]
    page.fill("#token-input", "not-the-token-0123456789")
    page.click("#token-form button")
    page.wait_for_selector("#token-form:not([hidden])")
    page.wait_for_function("document.getElementById('token-why').textContent.includes('did not accept')")
    page.fill("#token-input", TOKEN)
    page.click("#token-form button")
    page.wait_for_selector("#conn[data-state=open]")
    assert TOKEN not in page.url
    assert server.snapshot().auth_failures == 1  # only the wrong token: without one the page asked nothing


def test_a_view_token_page_is_told_it_cannot_drive(bridge_factory: Factory, context: BrowserContext) -> None:
    server, rec = bridge_factory(tokens={"wall-display": {"role": "view", "secret": TOKEN}})
    page, _ = open_page(context, server.http_url(f"/?token={TOKEN}"))
    page.wait_for_function("document.getElementById('notice').textContent.includes('view role')")
    page.keyboard.down("w")
    page.wait_for_function("document.getElementById('notice').textContent.includes('forbidden')")
    page.keyboard.up("w")
    assert rec.twists == []

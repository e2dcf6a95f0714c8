"""Cross-site request forgery, in real headless Chromium: a page on another site may not stop or clear.

Without a token (the loopback default) the bridge's only defence against a
page on another site is the Origin check: a browser sends a cross-site
``fetch(..., {method: "POST", mode: "no-cors"})`` without asking first, so a
page the operator opened for something else could clear the e-stop. The
attacker here is another web server on this machine (a site on the robot's
own network would do the same; Chromium itself holds back pages from the
public internet that reach for private addresses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Recorder, canned_site, wait_until
from tests.server.test_operator import post
from viewer_bridge import Bool, RerunWebSocketServer, Twist

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]


@pytest.fixture
def other_site() -> Iterator[str]:
    with canned_site() as url:
        yield url + "/"


def test_a_page_on_another_site_cannot_clear_the_estop_or_stop(
    bridge_factory: Factory, context: BrowserContext, other_site: str
) -> None:
    server, rec = bridge_factory()
    # The operator latched the e-stop from their own tools (no Origin: not a browser).
    assert post(server.http_url("/estop"), b'{"reason":"drill"}')[0] == 200
    wait_until(lambda: rec.of("estop") == [Bool(True)], what="the latch on the estop stream")
    page = context.new_page()
    page.goto(other_site)
    for path in ("/estop/clear", "/stop"):
        # The answer is opaque to the page either way; what matters is what the bridge did.
        sent = page.evaluate(
            "url => fetch(url, {method: 'POST', mode: 'no-cors', body: 'x'}).then(() => 'sent', e => String(e))",
            server.http_url(path),
        )
        assert sent == "sent", sent
    wait_until(lambda: server.snapshot().http_refused.get(403, 0) == 2, what="both cross-site POSTs refused")
    assert rec.of("estop") == [Bool(True)] and rec.twists == [Twist.zero()]  # the latch's zero, nothing more
    # The bridge's own page (same origin) still may.
    own = context.new_page()
    own.goto(server.http_url("/"))
    status = own.evaluate("url => fetch(url, {method: 'POST'}).then(r => r.status)", server.http_url("/stop"))
    assert status == 200
    rec.wait_twists(2)

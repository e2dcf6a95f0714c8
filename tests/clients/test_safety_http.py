"""The HTTP safety endpoints' client: URLs, answers and errors, against real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import BridgeFactory, CannedSite, canned_site
from viewer_bridge.clients.client import ClientError
from viewer_bridge.clients.safety_http import HttpRefused, http_url, post_safety


@pytest.mark.parametrize(
    ("ws_url", "path", "expected"),
    [
        ("ws://127.0.0.1:3030/ws", "/stop", "http://127.0.0.1:3030/stop"),
        ("wss://robot.lab:443/viewer/ws?robot=go2-1&token=x#f", "/estop", "https://robot.lab:443/estop?robot=go2-1&token=x"),
        ("ws://[::1]:3030/ws", "/estop/clear", "http://[::1]:3030/estop/clear"),
    ],
)
def test_the_endpoint_is_at_the_root_of_the_bridges_host_and_keeps_the_query(
    ws_url: str, path: str, expected: str
) -> None:
    assert http_url(ws_url, path) == expected


def test_only_websocket_urls_and_safety_paths_are_taken() -> None:
    with pytest.raises(ValueError, match=r"not a WebSocket URL .*'http://h/ws'"):
        http_url("http://h/ws", "/stop")
    with pytest.raises(ValueError, match=r"not a safety endpoint: '/metrics' \(one of /stop, /estop, /estop/clear\)"):
        asyncio.run(post_safety("ws://127.0.0.1:1/ws", "/metrics"))


def test_an_answer_and_a_refusal_from_a_real_bridge(bridge_factory: BridgeFactory) -> None:
    token = "a-long-enough-token-for-tests"
    server, rec = bridge_factory(token=token)
    answer = asyncio.run(post_safety(server.websocket_url(), "/estop", token=token, body={"reason": "drill"}))
    assert answer["estop"]["reason"] == "drill"
    rec.wait_twists(1)
    with pytest.raises(HttpRefused, match=r"/estop/clear\?token=\*+: HTTP 401: missing or wrong token") as caught:
        asyncio.run(post_safety(server.websocket_url() + "?token=wrong", "/estop/clear"))
    assert caught.value.status == 401 and caught.value.reason == "missing or wrong token"


def test_no_answer_is_a_client_error_naming_the_url() -> None:
    with socket.socket() as held:  # bound, never listening
        held.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{held.getsockname()[1]}/ws?token=secret"
        with pytest.raises(ClientError, match=r"POST http://127\.0\.0\.1:\d+/stop\?token=\*+: no answer: .*refused"):
            asyncio.run(post_safety(url, "/stop", timeout=5))


class _Proxy(CannedSite):
    """A proxy in front of where the bridge should be: HTML, 200 for /stop and 502 otherwise."""

    def _reply(self) -> None:
        self.answer = (200 if self.path == "/stop" else 502, b"<html>proxy says hello</html>")
        super()._reply()

    do_POST = _reply  # the base class bound its own _reply


@pytest.fixture
def not_a_bridge() -> Iterator[str]:
    with canned_site(_Proxy) as url:
        yield url.replace("http:", "ws:") + "/ws"


def test_an_answer_that_is_not_the_bridges_is_named(not_a_bridge: str) -> None:
    with pytest.raises(ClientError, match=r"/stop: the answer is not JSON: b'<html>proxy says hello</html>'"):
        asyncio.run(post_safety(not_a_bridge, "/stop"))
    with pytest.raises(HttpRefused, match=r"/estop: HTTP 502: <html>proxy says hello</html>") as caught:
        asyncio.run(post_safety(not_a_bridge, "/estop"))
    assert caught.value.status == 502


class _Redirector(CannedSite):
    """Sends every request elsewhere, as a proxy that moves plain HTTP to HTTPS would; records what it was sent."""

    seen: list[tuple[str, str, str | None]] = []

    def _reply(self) -> None:
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.path.startswith("/landed"):
            super()._reply()
            return
        code = 307 if "estop" in self.path else 301
        self.send_response(code)
        self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/landed?token=secret")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _reply


@pytest.mark.parametrize("path", ["/stop", "/estop"], ids=["301", "307"])
def test_a_redirect_is_reported_not_followed(path: str) -> None:
    # urllib would follow a 301 as a GET without the body, and take the token along to wherever it points.
    _Redirector.seen = []
    refused = r"redirected to http://127\.0\.0\.1:\d+/landed\?token=\*\*\*; not followed"
    with canned_site(_Redirector) as url, pytest.raises(HttpRefused, match=refused):
        asyncio.run(post_safety(url.replace("http:", "ws:") + "/ws", path, token="tok"))
    assert _Redirector.seen == [("POST", path, "Bearer tok")]  # nothing went to /landed

"""The page and its settings: with a token set, nothing that carries configuration is served without it."""

from __future__ import annotations

import json

from tests.conftest import BridgeFactory
from tests.security.conftest import TOKEN, get

RERUN = "rerun+http://robot.internal:9876/proxy"


def test_with_a_token_the_page_carries_no_settings(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(token=TOKEN, rerun_url=RERUN)
    port = server.bound_port or 0
    for path in ("/", "/index.html", "/app.js", "/style.css"):
        reply = get(port, path)
        assert reply.status == 200, path
        assert b"robot.internal" not in reply.body and b"9876" not in reply.body, path
    page = get(port, "/").body.decode()
    assert '<script id="bridge-config" type="application/json">{"auth":true}</script>' in page
    assert get(port, "/config").status == 401
    assert get(port, "/config?token=wrong-token-0123456789").status == 401
    settings = json.loads(get(port, "/config", extra=f"Authorization: Bearer {TOKEN}\r\n").body)
    assert settings["rerunUrl"] == RERUN and settings["wsPath"] == "/ws"
    assert settings["you"] == {"name": None, "role": "drive"}


def test_without_a_token_the_page_carries_its_settings(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(rerun_url=RERUN)
    port = server.bound_port or 0
    assert RERUN.encode() in get(port, "/").body
    assert json.loads(get(port, "/config").body)["rerunUrl"] == RERUN


def test_every_endpoint_with_settings_or_state_needs_the_token(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(token=TOKEN)
    port = server.bound_port or 0
    for path in ("/healthz", "/status", "/metrics", "/config"):
        assert get(port, path).status == 401, path
        assert get(port, f"{path}?token={TOKEN}").status == 200, path

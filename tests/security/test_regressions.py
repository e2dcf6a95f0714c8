"""What already held before this hardening, kept: path traversal refused, tokens compared whole, Origin allow-list."""

from __future__ import annotations

import pytest

from tests.conftest import BridgeFactory
from tests.security.conftest import TOKEN, get, http, upgrade_request


@pytest.mark.parametrize(
    "target",
    ["/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml", "//etc/passwd", "/static/../app.js",
     "/.hidden", "/app.js/..", "/rerun/../../etc/passwd", "/%2e%2e%2f%2e%2e%2fetc%2fpasswd"],
)
def test_path_traversal_is_refused(bridge_factory: BridgeFactory, target: str) -> None:
    server, _ = bridge_factory()
    reply = get(server.bound_port or 0, target)
    assert reply.status == 404, (target, reply)
    assert b"root:" not in reply.body and b"[project]" not in reply.body


def test_only_the_whole_token_is_accepted() -> None:
    from viewer_bridge.core.auth import TokenTable

    table = TokenTable(TOKEN)
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN, TOKEN[:16], "\x00" * len(TOKEN)):
        assert table.match([wrong]) is None, wrong
    assert table.match(["wrong-but-long-enough", TOKEN]) is not None  # any offered candidate may match


@pytest.mark.parametrize(
    ("origin", "status"), [("http://evil.example", 403), ("null", 403), ("http://ops.example", 101)]
)
def test_the_origin_allow_list_still_applies(bridge_factory: BridgeFactory, origin: str, status: int) -> None:
    server, _ = bridge_factory(allowed_origins=["http://ops.example"])
    port = server.bound_port or 0
    reply = http(port, upgrade_request("/ws", f"127.0.0.1:{port}", f"Origin: {origin}\r\n"), head_only=True)
    assert reply.status == status


def test_refusals_come_before_the_upgrade(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(token=TOKEN)
    port = server.bound_port or 0
    assert http(port, upgrade_request("/ws", f"127.0.0.1:{port}")).status == 401
    assert http(port, upgrade_request(f"/ws?token={TOKEN}", f"127.0.0.1:{port}", "Origin: http://evil.example\r\n")
                ).status == 403
    assert rec.twists == [] and server.snapshot().clients == 0
    assert http(port, upgrade_request(f"/ws?token={TOKEN}", f"127.0.0.1:{port}"), head_only=True).status == 101

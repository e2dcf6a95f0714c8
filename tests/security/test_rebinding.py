"""DNS rebinding: a web page that re-points its own name at 127.0.0.1 must get nothing from the bridge.

The attacker's page at ``http://rebind.attacker.example:3030`` has its DNS
name re-pointed at 127.0.0.1; the victim's browser then sends the page's
requests to the bridge with ``Host: rebind.attacker.example:3030`` and a
matching ``Origin``, which the Origin check alone accepts as same-origin.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import BridgeFactory
from tests.security.conftest import Reply, get, http, upgrade_request

REBIND = "rebind.attacker.example"


def test_a_rebound_page_cannot_open_the_websocket_or_drive(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory()
    port = server.bound_port or 0
    host = f"{REBIND}:{port}"
    reply = http(port, upgrade_request("/ws", host, f"Origin: http://{host}\r\n"))
    assert reply.status == 403, reply
    assert "DNS rebinding" in json.loads(reply.body)["reason"]
    # The same request with the bridge's own address is upgraded.
    own = f"127.0.0.1:{port}"
    assert http(port, upgrade_request("/ws", own, f"Origin: http://{own}\r\n"), head_only=True).status == 101
    assert rec.twists == [] and server.snapshot().http_refused[403] == 1


@pytest.mark.parametrize("path", ["/healthz", "/status", "/metrics", "/", "/app.js", "/config"])
def test_a_rebound_page_cannot_read_anything(bridge_factory: BridgeFactory, path: str) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    reply = get(port, path, host=f"{REBIND}:{port}", extra=f"Origin: http://{REBIND}:{port}\r\n")
    assert reply.status == 403, reply
    assert b"rerun" not in reply.body.lower() and b"driver" not in reply.body


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "10.1.2.3", "robot.example", "cam.fleet.example"],
)
def test_addresses_localhost_and_listed_names_are_answered(bridge_factory: BridgeFactory, host: str) -> None:
    server, _ = bridge_factory(allowed_hosts=["robot.example", ".fleet.example"])
    port = server.bound_port or 0
    assert get(port, "/healthz", host=f"{host}:{port}").status == 200
    assert get(port, "/healthz", host=host).status == 200  # no port: still the same name


def test_this_machines_own_name_is_answered(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    name = socket.gethostname()
    assert get(port, "/healthz", host=f"{name}:{port}").status == 200
    assert get(port, "/healthz", host=f"{name.split('.')[0]}.local:{port}").status == 200


@pytest.mark.parametrize("host", ["", "evil.example:abc", "[::1", "[::1]x", "rebind.attacker.example."])
def test_malformed_or_foreign_hosts_are_refused(bridge_factory: BridgeFactory, host: str) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    assert get(port, "/healthz", host=host).status == 403


def test_an_absolute_form_target_is_checked_by_its_own_host(bridge_factory: BridgeFactory) -> None:
    # RFC 9112 section 3.2.2: the target's authority is the host; the Host header is ignored.
    server, rec = bridge_factory()
    port = server.bound_port or 0
    own = f"127.0.0.1:{port}"
    reply = http(port, f"GET http://{REBIND}:{port}/healthz HTTP/1.1\r\nHost: {own}\r\n\r\n")
    assert reply.status == 403 and "DNS rebinding" in json.loads(reply.body)["reason"], reply
    assert http(port, f"GET http://{own}/healthz HTTP/1.1\r\nHost: {REBIND}\r\n\r\n").status == 200
    # The Origin is compared with that host too: a matching Host header does not make a foreign page same-origin.
    evil = "evil.example"
    reply = http(
        port,
        f"POST http://{own}/estop HTTP/1.1\r\nHost: {evil}\r\nOrigin: http://{evil}\r\nContent-Length: 0\r\n\r\n",
    )
    assert reply.status == 403 and "cross-site" in json.loads(reply.body)["reason"], reply
    assert server.server.safety.estop is None and rec.twists == []
    # Still, HTTP/1.1 wants a Host header in every request.
    assert http(port, f"GET http://{own}/healthz HTTP/1.1\r\n\r\n").status == 400


def test_a_request_without_host_is_refused(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    assert http(port, "GET /healthz HTTP/1.1\r\n\r\n").status == 400


def test_allowed_hosts_star_turns_the_check_off(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(allowed_hosts=["*"])
    port = server.bound_port or 0
    assert get(port, "/healthz", host=f"{REBIND}:{port}").status == 200
    assert http(port, upgrade_request("/ws", f"anything.example:{port}"), head_only=True).status == 101


@pytest.mark.parametrize("path", ["/stop", "/estop", "/estop/clear"])
def test_a_page_on_another_site_may_not_stop_latch_or_clear(bridge_factory: BridgeFactory, path: str) -> None:
    server, rec = bridge_factory(allowed_origins=["https://ops.example"])
    port = server.bound_port or 0

    def post(origin: str | None) -> Reply:
        extra = f"Origin: {origin}\r\n" if origin else ""
        return http(port, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}Content-Length: 0\r\n\r\n")

    reply = post("https://evil.example")
    assert reply.status == 403, reply
    assert json.loads(reply.body)["reason"] == (
        f"origin https://evil.example may not {path[1:]}: a cross-site request "
        "(add it to allowed_origins if it is yours)"
    )
    assert rec.twists == [] and rec.of("estop") == []
    assert post(f"http://127.0.0.1:{port}").status == 200  # the bridge's own page
    assert post("https://ops.example").status == 200  # an allowed origin
    assert post(None).status == 200  # no Origin: not a browser (curl, send, a script)
    assert server.snapshot().http_refused[403] == 1

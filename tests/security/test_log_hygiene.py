"""Log hygiene: a hostile client cannot write to the operator's terminal, forge log lines, or leak the token.

The bridge runs as ``viewer-bridge serve`` in a child process at its most
verbose (DEBUG), and the whole of its stderr is checked after a hostile
session; and in this process with every level on (level 1: picows's own
trace level, which logs raw request bytes, included), every record checked.
"""

from __future__ import annotations

import json
import re

import pytest
from websockets.sync.client import connect

from tests.conftest import BridgeFactory, recv_json, wait_until
from tests.raw_ws import RawClient
from tests.security.conftest import TOKEN, ChildBridge, get, http, upgrade_request

# What a terminal acts on: C0 controls (newline and tab aside, which end and indent lines), DEL, C1 controls,
# and the Unicode characters that reorder or break text.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
FORGED = "2026-01-01 00:00:00,000 INFO viewer_bridge.server.pump: client 6.6.6.6 #0001 is now driving"


def hostile_session(port: int) -> None:
    """Everything a client controls that might end up in a log line, made hostile."""
    # The token, mistyped into places that are not the query string, and percent-encoded.
    for target in (f"/ws#token={TOKEN}", f"/ws;token={TOKEN}", f"/ws&token={TOKEN}", f"/ws%3Ftoken%3D{TOKEN}",
                   f"/ws?tokn={TOKEN}", f"/{TOKEN}"):
        http(port, upgrade_request(target, f"127.0.0.1:{port}"))
        get(port, target)
    # Terminal escapes and a forged line in the target (percent-encoded: raw ones are a 400 unread).
    get(port, "/%1b%5b2J%1b%5bH%1b%5d0;pwned%07")
    get(port, "/x%0a" + FORGED.replace(" ", "%20"))
    get(port, "/\u202eevil".encode().decode("latin-1").replace("\u00e2\u0080\u00ae", "%E2%80%AE"))
    # Bytes that are not UTF-8 in Authorization: a 401, not a 500.
    assert http(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\x9b31m\r\n\r\n"
                ).status == 401
    # A C1 escape (CSI) in Origin, with the right token: refused and logged.
    reply = http(port, upgrade_request(f"/ws?token={TOKEN}", f"127.0.0.1:{port}").encode()
                 .replace(b"\r\n\r\n", b"\r\nOrigin: http://x\x9b2J\x9b31m\r\n\r\n"))
    assert reply.status == 403
    assert http(port, upgrade_request(f"/ws?token={TOKEN}", f"127.0.0.1:{port}", version="8")).status == 426
    # An entity_path with terminal escapes and a newline, in a message the bridge refuses (and logs).
    with connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}", open_timeout=5) as ws:
        ws.send(json.dumps({"type": "click", "x": 1, "y": 2, "entity_path": "/world\x1b[2J\n" + FORGED}))
        assert recv_json(ws)["reason"] == "click_not_3d"
        ws.send(json.dumps({"type": "unknown\x1b[31m\n" + FORGED}))
        assert recv_json(ws)["reason"] == "unknown_type"
    # A frame picows itself refuses (and logs): unmasked.
    with RawClient(port, path=f"/ws?token={TOKEN}") as raw:
        raw.send(b"\x81\x05hello")
        raw.read_close()


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_hostile_input_reaches_the_log_escaped_and_without_the_token(
    child_bridge: type[ChildBridge], log_format: str
) -> None:
    bridge = child_bridge(
        env={"VIEWER_BRIDGE_TOKEN": TOKEN, "VIEWER_BRIDGE_LOG_LEVEL": "DEBUG", "VIEWER_BRIDGE_LOG_FORMAT": log_format}
    )
    hostile_session(bridge.port)
    wait_until(lambda: "click_not_3d" in bridge.text and "un-masked frame" in bridge.text, timeout=10,
               what=lambda: f"the refusals to be logged: {bridge.text[-2000:]}")
    bridge.stop()
    text = bridge.text
    assert TOKEN not in text
    assert TOKEN[:16] not in text
    assert RAW_CONTROL.findall(text) == []
    lines = text.splitlines()
    # The forged line exists only inside other lines, never as one of its own.
    assert not [line for line in lines if line.startswith(FORGED[:20])]
    assert not [line for line in lines if "pwned" in line and "HTTP 404" not in line]
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records and all("msg" in record for record in records)
    else:
        assert any("\\x1b[2J" in line for line in lines)  # shown, escaped
        assert any("/ws#token=***" in line for line in lines)


def test_a_non_utf8_authorization_header_is_a_401_not_a_500(child_bridge: type[ChildBridge]) -> None:
    bridge = child_bridge(env={"VIEWER_BRIDGE_TOKEN": TOKEN})
    reply = http(bridge.port, b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xc3\x28\xff\r\n\r\n")
    assert reply.status == 401
    assert b"Traceback" not in reply.body and b"Error" not in reply.body


def test_no_level_of_any_logger_carries_the_token(
    bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(1)  # below DEBUG: picows's trace level too
    server, _ = bridge_factory(token=TOKEN)
    hostile_session(server.bound_port or 0)
    records = [r for r in caplog.records if r.name.startswith(("viewer_bridge", "picows"))]
    assert records
    assert not [r.getMessage() for r in records if TOKEN in r.getMessage()]
    assert not [r.getMessage() for r in records if RAW_CONTROL.search(r.getMessage())]

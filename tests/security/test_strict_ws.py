"""Strict WebSocket and HTTP (RFC 6455, RFC 9112): what a conforming server must refuse, refused.

Frames are written by hand (tests/raw_ws.py); each case says who enforces
it: the bridge's connection core, or picows underneath (see
docs/picows-upstream.md for what picows leaves to its users).
"""

from __future__ import annotations

import socket
import struct

import pytest

from tests.conftest import BridgeFactory, wait_until
from tests.raw_ws import RawClient, frame
from tests.security.conftest import http, upgrade_request
from viewer_bridge import Bool

TEXT, BINARY, CLOSE, PING = 1, 2, 8, 9
CLICK = b'{"type":"click","x":1,"y":2,"z":3}'


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_without_an_extension_fail_the_connection(bridge_factory: BridgeFactory, rsv: int) -> None:
    server, rec = bridge_factory()
    with RawClient(server.bound_port or 0) as raw:
        raw.send(frame(TEXT, CLICK, rsv=rsv))  # RSV1 would be permessage-deflate, which was not negotiated
        assert raw.read_close() == 1002
    assert rec.points == []


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_close_codes_a_peer_may_not_send_fail_the_connection(bridge_factory: BridgeFactory, code: int) -> None:
    server, _ = bridge_factory()
    with RawClient(server.bound_port or 0) as raw:
        raw.send(frame(CLOSE, close_payload(code)))
        assert raw.read_close() == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
def test_valid_close_codes_are_answered_in_kind(bridge_factory: BridgeFactory, code: int) -> None:
    server, _ = bridge_factory()
    with RawClient(server.bound_port or 0) as raw:
        raw.send(frame(CLOSE, close_payload(code)))
        assert raw.read_close() == code


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("a one-byte close payload", frame(CLOSE, b"\x03"), 1002),
        ("a close reason that is not UTF-8", frame(CLOSE, close_payload(1000, b"\xff\xfe")), 1007),
        ("an unmasked frame", b"\x81\x05hello", 1002),
        ("a fragmented ping", frame(PING, b"p", fin=False), 1002),
        ("a ping over 125 bytes", frame(PING, b"p" * 126), 1002),
        ("a reserved opcode", frame(3, b"x"), 1002),
        ("a continuation with nothing to continue", frame(0, b"x"), 1002),
        ("a new message inside a fragmented one", frame(TEXT, b"{", fin=False) + frame(TEXT, b"}"), 1002),
    ],
)
def test_frames_rfc_6455_forbids_fail_the_connection(
    bridge_factory: BridgeFactory, name: str, data: bytes, code: int
) -> None:
    server, rec = bridge_factory()
    with RawClient(server.bound_port or 0) as raw:
        raw.send(data)
        assert raw.read_close() == code, name
    assert rec.points == []


def test_a_valid_connection_still_works_after_all_that(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory()
    with RawClient(server.bound_port or 0) as raw:
        raw.send(frame(TEXT, CLICK[:10], fin=False) + frame(PING, b"hi") + frame(0, CLICK[10:]))
        assert raw.read_until(10) == b"hi"  # the pong, between the fragments
        rec.wait_points(1)


@pytest.mark.parametrize("version", ["8", "12", "14", ""])
def test_other_websocket_versions_get_426_naming_13(bridge_factory: BridgeFactory, version: str) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    reply = http(port, upgrade_request("/ws", f"127.0.0.1:{port}", version=version))
    assert reply.status == 426 and reply.headers["sec-websocket-version"] == "13"


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("a control character in a header value", "X-Note: a\x01b\r\n"),
        ("DEL in a header value", "X-Note: a\x7fb\r\n"),
        ("a space in a header name", "X Note: a\r\n"),
        ("a header line without a colon", "X-Note\r\n"),
        ("a duplicate Host", "Host: evil.example\r\n"),
        ("a key that is not 16 bytes of base64", "Sec-WebSocket-Key: c2hvcnQ=\r\n"),
        ("a key that is not base64", "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n"),
    ],
)
def test_malformed_request_heads_get_400(bridge_factory: BridgeFactory, name: str, head: str) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    request = upgrade_request("/ws", f"127.0.0.1:{port}")
    if head.startswith("Sec-WebSocket-Key"):
        request = request.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", head)
    else:
        request = request.replace("\r\n\r\n", "\r\n" + head + "\r\n")
    assert http(port, request).status == 400, name


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("a raw escape in the target", b"GET /\x1b[2J HTTP/1.1"),
        ("a space too many", b"GET / ws HTTP/1.1"),
        ("HTTP/2 in an HTTP/1 request line", b"GET /ws HTTP/2.0"),
        ("a non-ASCII byte in the target", b"GET /\xff HTTP/1.1"),
    ],
)
def test_malformed_request_lines_get_400(bridge_factory: BridgeFactory, name: str, line: bytes) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    assert http(port, line + b"\r\nHost: 127.0.0.1\r\n\r\n").status == 400, name


def test_an_upgrade_without_connection_upgrade_gets_400(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    request = upgrade_request("/ws", f"127.0.0.1:{port}").replace("Connection: Upgrade\r\n", "Connection: close\r\n")
    assert http(port, request).status == 400


@pytest.mark.parametrize("connection", ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade, keep-alive"])
def test_connection_is_a_list_of_tokens(bridge_factory: BridgeFactory, connection: str) -> None:
    # Firefox sends "Connection: keep-alive, Upgrade" (RFC 9110 section 7.6.1: a list); picows alone refuses it.
    server, _ = bridge_factory()
    port = server.bound_port or 0
    request = upgrade_request("/ws", f"127.0.0.1:{port}").replace("Connection: Upgrade", f"Connection: {connection}")
    assert http(port, request, head_only=True).status == 101


@pytest.mark.parametrize(
    "framing",
    ["Transfer-Encoding: chunked\r\n", "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"],
    ids=["chunked", "chunked-beside-a-content-length"],
)
def test_transfer_encoding_is_refused_even_beside_a_content_length(bridge_factory: BridgeFactory, framing: str) -> None:
    server, rec = bridge_factory()
    port = server.bound_port or 0
    reply = http(port, f"POST /stop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{framing}\r\n0\r\n\r\n")
    assert (reply.status, reply.body) == (400, b"Transfer-Encoding is not supported; send Content-Length\n")
    assert server.snapshot().zeros.get("stop", 0) == 0 and rec.twists == []


def test_expect_100_continue_is_answered_before_the_body_is_sent(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory()
    port = server.bound_port or 0
    body = b'{"reason":"' + b"r" * 150 + b'"}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"POST /estop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):  # curl would wait a second for this before sending the body
            chunk = sock.recv(1)
            assert chunk, interim
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b'"reason":"' + b"r" * 150 in answer, answer
    wait_until(lambda: rec.of("estop") == [Bool(True)], what="the latch")


def test_an_expectation_other_than_100_continue_gets_417(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory()
    port = server.bound_port or 0
    reply = http(port, f"POST /stop HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n")
    assert (reply.status, reply.body) == (417, b"only Expect: 100-continue is understood\n")
    assert server.snapshot().zeros.get("stop", 0) == 0


def test_a_path_that_begins_with_two_slashes_is_that_path_not_a_host(bridge_factory: BridgeFactory) -> None:
    # Read as a URL, "//stop" is a host named "stop" with an empty path, and "//x/ws" reaches /ws.
    server, rec = bridge_factory()
    port = server.bound_port or 0
    host = f"127.0.0.1:{port}"
    reply = http(port, f"POST //stop HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
    assert reply.status == 405 and b"at //stop" in reply.body, reply
    assert http(port, upgrade_request("//x/ws", host), head_only=True).status == 404
    reply = http(port, f"GET //x/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n")
    assert reply.status == 404 and b"nothing at //x/healthz" in reply.body, reply
    assert server.snapshot().zeros.get("stop", 0) == 0 and rec.twists == []
    # The absolute form is still a URL (RFC 9112 section 3.2.2), and an ordinary path works as before.
    reply = http(port, f"POST http://{host}/stop?robot=a HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n")
    assert reply.status == 200, reply
    assert http(port, f"POST /stop?x=1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").status == 200
    assert server.snapshot().zeros.get("stop", 0) == 2


def test_a_head_ended_by_bare_line_feeds_gets_400_at_once(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(handshake_timeout=60)  # a wait for the timeout would fail http()'s 5 s
    port = server.bound_port or 0
    reply = http(port, f"POST /stop HTTP/1.1\nHost: 127.0.0.1:{port}\nContent-Length: 0\n\n")
    assert (reply.status, reply.body) == (400, b"request lines must end with CRLF (RFC 9112 section 2.2)\n")
    assert server.snapshot().zeros.get("stop", 0) == 0

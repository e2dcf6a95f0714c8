"""Pre-authentication exhaustion: idle sockets by the thousand, TLS handshakes that never start, the fd limit.

The bridge runs in a child process whose file-descriptor limit is set with
``resource.setrlimit`` (1024, a common default), so running out of
descriptors is real; the attacker is this process, holding idle sockets that
never send a byte. A viewer (with the token) must still get in, each time
within the 1 s a viewer's connect allows here, and the bridge's log must not
turn into a storm of tracebacks.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

from websockets.sync.client import connect

from tests.conftest import BridgeFactory, wait_until
from tests.security.conftest import TOKEN, ChildBridge, Sockets, Tls, closed_by_peer, get, http

FD_LIMIT = 1024
ATTACK_SOCKETS = 1100


def viewer_gets_in(port: int, attempts: int = 10) -> list[str]:
    """Connect like a viewer ``attempts`` times, each within 1 s; the failures, described."""
    failures = []
    for _ in range(attempts):
        try:
            with connect(f"ws://127.0.0.1:{port}/ws?token={TOKEN}", open_timeout=1.0) as ws:
                ws.send('{"type":"heartbeat"}')
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
    return failures


def landed(bridge: ChildBridge, attacker: Sockets) -> None:
    """Wait until the attack has landed: the bridge holds descriptors up to its limit, or has turned most away."""
    wait_until(lambda: attacker.established(0.05) >= ATTACK_SOCKETS - 100, timeout=20,
               what=lambda: f"the attacker's connections ({attacker.established()} established)")
    wait_until(
        lambda: bridge.open_fds() >= FD_LIMIT - 16 or attacker.answered(0.05) >= ATTACK_SOCKETS - 600,
        timeout=20,
        what=lambda: f"the bridge to take the attack in ({bridge.open_fds()} fds, {attacker.answered()} answered)",
    )


def log_storm(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Traceback" in line or "socket.accept() out of" in line]


def test_idle_sockets_from_one_address_cannot_lock_out_a_viewer(
    child_bridge: type[ChildBridge], attacker: Sockets
) -> None:
    bridge = child_bridge(fd_limit=FD_LIMIT, env={"VIEWER_BRIDGE_TOKEN": TOKEN})
    attacker.open(bridge.port, ATTACK_SOCKETS, ["127.0.0.2"])
    landed(bridge, attacker)
    # Past its 32 pending connections the attacker's address is refused at once: the bridge does not
    # hold a descriptor for each of its sockets, and the viewer finds room.
    assert viewer_gets_in(bridge.port) == []
    assert log_storm(bridge.text) == []
    assert len(bridge.text.splitlines()) < 60, bridge.text


def test_idle_sockets_from_many_addresses_make_room_for_a_viewer(
    child_bridge: type[ChildBridge], attacker: Sockets
) -> None:
    bridge = child_bridge(fd_limit=FD_LIMIT, env={"VIEWER_BRIDGE_TOKEN": TOKEN})
    # 16 from each of 69 addresses: under the per-address cap every time, over the process's limit in all.
    sources = [f"127.0.1.{i}" for i in range(1, 70)]
    attacker.open(bridge.port, ATTACK_SOCKETS, sources)
    landed(bridge, attacker)
    # Past max_pending in all, each new connection pushes out the oldest of the address holding the most.
    assert viewer_gets_in(bridge.port) == []
    assert log_storm(bridge.text) == []
    assert len(bridge.text.splitlines()) < 60, bridge.text


def test_at_the_fd_limit_accept_errors_are_one_warning_with_a_count(
    child_bridge: type[ChildBridge], attacker: Sockets
) -> None:
    # Allowed connections beyond what the descriptors hold, as fast as they come: accept() itself runs out.
    bridge = child_bridge("--max-connections", "4000", "--connect-rate", "0", fd_limit=256)
    with contextlib.ExitStack() as clients:
        for _ in range(300):
            try:
                clients.enter_context(connect(f"ws://127.0.0.1:{bridge.port}/ws", open_timeout=2.0))
            except Exception:
                break
        wait_until(lambda: "Too many open files" in bridge.text, timeout=10, what="accept() to run out of descriptors")
    assert "Traceback" not in bridge.text
    warnings = [line for line in bridge.text.splitlines() if "cannot accept connections" in line]
    assert 1 <= len(warnings) <= 2, warnings
    assert "Too many open files" in warnings[0]
    # Once descriptors are free again, it accepts as before.
    wait_until(lambda: get(bridge.port, "/healthz").status == 200, timeout=10, what="accepting again")


def test_a_tls_socket_that_never_starts_its_handshake_is_closed(bridge_factory: BridgeFactory, tls_files: Tls) -> None:
    server, _ = bridge_factory(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                               handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.bound_port or 0)) as idle:
        assert closed_by_peer(idle, timeout=10), "the bridge held an idle TLS socket past its handshake timeout"


def test_one_timeout_covers_the_tls_handshake_and_the_request(bridge_factory: BridgeFactory, tls_files: Tls) -> None:
    server, _ = bridge_factory(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                               handshake_timeout=1.0)
    raw = socket.create_connection(("127.0.0.1", server.bound_port or 0))
    with tls_files.client.wrap_socket(raw, server_hostname="localhost") as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        assert closed_by_peer(slow, timeout=10)


def test_a_plain_socket_that_sends_nothing_is_closed(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(handshake_timeout=0.5)
    with socket.create_connection(("127.0.0.1", server.bound_port or 0)) as idle:
        assert closed_by_peer(idle, timeout=10)
    # A slowloris that trickles its head is cut at the same bound.
    with socket.create_connection(("127.0.0.1", server.bound_port or 0)) as slow:
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert closed_by_peer(slow, timeout=10)


def test_tls_handshakes_in_progress_count_against_their_address(
    bridge_factory: BridgeFactory, tls_files: Tls, attacker: Sockets
) -> None:
    server, _ = bridge_factory(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                               max_pending_per_address=8)
    port = server.bound_port or 0
    attacker.open(port, 20, ["127.0.0.2"])
    wait_until(lambda: server.snapshot().preauth_dropped.get("per_address", 0) >= 12,
               timeout=10, what="the attacker's sockets past 8 to be dropped")
    # Another address is not affected, and completes its handshake and request.
    assert http(port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", tls=tls_files.client,
                source="127.0.0.3").status == 200


def test_the_tls_handshake_still_works(bridge_factory: BridgeFactory, tls_files: Tls) -> None:
    server, rec = bridge_factory(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key))
    with connect(server.websocket_url(), ssl=tls_files.client, open_timeout=5) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        rec.wait_points(1)
    # A client that does not trust the certificate cannot connect.
    try:
        connect(server.websocket_url(), ssl=ssl.create_default_context(), open_timeout=5)
    except ssl.SSLError:
        pass
    else:
        raise AssertionError("an untrusted certificate was accepted")

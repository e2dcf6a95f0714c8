"""Per-address accounts, sans I/O: pending connections and who is dropped, the failed-token brake, shared budgets."""

from __future__ import annotations

import pytest

from viewer_bridge.core.peers import PeerGuard, peer_of


@pytest.mark.parametrize(
    ("address", "account"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("::ffff:10.0.0.7", "10.0.0.7"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),  # any address in the /64: one host's
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_an_address_is_charged_to_its_account(address: str, account: str) -> None:
    assert peer_of(address) == account


def test_pending_connections_are_capped_per_address() -> None:
    guard = PeerGuard(max_pending_per_peer=2, max_pending=100)
    assert guard.admit("a1", "A").admitted and guard.admit("a2", "A").admitted
    assert not guard.admit("a3", "A").admitted
    assert guard.admit("b1", "B").admitted
    guard.leave("a1")
    assert guard.admit("a4", "A").admitted
    assert guard.refused == 1 and guard.pending == 3


def test_at_the_cap_the_oldest_of_the_heaviest_address_makes_room() -> None:
    guard = PeerGuard(max_pending_per_peer=10, max_pending=4)
    for key, peer in (("v1", "viewer"), ("x1", "X"), ("x2", "X"), ("y1", "Y")):
        assert guard.admit(key, peer).evict is None
    admission = guard.admit("new", "Y")
    assert admission.admitted and admission.evict == "x1"  # X holds the most; x1 is its oldest
    guard.leave("x1")
    assert guard.admit("again", "Z").evict == "y1"  # now Y holds the most (y1, new)
    guard.leave("y1")
    assert guard.pending == 4 and guard.pending_from("viewer") == 1


def test_shed_takes_one_from_each_of_the_heaviest_first() -> None:
    guard = PeerGuard(max_pending_per_peer=10, max_pending=100)
    for i in range(5):
        guard.admit(f"x{i}", "X")
    guard.admit("y0", "Y")
    guard.admit("y1", "Y")
    guard.admit("z0", "Z")
    assert guard.shed(3) == ["x0", "y0", "z0"]


def test_the_brake_needs_n_failures_inside_the_window() -> None:
    guard = PeerGuard(auth_failures=3, auth_window=10.0)
    for t in (0.0, 1.0):
        guard.auth_failed("A", t)
    assert guard.brake("A", 1.5) == 0.0
    guard.auth_failed("A", 2.0)
    assert guard.brake("A", 2.0) == pytest.approx(8.0)  # until the first failure is 10 s old
    assert guard.brake("B", 2.0) == 0.0
    assert guard.brake("A", 10.0) == 0.0
    # Failures spread wider than the window never brake.
    guard.auth_failed("C", 0.0)
    guard.auth_failed("C", 11.0)
    guard.auth_failed("C", 22.0)
    assert guard.brake("C", 22.0) == 0.0


def test_an_address_shares_one_bucket_which_outlives_its_connections_until_full() -> None:
    guard = PeerGuard(host_rate=10.0, host_burst=5.0)
    first, second = guard.bucket("A", 0.0), guard.bucket("A", 0.0)
    assert first is second and guard.bucket("B", 0.0) is not first
    for _ in range(5):
        assert first is not None and first.allow(0.0)
    guard.release("A")
    guard.release("A")
    again = guard.bucket("A", 0.1)
    assert again is first and not again.allow(0.0)  # reconnecting bought no new burst


def test_no_bucket_when_the_host_limit_is_off() -> None:
    assert PeerGuard(host_rate=0.0).bucket("A", 0.0) is None

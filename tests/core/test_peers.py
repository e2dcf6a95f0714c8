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


def test_new_connections_spend_their_address_budget_and_a_refusal_says_how_long_to_wait() -> None:
    guard = PeerGuard(connect_rate=10.0, connect_burst=3.0)
    assert [guard.connect("A", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert guard.connect("A", 0.0) == pytest.approx(0.1)  # one token takes 1/10 s
    assert guard.connect("A", 0.04) == pytest.approx(0.06)
    assert guard.connect("B", 0.04) == 0.0  # another address has a budget of its own
    # A refused attempt spent nothing: the token is there exactly when the refusal said.
    assert guard.connect("A", 0.0999) > 0.0
    assert guard.connect("A", 0.1) == 0.0
    assert guard.connect("A", 0.1) > 0.0
    assert guard.throttled == 4


def test_the_connection_budget_refills_to_its_burst_and_no_further() -> None:
    guard = PeerGuard(connect_rate=10.0, connect_burst=2.0)
    for _ in range(2):
        assert guard.connect("A", 0.0) == 0.0
    # An hour idle buys the burst back, not 36000 connections.
    assert [guard.connect("A", 3600.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert guard.connect("A", 3600.0) == pytest.approx(0.1)


def test_no_connection_budget_when_the_rate_is_off() -> None:
    guard = PeerGuard(connect_rate=0.0)
    assert all(guard.connect("A", 0.0) == 0.0 for _ in range(10_000))
    assert guard.throttled == 0


@pytest.mark.parametrize(
    ("rate", "burst", "named"),
    [(-1.0, 5.0, "connect_rate"), (float("nan"), 5.0, "connect_rate"), (float("inf"), 5.0, "connect_rate"),
     (10.0, 0.5, "connect_burst"), (10.0, float("inf"), "connect_burst")],
)
def test_a_bad_connection_budget_is_refused_with_its_value(rate: float, burst: float, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PeerGuard(connect_rate=rate, connect_burst=burst)


def test_connection_budgets_stay_bounded_over_many_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    import viewer_bridge.core.peers as peers

    monkeypatch.setattr(peers, "_MAX_TRACKED", 4)
    guard = PeerGuard(connect_rate=1.0, connect_burst=2.0)
    for i in range(4):
        guard.connect(f"10.0.0.{i}", 0.0)
    guard.connect("10.0.0.0", 0.0)  # the first address has spent its burst
    # Full: at 0.5 s the three others are not yet full again, so the longest-known goes.
    guard.connect("10.0.0.9", 0.5)
    assert list(guard._connects) == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]
    # At 10 s every bucket is full: all are forgotten before a new one is made, and nothing changes
    # for the forgotten (a new bucket is as full as theirs).
    guard.connect("10.0.0.10", 10.0)
    assert len(guard._connects) == 1
    assert [guard.connect("10.0.0.0", 10.0) for _ in range(2)] == [0.0, 0.0]

"""What one remote address may cost the bridge, sans I/O: new connections, pre-auth ones, failed tokens, messages.

The per-connection limits (:mod:`viewer_bridge.core.connection`) bound what
one socket can do; an attacker simply opens more. :class:`PeerGuard` keeps
the accounts per remote address, with the clock passed in:

* **New connections**: one token bucket per address (``connect_rate`` per
  second, ``connect_burst`` deep), spent by each request a connection makes.
  Past it the request is refused before anything else about it is looked
  at: a client stuck in a reconnect loop, or a handshake storm, gets
  ``connect_rate`` sessions a second out of the bridge, and each refusal
  costs about half of what a handshake and its session would (accepting
  and closing the socket is most of what is left). Refused attempts spend
  nothing, so a client that backs off gets in as soon as the bucket allows.
  (The server never asks for an e-stop: stopping must not depend on it.)
* **Connections that have not authenticated yet** (from accept until the
  request is upgraded, or its answer is written): at most
  ``max_pending_per_peer`` per address, the rest refused at once; and at
  most ``max_pending`` in all, which the server sets below its file
  descriptor limit. Past that a new connection still gets in, and the
  oldest pending connection of the address holding the most is dropped: an
  attacker holding thousands of idle sockets pushes out its own, never a
  viewer whose request is in flight, and the process never runs out of
  descriptors to accept with.
* **Failed tokens**: after ``auth_failures`` wrong or missing tokens from
  one address within ``auth_window`` seconds, requests from it that need a
  token are answered 429 without comparing anything, until the oldest of
  those failures leaves the window.
* **Messages**: one token bucket per address (``host_rate`` per second,
  ``host_burst`` deep) shared by all of that address's connections, so six
  connections from one machine get one machine's budget, not six.

An IPv6 address is accounted by its /64 (one host usually owns a whole /64
and can pick any address in it); an IPv4-mapped IPv6 address as its IPv4
address.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

from viewer_bridge.core.ratelimit import TokenBucket

__all__ = ["Admission", "PeerGuard", "peer_of"]

# Past this many addresses with failures (or connection budgets) on record, the stale ones are
# forgotten (and if none are stale, the oldest): the accounts must not grow without bound.
_MAX_TRACKED: Final = 65536
# Shared message buckets no connection uses any more are dropped, once full again, past this many.
_PRUNE_AT: Final = 256


# Every connection's address is looked up more than once (at accept, at its request), and a storm
# comes from few addresses; ipaddress's parsing is most of the cost of a refusal without this.
@functools.lru_cache(maxsize=4096)
def peer_of(address: str) -> str:
    """The account an address is charged to: itself for IPv4, its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class Admission:
    """``admit``'s answer: whether the connection may stay, and a connection to drop to make room."""

    admitted: bool
    evict: Hashable | None = None


_REFUSED: Final = Admission(False)
_ADMITTED: Final = Admission(True)


class PeerGuard:
    """Per-address accounts for one server. Every method takes ``now`` (seconds, monotonic)."""

    def __init__(
        self,
        *,
        max_pending_per_peer: int = 32,
        max_pending: int = 512,
        auth_failures: int = 10,
        auth_window: float = 60.0,
        host_rate: float = 0.0,
        host_burst: float = 1.0,
        connect_rate: float = 0.0,
        connect_burst: float = 1.0,
    ) -> None:
        if max_pending_per_peer < 1 or max_pending < 1:
            raise ValueError("max_pending_per_peer and max_pending must be >= 1")
        if auth_failures < 1 or not (math.isfinite(auth_window) and auth_window > 0):
            raise ValueError("auth_failures must be >= 1 and auth_window a finite number > 0")
        if not (math.isfinite(connect_rate) and connect_rate >= 0):
            raise ValueError(f"connect_rate must be a finite number >= 0, got {connect_rate!r}")
        if not (math.isfinite(connect_burst) and connect_burst >= 1):
            raise ValueError(f"connect_burst must be a finite number >= 1, got {connect_burst!r}")
        self.max_pending_per_peer = max_pending_per_peer
        self.max_pending = max_pending
        self.auth_failures = auth_failures
        self.auth_window = auth_window
        self.host_rate = host_rate
        self.host_burst = host_burst
        self.connect_rate = connect_rate
        self.connect_burst = connect_burst
        # Pending connections by peer, oldest first; and peers by how many they hold,
        # so the heaviest is found without a scan (an attack may spread over thousands of addresses).
        self._pending: dict[str, dict[Hashable, None]] = {}
        self._peer_of_key: dict[Hashable, str] = {}
        self._by_count: dict[int, dict[str, None]] = {}
        self._heaviest = 0
        self._failures: dict[str, deque[float]] = {}
        self._buckets: dict[str, _Shared] = {}
        self._connects: dict[str, TokenBucket] = {}
        # Counters for metrics and logs.
        self.refused = 0
        self.evicted = 0
        self.failed = 0
        self.braked = 0
        self.throttled = 0

    # -- new connections ----------------------------------------------------------

    def connect(self, peer: str, now: float) -> float:
        """A connection from ``peer`` made its request: 0.0 if its budget allows it (one token spent).

        Otherwise the seconds until it would, and nothing is spent. Always 0.0
        when the limit is off (``connect_rate`` 0).
        """
        if self.connect_rate <= 0:
            return 0.0
        bucket = self._connects.get(peer)
        if bucket is None:
            if len(self._connects) >= _MAX_TRACKED:
                self._forget_connects(now)
            bucket = self._connects[peer] = TokenBucket(self.connect_rate, self.connect_burst, now)
        if bucket.allow(now):
            return 0.0
        self.throttled += 1
        return bucket.time_until(1.0, now)

    def _forget_connects(self, now: float) -> None:
        # A full bucket is what a new one would be: forgetting it changes nothing for its address.
        full = [peer for peer, bucket in self._connects.items() if bucket.level(now) >= bucket.burst]
        for peer in full:
            del self._connects[peer]
        # Past that, the longest-known addresses start again with a full burst: memory stays bounded.
        while len(self._connects) >= _MAX_TRACKED:
            del self._connects[next(iter(self._connects))]

    # -- connections that have not authenticated ------------------------------

    @property
    def pending(self) -> int:
        return len(self._peer_of_key)

    def pending_from(self, peer: str) -> int:
        return len(self._pending.get(peer, ()))

    def admit(self, key: Hashable, peer: str) -> Admission:
        """A connection ``key`` from ``peer`` was accepted. Refused if its peer holds too many already.

        When the server is at ``max_pending``, the answer names the pending
        connection to drop: the oldest of the peer holding the most.
        """
        held = self._pending.get(peer)
        count = len(held) if held is not None else 0
        if count >= self.max_pending_per_peer:
            self.refused += 1
            return _REFUSED
        evict = None
        if len(self._peer_of_key) >= self.max_pending:
            heaviest = next(iter(self._by_count[self._heaviest]))
            evict = next(iter(self._pending[heaviest]))
            self.evicted += 1
        if held is None:
            held = self._pending[peer] = {}
        held[key] = None
        self._peer_of_key[key] = peer
        self._move(peer, count, count + 1)
        return _ADMITTED if evict is None else Admission(True, evict)

    def shed(self, n: int) -> list[Hashable]:
        """Up to ``n`` pending connections to drop now (the oldest of the heaviest peers), e.g. at the fd limit."""
        victims: list[Hashable] = []
        seen: set[Hashable] = set()
        # Walk without removing: the caller drops them, and each drop calls leave().
        for count in range(self._heaviest, 0, -1):
            for peer in self._by_count.get(count, {}):
                for key in self._pending[peer]:
                    if key not in seen:
                        victims.append(key)
                        seen.add(key)
                        break
                if len(victims) >= n:
                    return victims
        return victims

    def leave(self, key: Hashable) -> None:
        """Connection ``key`` authenticated, was answered, or closed: it no longer counts as pending."""
        peer = self._peer_of_key.pop(key, None)
        if peer is None:
            return
        held = self._pending[peer]
        count = len(held)
        del held[key]
        if not held:
            del self._pending[peer]
        self._move(peer, count, count - 1)

    def _move(self, peer: str, old: int, new: int) -> None:
        if old:
            peers = self._by_count[old]
            del peers[peer]
            if not peers:
                del self._by_count[old]
        if new:
            self._by_count.setdefault(new, {})[peer] = None
            if new > self._heaviest:
                self._heaviest = new
        while self._heaviest and self._heaviest not in self._by_count:
            self._heaviest -= 1

    # -- failed tokens ----------------------------------------------------------

    def brake(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before its token is looked at again (0: not braked)."""
        times = self._failures.get(peer)
        if times is None or len(times) < self.auth_failures:
            return 0.0
        wait = times[0] + self.auth_window - now
        if wait <= 0:
            return 0.0
        self.braked += 1
        return wait

    def auth_failed(self, peer: str, now: float) -> None:
        """``peer`` presented a wrong token, or none where one is needed."""
        self.failed += 1
        times = self._failures.get(peer)
        if times is None:
            if len(self._failures) >= _MAX_TRACKED:
                self._forget_failures(now)
            times = self._failures[peer] = deque(maxlen=self.auth_failures)
        times.append(now)

    def _forget_failures(self, now: float) -> None:
        stale = [peer for peer, times in self._failures.items() if not times or times[-1] + self.auth_window <= now]
        for peer in stale:
            del self._failures[peer]
        while len(self._failures) >= _MAX_TRACKED:
            del self._failures[next(iter(self._failures))]

    # -- messages -------------------------------------------------------------------

    def bucket(self, peer: str, now: float) -> TokenBucket | None:
        """The message bucket ``peer``'s connections share (None when the per-host limit is off).

        Each call takes a reference; :meth:`release` gives it back when the
        connection ends. A bucket outlives its last connection until it has
        refilled, so closing and reconnecting does not buy a fresh burst.
        """
        if self.host_rate <= 0:
            return None
        entry = self._buckets.get(peer)
        if entry is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            entry = self._buckets[peer] = _Shared(TokenBucket(self.host_rate, self.host_burst, now))
        entry.refs += 1
        return entry.bucket

    def release(self, peer: str) -> None:
        entry = self._buckets.get(peer)
        if entry is not None and entry.refs > 0:
            entry.refs -= 1

    def _prune(self, now: float) -> None:
        idle = [
            peer
            for peer, entry in self._buckets.items()
            if entry.refs == 0 and entry.bucket.level(now) >= entry.bucket.burst
        ]
        for peer in idle:
            del self._buckets[peer]


class _Shared:
    __slots__ = ("bucket", "refs")

    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket
        self.refs = 0

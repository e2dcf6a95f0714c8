"""Interop with the real ``dimos-viewer`` (0.32.0a3) under Xvfb, driven by xdotool.

One Xvfb and one viewer serve the whole module (launching the viewer is the
slow part); each test gets a fresh :class:`Recorder` on the current bridge and
asserts the EXACT sequence of published messages.

How absence is proven without sleeping: the viewer runs with
``DIMOS_DEBUG=1`` and logs every twist and stop it sends. After an action a
test polls the bridge's ``/metrics`` (with a deadline) until its frame
counters have caught up with what the viewer logged. The bridge counts a
frame and publishes what it causes in one synchronous callback on its event
loop, and answers HTTP on that same loop, so a scrape showing a frame counted
was answered after everything that frame causes had been published.
``/healthz`` then reporting ``driver: null`` means no deadman or republish
timer is armed either, so nothing more can be published until the viewer
sends another frame: the recorded sequence is complete. Only the bridge's
public HTTP endpoints and streams are read, never its internals.

Timing is never asserted here (the 100 ms disconnect budget belongs to the
benchmark); the kill test records the latency it saw as a test property.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from tests.conftest import Recorder, require, wait_until
from tests.interop.viewer_harness import DimosViewer, XvfbDisplay, missing_tools
from viewer_bridge import BindError, Bool, PointStamped, RerunWebSocketServer, Twist, Vector3
from viewer_bridge.clients.client import ViewerClient

# The group keeps this module on one worker under ``--dist loadgroup``, so one
# viewer serves it all. NOTE: with pytest 9.2 + pytest-xdist 3.8 the mark has no
# effect (pytest-dev/pytest-xdist#1386: xdist still sets the old ``_nodeid``);
# the tests are written to pass anyway when split across workers: each worker
# then runs its own Xvfb, viewer and bridge.
pytestmark = [pytest.mark.viewer, pytest.mark.xdist_group("viewer")]

T = TypeVar("T")

ZERO = Twist.zero()


def _twist(linear_x: float = 0.0, angular_z: float = 0.0) -> Twist:
    return Twist(Vector3(linear_x, 0.0, 0.0), Vector3(0.0, 0.0, angular_z))


# What the viewer sends for each key (its defaults: 0.5 m/s, 0.8 rad/s, Shift doubles).
FORWARD = _twist(linear_x=0.5)
BACKWARD = _twist(linear_x=-0.5)
LEFT = _twist(angular_z=0.8)
RIGHT = _twist(angular_z=-0.8)
FAST_FORWARD = _twist(linear_x=1.0)
FORWARD_LEFT = _twist(linear_x=0.5, angular_z=0.8)

# Generous deadlines: rendering is software-only on 2 shared cores.
ACTION_TIMEOUT = 10.0
RECONNECT_TIMEOUT = 20.0
DEADMAN_TIMEOUT = 60.0


def wait_for(predicate: Callable[[], T | None], timeout: float, what: Callable[[], str], interval: float = 0.005) -> T:
    """Poll ``predicate`` until truthy; on timeout fail with ``what()`` (evaluated then, with fresh state)."""
    result: T = wait_until(predicate, timeout, interval, what)
    return result


def start_bridge(port: int = 0, timeout: float = 10.0) -> tuple[RerunWebSocketServer, Recorder]:
    """A bridge on ``port`` with a recorder subscribed before it accepts anyone.

    Its deadman is longer than any wait here: the viewer sends a twist per
    redrawn frame, and on a loaded machine frames can be over a second apart,
    which would make the (correct) deadman on silence fire mid-hold and turn
    the exact sequences below into a race. The deadman on silence is tested
    with a fake clock in tests/core/test_safety.py; the deadman on disconnect,
    which these tests do check, does not depend on it.

    Its link limits are stretched the same way: the viewer answers the
    bridge's round-trip pings between frames, so on a loaded machine its
    measured round trip can pass the default full-speed bound and the
    (correct) speed factor would scale a held key's 0.5 m/s to some other
    value mid-sequence. The curve itself is tested with a fake clock in
    tests/core/test_link.py and through a delaying proxy in
    tests/server/test_link_limits.py.

    Re-binding a port that was just closed is retried for a bounded time
    (a listener being torn down can hold it for a moment).
    """
    server = RerunWebSocketServer(
        port=port,
        deadman_timeout=DEADMAN_TIMEOUT,
        link_full_speed_rtt=DEADMAN_TIMEOUT / 4,
        link_slow_rtt=DEADMAN_TIMEOUT / 2,
        link_max_rtt=DEADMAN_TIMEOUT,
    )
    recorder = Recorder(server)

    def started() -> bool:
        try:
            server.start()
        except BindError:
            if port == 0:
                raise
            return False
        return True

    try:
        wait_until(started, timeout, 0.05, f"port {port} to be free again")
    except AssertionError:
        server.start()  # raises the BindError that names the address
    return server, recorder


def healthz(server: RerunWebSocketServer) -> dict[str, Any]:
    """GET /healthz (answered on the bridge's event loop)."""
    with urllib.request.urlopen(server.http_url("/healthz"), timeout=5) as response:
        result: dict[str, Any] = json.load(response)
    return result


_SAMPLE = re.compile(r'^(viewer_bridge_frames_total|viewer_bridge_zero_twists_total)\{\w+="(\w+)"\} (\S+)$', re.M)
FRAME_TYPES = ("twist", "stop", "click")


@dataclass
class Counts:
    """Frame counters by type and zero-twist counters by cause, from one ``/metrics`` scrape."""

    frames: dict[str, int]
    zeros: dict[str, int]


def scrape(server: RerunWebSocketServer) -> Counts:
    """GET /metrics: a round trip through the bridge's event loop (see the module docstring)."""
    with urllib.request.urlopen(server.http_url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    counts = Counts(dict.fromkeys(FRAME_TYPES, 0), {})
    for name, label, value in _SAMPLE.findall(text):
        (counts.frames if name == "viewer_bridge_frames_total" else counts.zeros)[label] = int(float(value))
    return counts


@dataclass
class Checkpoint:
    """What the viewer had logged as sent, and the bridge had counted, at one moment."""

    sent: dict[str, int]
    counts: Counts


class ViewerSession:
    """The module's display, current bridge and viewer. The bridge may be replaced
    (reconnect test) and the viewer relaunched (after the kill test)."""

    def __init__(self, display: XvfbDisplay) -> None:
        self.display = display
        self.bridge, _ = start_bridge()
        self.viewer: DimosViewer | None = None
        self.last_click: tuple[int, int] | None = None

    def ensure_viewer(self) -> DimosViewer:
        """The running viewer, connected to the current bridge (relaunched if it died)."""
        if self.viewer is not None and not self.viewer.is_running():
            self.viewer.stop()
            self.viewer = None
        if self.viewer is None:
            self.viewer = DimosViewer(self.display, self.bridge.websocket_url()).start()
            self.last_click = None
        viewer = self.viewer
        wait_for(
            lambda: healthz(self.bridge)["clients"] == 1,
            RECONNECT_TIMEOUT,
            lambda: f"the viewer to be connected to {self.bridge}{tail(viewer)}",
            interval=0.05,
        )
        return viewer

    def close(self) -> None:
        try:
            if self.viewer is not None:
                self.viewer.stop()
        finally:
            self.bridge.stop()


def tail(viewer: DimosViewer) -> str:
    return f"\n--- viewer log tail ---\n{viewer.log_text()[-2000:]}"


class Ctx:
    """One test's view: the viewer, a bridge, and a recorder fresh for this test."""

    def __init__(self, viewer: DimosViewer, bridge: RerunWebSocketServer, recorder: Recorder) -> None:
        self.viewer = viewer
        self.bridge = bridge
        self.rec = recorder

    def items(self) -> list[tuple[str, Any]]:
        return [(stream, message) for stream, message, _ in list(self.rec.items)]

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.viewer.published(), scrape(self.bridge))

    def settle(self, since: Checkpoint, *, stops: int, clicks: int = 0) -> dict[str, Any]:
        """Wait until the bridge has handled every frame the viewer logged as sent
        since ``since`` (at least ``stops`` stops and ``clicks`` clicks; clicks
        are not logged by the viewer). Returns ``/healthz`` from after that."""
        seen: list[object] = []

        def caught_up() -> bool:
            # The viewer's log first: the scrape after it has then counted at
            # least what the log shows, so equality means nothing is in flight.
            logged = self.viewer.published()
            frames = scrape(self.bridge).frames
            sent = {k: logged[k] - since.sent[k] for k in ("twist", "stop")}
            got = {k: frames[k] - since.counts.frames[k] for k in FRAME_TYPES}
            seen[:] = [sent, got]
            return (
                sent["stop"] >= stops
                and got["click"] >= clicks
                and got["twist"] == sent["twist"]
                and got["stop"] == sent["stop"]
            )

        wait_for(
            caught_up,
            ACTION_TIMEOUT,
            lambda: (
                f"the bridge to handle what the viewer sent (viewer logged, bridge counted: {seen}; "
                f"recorded {self.items()}){tail(self.viewer)}"
            ),
            interval=0.02,
        )
        return healthz(self.bridge)

    def timeline(self) -> list[tuple[str, Any, float]]:
        """Everything recorded, with arrival times relative to the first message."""
        items = list(self.rec.items)
        t0 = items[0][2] if items else 0.0
        return [(stream, message, round(t - t0, 3)) for stream, message, t in items]

    def zeros_since(self, since: Checkpoint) -> dict[str, int]:
        """Zero twists the bridge published since ``since``, by cause (from ``/metrics``)."""
        before = since.counts.zeros
        return {k: n - before.get(k, 0) for k, n in scrape(self.bridge).zeros.items() if n != before.get(k, 0)}

    def drive(self, keys: tuple[str, ...], until: Callable[[list[Twist]], bool]) -> list[tuple[str, Any]]:
        """Engage teleop, hold ``keys`` until ``until(twists so far)``, release, and
        return everything published once the bridge has settled."""
        self.viewer.engage_teleop()
        since = self.checkpoint()
        self.viewer.key_down(*keys)
        try:
            wait_for(
                lambda: until(self.rec.twists),
                ACTION_TIMEOUT,
                lambda: f"twists while holding {'+'.join(keys)} (recorded {self.items()}){tail(self.viewer)}",
            )
        finally:
            self.viewer.key_up(*reversed(keys))
        health = self.settle(since, stops=1)
        assert health["driver"] is None, f"still driving after the release: {health}"
        assert self.zeros_since(since) == {"stop": 1}, f"the zero must come from the viewer's stop: {self.timeline()}"
        return self.items()


def assert_one_drive(items: list[tuple[str, Any]], allowed: set[Twist], required: Twist) -> None:
    """stop_movement(True) once first, then non-zero twists (each one of ``allowed``,
    ``required`` among them), then exactly one zero twist, and nothing else."""
    assert items, "nothing was published"
    assert items[0] == ("stop_movement", Bool(True)), items
    assert [stream for stream, _ in items].count("stop_movement") == 1, items
    rest = items[1:]
    assert all(stream == "tele_cmd_vel" for stream, _ in rest), items
    twists = [message for _, message in rest]
    assert all(type(t) is Twist for t in twists), twists
    assert len(twists) >= 2, f"expected twists then one zero, got {twists}"
    assert twists[-1] == ZERO, f"the drive must end with a zero twist: {twists}"
    moving = twists[:-1]
    assert ZERO not in moving, f"exactly one zero twist, at the end: {twists}"
    assert set(moving) <= allowed, f"unexpected twists {set(moving) - allowed} in {twists}"
    assert required in moving, f"no {required} in {twists}"


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session() -> Iterator[ViewerSession]:
    require(missing_tools() is None, missing_tools() or "")
    with XvfbDisplay() as display:
        viewer_session = ViewerSession(display)
        try:
            viewer_session.ensure_viewer()
            yield viewer_session
        finally:
            viewer_session.close()


@pytest.fixture
def ctx(session: ViewerSession) -> Ctx:
    viewer = session.ensure_viewer()
    return Ctx(viewer, session.bridge, Recorder(session.bridge))


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (("w",), FORWARD),
        (("s",), BACKWARD),
        (("a",), LEFT),
        (("d",), RIGHT),
        (("shift", "w"), FAST_FORWARD),
    ],
    ids=["w", "s", "a", "d", "shift+w"],
)
def test_key_publishes_exact_twists_then_one_zero(ctx: Ctx, keys: tuple[str, ...], expected: Twist) -> None:
    items = ctx.drive(keys, until=lambda twists: len(twists) >= 2)
    assert_one_drive(items, allowed={expected}, required=expected)


def test_w_and_a_combine(ctx: Ctx) -> None:
    # xdotool presses the keys one after the other: a frame drawn in between
    # (or between the releases) may carry just one of them.
    items = ctx.drive(("w", "a"), until=lambda twists: FORWARD_LEFT in twists)
    assert_one_drive(items, allowed={FORWARD_LEFT, FORWARD, LEFT}, required=FORWARD_LEFT)


def test_click_publishes_point_on_the_surface(ctx: Ctx, session: ViewerSession) -> None:
    # With teleop engaged the click also disengages it, and the viewer may
    # send a stop first (it did after a drive, not on a fresh viewer); every
    # explicit stop acts, so such a stop publishes exactly one zero.
    ctx.viewer.engage_teleop()
    since = ctx.checkpoint()
    x, y = ctx.viewer.find_cloud_pixel()
    if (x, y) == session.last_click:
        x += 3  # the viewer ignores a click on the point it picked last time
    before = time.time()
    ctx.viewer.click_at(x, y)
    session.last_click = (x, y)
    health = ctx.settle(since, stops=0, clicks=1)
    after = time.time()
    assert health["driver"] is None
    items = ctx.items()
    stops = ctx.viewer.published()["stop"] - since.sent["stop"]
    assert [stream for stream, _ in items] == ["tele_cmd_vel"] * stops + ["clicked_point"], items
    assert all(message == Twist.zero() for _, message in items[:stops]), items
    point = items[-1][1]
    assert type(point) is PointStamped
    assert point.frame_id == "world"
    # The view centre hits the grid (z = 0) at the origin; the viewer picks
    # the drawn sphere's surface, up to the point radius (0.03) above it.
    assert abs(point.x) < 0.1 and abs(point.y) < 0.1, point
    assert 0.0 <= point.z <= 0.05, point
    # ts is the viewer's wall clock at the click, in whole milliseconds.
    assert before - 1.0 <= point.ts <= after + 1.0, (before, point.ts, after)


@pytest.mark.hands_over_bridge  # the new bridge becomes the module session's, stopped at its end
def test_viewer_reconnects_to_a_bridge_restarted_on_the_same_port(session: ViewerSession) -> None:
    viewer = session.ensure_viewer()
    old = session.bridge
    port = old.bound_port
    assert port is not None
    old_recorder = Recorder(old)
    connections = viewer.connections()
    old.stop()
    assert old_recorder.items == [], "stopping a bridge nobody drives must publish nothing"

    session.bridge, recorder = start_bridge(port)
    new = session.bridge
    assert new.bound_port == port
    wait_for(
        lambda: viewer.connections() > connections and healthz(new)["clients"] == 1,
        RECONNECT_TIMEOUT,
        lambda: f"the viewer to reconnect to port {port} by itself{tail(viewer)}",
        interval=0.05,
    )
    assert viewer.is_running()
    items = Ctx(viewer, new, recorder).drive(("w",), until=lambda twists: len(twists) >= 2)
    assert_one_drive(items, allowed={FORWARD}, required=FORWARD)


def test_viewer_killed_while_driving_gets_one_zero(
    ctx: Ctx, session: ViewerSession, record_property: Callable[[str, object], None]
) -> None:
    ctx.viewer.engage_teleop()
    since = ctx.checkpoint()
    ctx.viewer.key_down("w")
    try:
        ctx.rec.wait_twists(1, timeout=ACTION_TIMEOUT)
        killed_at = ctx.viewer.kill()  # SIGKILL: no close frame, no stop
        zero_at = wait_for(
            lambda: next((t for s, m, t in list(ctx.rec.items) if s == "tele_cmd_vel" and m == ZERO), None),
            ACTION_TIMEOUT,
            lambda: f"a zero twist after killing the viewer (recorded {ctx.items()})",
        )
    finally:
        ctx.viewer.key_up("w")  # the X server still holds it down otherwise
        ctx.viewer.stop()  # reap; the next test that needs a viewer launches one
    latency = zero_at - killed_at
    record_property("disconnect_zero_latency_ms", round(latency * 1000, 1))
    print(f"zero twist {latency * 1000:.1f} ms after SIGKILL of the viewer")

    health = healthz(ctx.bridge)
    assert health["clients"] == 0 and health["driver"] is None, health
    assert ctx.zeros_since(since) == {"disconnect": 1}, "the zero must come from the disconnect"
    assert_one_drive(ctx.items(), allowed={FORWARD}, required=FORWARD)


# --------------------------------------------------------------------------
# Operator control with the real viewer: the lasting stop, the e-stop, status frames
# --------------------------------------------------------------------------

_METRIC = re.compile(r'^(viewer_bridge_rejects_total\{reason="(\w+)"\}|viewer_bridge_status_frames_total) (\S+)$', re.M)


def rejects_and_status_frames(server: RerunWebSocketServer) -> tuple[dict[str, int], int]:
    """Refusals by reason, and status frames sent, from one ``/metrics`` scrape."""
    with urllib.request.urlopen(server.http_url("/metrics"), timeout=5) as response:
        text = response.read().decode()
    rejects: dict[str, int] = {}
    frames = 0
    for _, reason, value in _METRIC.findall(text):
        if reason:
            rejects[reason] = int(float(value))
        else:
            frames = int(float(value))
    return rejects, frames


def refused(server: RerunWebSocketServer, reason: str) -> int:
    return rejects_and_status_frames(server)[0].get(reason, 0)


def wait_caught_up(ctx: Ctx, since: Checkpoint, *, stops: int = 1, other_stops: int = 0) -> dict[str, Any]:
    """Wait until the viewer has logged at least ``stops`` stops since ``since`` and the bridge has
    counted every twist and stop it logged (plus ``other_stops`` stops from other clients); returns
    ``/healthz`` from after that."""
    seen: list[object] = []

    def caught_up() -> bool:
        logged = ctx.viewer.published()
        frames = scrape(ctx.bridge).frames
        sent = {k: logged[k] - since.sent[k] for k in ("twist", "stop")}
        got = {k: frames[k] - since.counts.frames[k] for k in ("twist", "stop")}
        seen[:] = [sent, got]
        return (
            sent["stop"] >= stops and got["twist"] == sent["twist"] and got["stop"] == sent["stop"] + other_stops
        )

    wait_for(
        caught_up,
        ACTION_TIMEOUT,
        lambda: f"the bridge to count what was sent (viewer logged, bridge counted: {seen}; recorded {ctx.items()})",
        interval=0.02,
    )
    return healthz(ctx.bridge)


def hold_w_until_refused(ctx: Ctx, reason: str, before: int) -> None:
    """With W held, wait until the bridge has refused at least two more of the viewer's twists for ``reason``."""
    wait_for(
        lambda: refused(ctx.bridge, reason) >= before + 2,
        ACTION_TIMEOUT,
        lambda: f"the held W to be refused as {reason} (recorded {ctx.items()}){tail(ctx.viewer)}",
        interval=0.02,
    )


def test_someone_elses_stop_lasts_while_w_is_held_and_letting_go_drives_again(ctx: Ctx) -> None:
    ctx.viewer.engage_teleop()
    since = ctx.checkpoint()
    held_before = refused(ctx.bridge, "stopped_by_other")
    ctx.viewer.key_down("w")
    try:
        ctx.rec.wait_twists(1, timeout=ACTION_TIMEOUT)
        with ViewerClient(ctx.bridge.websocket_url()) as other:
            other.stop()
            other.sync()
        # The viewer goes on sending twists for the held key: every one is refused, none moves the robot.
        hold_w_until_refused(ctx, "stopped_by_other", held_before)
        stopped = ctx.items()
        assert stopped[-1] == ("tele_cmd_vel", ZERO), stopped
        assert healthz(ctx.bridge)["driver"] is None
    finally:
        ctx.viewer.key_up("w")  # the viewer sends stop: its release
    health = wait_caught_up(ctx, since, other_stops=1)
    assert health["driver"] is None
    first = ctx.items()
    # The drive, the other's stop (one zero), the viewer's release stop (every stop acts: one more zero).
    assert first[-2:] == [("tele_cmd_vel", ZERO), ("tele_cmd_vel", ZERO)], first
    assert_one_drive(first[:-1], allowed={FORWARD}, required=FORWARD)
    assert ctx.zeros_since(since) == {"stop": 2}

    # Pressed again: it drives.
    again = ctx.checkpoint()
    ctx.viewer.key_down("w")
    try:
        wait_for(
            lambda: ctx.items()[len(first) :].count(("tele_cmd_vel", FORWARD)) >= 2,
            ACTION_TIMEOUT,
            lambda: f"driving again after letting go (recorded {ctx.items()}){tail(ctx.viewer)}",
        )
    finally:
        ctx.viewer.key_up("w")
    assert wait_caught_up(ctx, again)["driver"] is None
    assert_one_drive(ctx.items()[len(first) :], allowed={FORWARD}, required=FORWARD)
    assert refused(ctx.bridge, "stopped_by_other") > held_before


def test_an_estop_cleared_while_w_is_held_does_not_drive_until_w_is_let_go(ctx: Ctx) -> None:
    ctx.viewer.engage_teleop()
    since = ctx.checkpoint()
    estopped_before = refused(ctx.bridge, "estopped")
    held_before = refused(ctx.bridge, "stopped_by_other")
    ctx.viewer.key_down("w")
    try:
        ctx.rec.wait_twists(1, timeout=ACTION_TIMEOUT)
        with ViewerClient(ctx.bridge.websocket_url()) as panel:
            panel.estop("interop test")
            panel.sync()
            hold_w_until_refused(ctx, "estopped", estopped_before)
            panel.estop_clear()
            panel.sync()
        # Cleared, and W is still down: the viewer must let go first.
        hold_w_until_refused(ctx, "stopped_by_other", held_before)
        assert ctx.items()[-2:] == [("tele_cmd_vel", ZERO), ("estop", Bool(False))], ctx.items()
    finally:
        ctx.viewer.key_up("w")
    wait_caught_up(ctx, since)
    items = ctx.items()
    latched_at = items.index(("estop", Bool(True)))
    after = [m for s, m in items[latched_at:] if s == "tele_cmd_vel"]
    assert FORWARD not in after, f"the robot moved after the e-stop: {items}"
    assert ctx.zeros_since(since) == {"estop": 1, "stop": 1}, "the latch's zero, then the viewer's release stop"


def viewer_session_status(server: RerunWebSocketServer) -> dict[str, Any]:
    """The viewer's entry in ``/status`` (it is the only client)."""
    with urllib.request.urlopen(server.http_url("/status"), timeout=5) as response:
        (viewer,) = json.load(response)["clients"]
    result: dict[str, Any] = viewer
    return result


def test_the_viewer_drives_with_status_frames_flowing(ctx: Ctx) -> None:
    _, frames_before = rejects_and_status_frames(ctx.bridge)
    rejects_before = viewer_session_status(ctx.bridge)["rejects"]
    connections = ctx.viewer.connections()
    seen: list[Any] = []
    # A second client changes the status for everyone (the client count) and watches who drives.
    with ViewerClient(ctx.bridge.websocket_url(), on_status=seen.append) as watcher:
        watcher.wait_status(lambda s: s.clients == 2)
        items = ctx.drive(("w",), until=lambda twists: len(twists) >= 2)
        assert_one_drive(items, allowed={FORWARD}, required=FORWARD)
        assert watcher.wait_status(lambda s: s.driver is None).command is None
    driving = [s for s in seen if s.driver is not None]
    assert driving and driving[0].command is not None and driving[0].command.linear_x == 0.5, seen
    assert not any(s.you_drive for s in seen)
    # Frames went to both clients on every change (the watcher joined: its greeting and one to the viewer;
    # the viewer drove; it stopped), and the viewer went on as before: it never reconnected, nothing it
    # sent was refused, and it answers the bridge's round-trip pings.
    wait_for(lambda: healthz(ctx.bridge)["clients"] == 1, ACTION_TIMEOUT, lambda: "the watcher to be gone")
    _, frames_after = rejects_and_status_frames(ctx.bridge)
    assert frames_after - frames_before >= 5, (frames_before, frames_after)
    viewer = viewer_session_status(ctx.bridge)
    assert viewer["rtt_ms"] is not None and viewer["rejects"] == rejects_before, viewer
    assert ctx.viewer.connections() == connections

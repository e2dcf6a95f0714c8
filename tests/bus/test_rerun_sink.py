"""The Rerun sink against a real Rerun gRPC server (``rr.serve_grpc`` in a child process).

What reached the server is read back by Rerun's own CLI subscribing to it
(:class:`tests.rerun_support.RecordingTap`), never from the sink's internals;
the bridge is read through its public ``/metrics`` only. No timing is asserted
(the cost of the sink is measured by the benchmark, see docs/viewer-awareness.md).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.bus.transports.bus_support import PlainLcm, require_lcm, unique_lcm_url
from tests.conftest import BridgeFactory, client, twist, wait_until
from tests.rerun_support import RecordingTap, RerunServer, require_rerun
from tests.server.test_observability import scrape, value
from viewer_bridge import AsyncRerunWebSocketServer, RerunWebSocketServer
from viewer_bridge.bus.rerun_sink import REFUSAL_INTERVAL
from viewer_bridge.config import ConfigError, from_mapping

pytestmark = pytest.mark.timeout(180)

# Rendering and process start-up are slow on 2 shared cores: generous deadlines, never asserted.
SLOW = 30.0


@pytest.fixture
def rerun_server() -> RerunServer:
    require_rerun()
    with RerunServer() as server:
        yield server  # type: ignore[misc]


SINK_LOGGER = "viewer_bridge.bus.rerun_sink"


def sink_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SINK_LOGGER and r.levelno >= logging.WARNING]


def sink_metric(server: RerunWebSocketServer, name: str, **labels: str) -> float:
    return value(scrape(server.http_url("/metrics")), name, **labels)


def logged_commands(server: RerunWebSocketServer) -> float:
    """Commands the sink's lane has handled (logged, or dropped while the server was away)."""
    return sink_metric(server, "viewer_bridge_published_total", stream="tele_cmd_vel", transport="rerun")


def local_label(ws: ClientConnection) -> str:
    """The start of the label the bridge gives this client (``127.0.0.1:PORT #``)."""
    host, port = ws.socket.getsockname()[:2]
    return f"{host}:{port} #"


def send_and_wait(server: RerunWebSocketServer, ws: ClientConnection, message: str, handled: int) -> None:
    """Send, then wait until the sink has handled ``handled`` commands in all: each is its own point."""
    ws.send(message)
    wait_until(lambda: logged_commands(server) >= handled, SLOW, 0.01, f"the sink to handle command {handled}")


def test_the_recording_shows_driver_goal_refusal_and_commands(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    # The deadman is long: the drive lasts until the status (sampled 5 times a second) has shown it.
    server, recorder = bridge_factory(
        rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id, max_linear_x=0.5,
        deadman_timeout=120.0,
    )
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as driver, client(server) as other:
        label = local_label(driver)
        send_and_wait(server, driver, twist(linear_x=0.3), 1)
        send_and_wait(server, driver, twist(linear_x=0.9, angular_z=-0.4), 2)  # clamped to 0.5
        send_and_wait(server, driver, twist(linear_y=0.2), 3)
        other.send(twist(linear_x=1.0))  # someone else is driving: not_driver
        other.send('{"type":"click","x":320,"y":240,"z":null,"entity_path":"/camera/image"}')  # 2D: refused
        driver.send('{"type":"click","x":1.5,"y":-0.5,"z":0.25}')

        def status_named_driver() -> bool:
            return any(
                f"**Driver:** {label}" in text and "**Command in force:** linear x 0.00 y +0.20 m/s" in text
                for text in tap.values("bridge/status", "TextDocument:text")
            )

        wait_until(status_named_driver, SLOW, 0.1, lambda: f"a status naming {label} and its command: "
                   f"{tap.values('bridge/status', 'TextDocument:text')}")
        send_and_wait(server, driver, '{"type":"stop"}', 4)
        published = [(t.linear.x, t.linear.y, t.angular.z) for t in recorder.twists]
        assert published == [(0.3, 0.0, 0.0), (0.5, 0.0, -0.4), (0.0, 0.2, 0.0), (0.0, 0.0, 0.0)]
        wait_until(lambda: tap.values("bridge/cmd_vel", "Scalars:scalars") and len(
            tap.values("bridge/cmd_vel", "Scalars:scalars")) >= 4, SLOW, 0.1, "four cmd_vel points")
        series = [tuple(point) for point in tap.values("bridge/cmd_vel", "Scalars:scalars")]
        assert series == published  # in order, clamp included, ending with the zero
        assert tap.values("bridge/cmd_vel", "SeriesLines:names") == [["linear_x", "linear_y", "angular_z"]]

        wait_until(lambda: tap.values("bridge/goal", "Points3D:positions"), SLOW, 0.1, "the goal")
        [goal] = tap.values("bridge/goal", "Points3D:positions")
        assert goal == pytest.approx([1.5, -0.5, 0.25])
        [goal_label] = tap.values("bridge/goal", "Points3D:labels")
        assert goal_label == "goal 1: (1.50, -0.50, 0.25) world"

        def refusals() -> list[str]:
            return [str(text) for text in tap.values("bridge/refused", "TextLog:text")]

        wait_until(lambda: len(refusals()) >= 2, SLOW, 0.1, lambda: f"two refusals: {refusals()}")
        not_driver, not_3d = refusals()
        other_label = local_label(other)
        assert not_driver.startswith("not_driver: ") and other_label in not_driver
        assert not_3d.startswith("click_not_3d: ") and "was not published" in not_3d and other_label in not_3d
        assert tap.values("bridge/refused", "TextLog:level") == ["WARN", "WARN"]
        # Once the drive ended, the status says so.
        wait_until(lambda: "**Driver:** nobody" in tap.values("bridge/status", "TextDocument:text")[-1],
                   SLOW, 0.1, "a final status with nobody driving")


def test_a_trail_follows_the_last_goals(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server, recorder = bridge_factory(rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id)
    goals = [(float(i), 2.0 * i, 0.1) for i in range(1, 8)]
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        for n, (x, y, z) in enumerate(goals, 1):
            # One at a time, as a person clicks: each is logged (goals that come faster replace each other).
            ws.send(json.dumps({"type": "click", "x": x, "y": y, "z": z}))
            wait_until(lambda n=n: len(tap.values("bridge/goal", "Points3D:positions")) == n, SLOW, 0.1,
                       f"goal {n}")
        recorder.wait_points(len(goals))
        trails = tap.values("bridge/goal/trail", "LineStrips3D:strips")
    # One strip per goal from the second on; the last holds the newest five goals, oldest first.
    assert len(trails) == len(goals) - 1
    # Logged as float32: compared to 5 decimals.
    assert [tuple(round(v, 5) for v in point) for point in trails[-1]] == goals[-5:]
    assert tap.values("bridge/goal", "Points3D:labels")[-1].startswith("goal 7: (7.00, 14.00, 0.10)")


def test_a_flood_of_clicks_logs_at_most_ten_goals_a_second_and_the_last_is_the_newest(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server, recorder = bridge_factory(
        rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id, rate_limit=1e9, rate_burst=1e9
    )
    clicks = 500
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        started = time.monotonic()
        for i in range(1, clicks + 1):
            ws.send(json.dumps({"type": "click", "x": float(i), "y": 0.0, "z": 0.0}))
        recorder.wait_points(clicks)  # every click still reaches the subscribers and the buses
        wait_until(
            lambda: (tap.values("bridge/goal", "Points3D:positions") or [[0.0]])[-1][0] == clicks, SLOW, 0.1,
            "the newest goal in the recording",
        )
        elapsed = time.monotonic() - started
        logged = tap.values("bridge/goal", "Points3D:positions")
    assert len(logged) <= 1 + elapsed / 0.1, (len(logged), elapsed)
    assert len(logged) < clicks / 10
    assert tap.values("bridge/goal", "Points3D:labels")[-1].startswith(f"goal {len(logged)}: ({clicks:.2f}, 0.00")


def test_refusals_of_a_flood_are_summed_up_not_logged_one_by_one(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server, _ = bridge_factory(rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id)
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        for _ in range(200):
            ws.send('{"type":"click","x":1,"y":2,"z":null}')
        wait_until(lambda: sink_metric(server, "viewer_bridge_rejects_total", reason="click_not_3d") == 200,
                   SLOW, 0.01, "200 refusals counted")
        wait_until(lambda: tap.values("bridge/refused", "TextLog:text"), SLOW, 0.1, "a refusal entry")
        # The first is logged at once; the next one for this client and reason says how many it sums up,
        # once the gate's interval has passed on the bridge's clock since the first was let through.
        gate_opens = server.server.clock() + REFUSAL_INTERVAL
        wait_until(lambda: server.server.clock() >= gate_opens, SLOW, 0.05, "the refusal gate's interval")
        ws.send('{"type":"click","x":1,"y":2,"z":null}')
        wait_until(lambda: len(tap.values("bridge/refused", "TextLog:text")) >= 2, SLOW, 0.1, "a second entry")
        texts = tap.values("bridge/refused", "TextLog:text")
    assert len(texts) == 2
    assert "(+" not in texts[0]
    assert texts[1].endswith("(+199 more like it)")


def test_rerun_server_killed_mid_drive_zero_reaches_lcm_and_twists_keep_flowing(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture,
    record_property: pytest.RecordProperty,
) -> None:
    require_lcm()
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    url = unique_lcm_url()
    from dimos_lcm.geometry_msgs import Twist as LcmTwist

    with PlainLcm(url, "/tele_cmd_vel.*") as bus:
        server, _ = bridge_factory(
            rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id,
            transports=["lcm"], lcm_url=url, deadman_timeout=0.5,
        )
        with client(server) as ws:
            ws.send(twist(linear_x=0.2))
            assert LcmTwist.lcm_decode(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist", SLOW)).linear.x == 0.2
            wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_connected") == 1, SLOW, 0.01,
                       "the sink to connect")
            rerun_server.kill()
            # The drive goes on, and the sink notices the loss as it tries to log it.
            sent = 0

            def drive_on_until_noticed() -> bool:
                """One more twist, straight onto the bus, unless the sink has noticed the loss."""
                nonlocal sent
                if sink_metric(server, "viewer_bridge_rerun_losses_total") >= 1:
                    return True
                sent += 1
                ws.send(twist(linear_x=0.2 + sent / 10000))
                assert LcmTwist.lcm_decode(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist", SLOW)).linear.x == (
                    pytest.approx(0.2 + sent / 10000)
                )
                return False

            wait_until(drive_on_until_noticed, SLOW, 0.01, "the sink to notice its server is gone")
            for i in range(20):  # twists keep flowing while the sink fails
                ws.send(twist(linear_x=0.3 + i / 100))
                got = LcmTwist.lcm_decode(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist", SLOW))
                assert got.linear.x == pytest.approx(0.3 + i / 100)
            # The operator lets go (silence, no stop): the deadman's zero reaches the bus.
            silent_at = time.monotonic()
            zero = LcmTwist.lcm_decode(bus.get_on("/tele_cmd_vel#geometry_msgs.Twist", SLOW))
            record_property("deadman_zero_after_s", round(time.monotonic() - silent_at, 3))
            assert (zero.linear.x, zero.linear.y, zero.angular.z) == (0.0, 0.0, 0.0)
            samples = scrape(server.http_url("/metrics"))
            assert value(samples, "viewer_bridge_rerun_connected") == 0
            assert value(samples, "viewer_bridge_rerun_entries_total", outcome="dropped") > 0
            assert value(samples, "viewer_bridge_zero_twists_total", cause="deadman") == 1
    said = sink_warnings(caplog)
    assert len(said) == 1, said
    assert rerun_server.url in said[0] and "retrying quietly" in said[0]


def test_the_sink_reconnects_to_a_restarted_server_and_shows_the_state_again(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    # No deadman zero in the middle: the commands below are the only ones.
    server, recorder = bridge_factory(
        rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id, deadman_timeout=120.0
    )
    with client(server) as ws:
        ws.send('{"type":"click","x":0.5,"y":0.25,"z":0.0}')
        recorder.wait_points(1)
        wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_entries_total", outcome="logged") >= 2, SLOW,
                   0.01, "the goal logged")
        rerun_server.kill()
        ws.send(twist(angular_z=0.5))  # the sink finds the server gone as it logs this
        wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_connected") == 0, SLOW, 0.05,
                   "the sink to notice the loss")
        with RerunServer(rerun_server.recording_id, port=rerun_server.port) as restarted, RecordingTap(
            restarted.url, tmp_path
        ) as tap:
            wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_connected") == 1, SLOW, 0.05,
                       "the sink to reconnect")
            # The new server had nothing; the sink logged the status and the goal again on reconnecting.
            wait_until(lambda: tap.values("bridge/goal", "Points3D:positions"), SLOW, 0.1, "the goal again")
            assert tap.values("bridge/goal", "Points3D:positions")[-1] == pytest.approx([0.5, 0.25, 0.0])
            wait_until(lambda: tap.values("bridge/status", "TextDocument:text"), SLOW, 0.1, "the status again")
            ws.send(twist(angular_z=0.7))
            wait_until(lambda: tap.values("bridge/cmd_vel", "Scalars:scalars"), SLOW, 0.1, "a command point")
            # The command sent while the server was away was dropped: this one is the only point.
            [point] = tap.values("bridge/cmd_vel", "Scalars:scalars")
            assert point == pytest.approx([0.0, 0.0, 0.7])
            # Counted while the restarted server still runs: its own end, next, is a second loss.
            assert len(sink_warnings(caplog)) == 1, sink_warnings(caplog)
            assert any("is back" in r.getMessage() for r in caplog.records if r.name == SINK_LOGGER)
            assert sink_metric(server, "viewer_bridge_rerun_losses_total") == 1


def test_a_rerun_server_that_stops_reading_delays_nothing_not_even_stop(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server, recorder = bridge_factory(rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id)
    with client(server) as ws:
        ws.send(twist(linear_x=0.1))
        recorder.wait_twists(1)
        wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_connected") == 1, SLOW, 0.01, "the sink up")
        rerun_server.pause()  # connected, but it takes nothing more
        try:
            for i in range(50):
                ws.send(twist(linear_x=0.2 + i / 100))
            ws.send('{"type":"stop"}')
            twists = recorder.wait_twists(52, timeout=SLOW)
            assert [round(t.linear.x, 2) for t in twists] == [0.1, *(round(0.2 + i / 100, 2) for i in range(50)), 0.0]
            server.stop()  # the sink gives up on the wedged server within its bound: no "did not stop"
            assert not server.is_running
        finally:
            rerun_server.resume()  # its connection, left behind, can now end
    stuck = [r.getMessage() for r in caplog.records if "did not stop" in r.getMessage()]
    assert not stuck
    assert any("does not answer; leaving its connection behind" in m for m in sink_warnings(caplog))


def test_an_unreachable_server_delays_nothing_and_warns_once(
    bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    require_rerun()
    caplog.set_level(logging.INFO, logger=SINK_LOGGER)
    from tests.bus.transports.bus_support import free_port

    server, recorder = bridge_factory(rerun_connect=f"rerun+http://127.0.0.1:{free_port()}/proxy")
    with client(server) as ws:
        for i in range(5):
            ws.send(twist(linear_x=0.1 * (i + 1)))
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        ws.send('{"type":"stop"}')
        recorder.wait_points(1)
        assert [t.linear.x for t in recorder.wait_twists(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.0])
    wait_until(lambda: sink_metric(server, "viewer_bridge_rerun_entries_total", outcome="dropped") >= 2, SLOW, 0.01,
               "the sink to drop what it could not log")
    assert sink_metric(server, "viewer_bridge_rerun_entries_total", outcome="logged") == 0
    server.stop()
    said = sink_warnings(caplog)
    assert len(said) == 1 and "cannot reach it" in said[0], said


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"rerun_connect": "http://127.0.0.1:9877/proxy"}, "'http://127.0.0.1:9877/proxy'"),
        ({"rerun_connect": "rerun+http://127.0.0.1:9877/"}, "path /proxy"),
        ({"rerun_connect": "rerun+http://127.0.0.1:99999/proxy"}, "'rerun+http://127.0.0.1:99999/proxy'"),
        ({"rerun_prefix": "/"}, "rerun_prefix"),
        ({"rerun_prefix": "my bridge/"}, "'my bridge/'"),
        ({"rerun_app_id": " "}, "rerun_app_id"),
    ],
)
def test_bad_rerun_settings_are_refused_naming_the_value(settings: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=r".*") as caught:
        from_mapping(settings, source="arguments")
    assert says in str(caught.value)


def test_without_the_rerun_sdk_the_bridge_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    monkeypatch.setitem(sys.modules, "rerun", None)  # as if rerun-sdk were not installed

    async def start() -> None:
        server = AsyncRerunWebSocketServer(port=0, rerun_connect="rerun+http://127.0.0.1:9/proxy")
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(ConfigError, match=r"pip install 'viewer-bridge\[rerun\]'"):
        asyncio.run(start())


def test_the_recording_id_defaults_to_the_environment(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RERUN_RECORDING_ID", rerun_server.recording_id)
    server, recorder = bridge_factory(rerun_connect=rerun_server.url)
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        ws.send('{"type":"click","x":3,"y":2,"z":1}')
        recorder.wait_points(1)
        wait_until(lambda: tap.values("bridge/goal", "Points3D:positions"), SLOW, 0.1, "the goal in that recording")
    from rerun.chunk import RrdReader

    # One recording in the file: the robot's, which the bridge's entities joined.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tap was stopped, not finished: no footer
        recordings = {(entry.application_id, entry.recording_id) for entry in RrdReader(tap.path).recordings()}
    assert recordings == {("dimos", rerun_server.recording_id)}


def test_a_custom_prefix_puts_everything_under_it(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server, recorder = bridge_factory(
        rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id, rerun_prefix="/world/bridge"
    )
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        ws.send('{"type":"click","x":3,"y":2,"z":1}')
        recorder.wait_points(1)
        wait_until(lambda: tap.values("world/bridge/goal", "Points3D:positions"), SLOW, 0.1, "world/bridge/goal")
        wait_until(lambda: tap.values("world/bridge/status", "TextDocument:text"), SLOW, 0.1, "world/bridge/status")
        assert not tap.rows("bridge/goal")


def _init_recording_id(queue: Any) -> None:
    import rerun as rr

    rr.init("dimos")  # what a DimOS module does in its worker process (rerun_init)
    queue.put(rr.get_recording_id())


def test_without_a_recording_id_the_bridge_joins_the_recording_of_its_process_tree(
    bridge_factory: BridgeFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_rerun()
    monkeypatch.delenv("RERUN_RECORDING_ID", raising=False)
    # DimOS starts its module workers with multiprocessing: rr.init() there picks the id shared by the tree.
    context = multiprocessing.get_context("forkserver")
    queue = context.Queue()
    worker = context.Process(target=_init_recording_id, args=(queue,))
    worker.start()
    try:
        dimos_recording = queue.get(timeout=SLOW)
    finally:
        worker.join(timeout=SLOW)
    with RerunServer(dimos_recording) as rerun_server:
        server, recorder = bridge_factory(rerun_connect=rerun_server.url)
        with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
            ws.send('{"type":"click","x":3,"y":2,"z":1}')
            recorder.wait_points(1)
            wait_until(lambda: tap.values("bridge/goal", "Points3D:positions"), SLOW, 0.1, "the goal")
        server.stop()
    from rerun.chunk import RrdReader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recordings = {entry.recording_id for entry in RrdReader(tap.path).recordings()}
    assert recordings == {dimos_recording}


def test_a_latched_estop_and_its_refusals_show_in_the_recording(
    rerun_server: RerunServer, bridge_factory: BridgeFactory, tmp_path: Path
) -> None:
    server, recorder = bridge_factory(rerun_connect=rerun_server.url, rerun_recording_id=rerun_server.recording_id)
    with RecordingTap(rerun_server.url, tmp_path) as tap, client(server) as ws:
        ws.send('{"type":"estop","reason":"person in the aisle"}')

        def statuses() -> list[str]:
            return [str(text) for text in tap.values("bridge/status", "TextDocument:text")]

        wait_until(lambda: any("**E-STOP latched**" in text for text in statuses()), SLOW, 0.1,
                   lambda: f"a status with the e-stop: {statuses()}")
        [latched] = [t for t in statuses() if "E-STOP" in t][:1]
        assert "(person in the aisle)" in latched and "#0001" in latched
        ws.send(twist(linear_x=0.5))  # refused while latched
        wait_until(lambda: any(str(t).startswith("estopped: ") for t in tap.values("bridge/refused", "TextLog:text")),
                   SLOW, 0.1, "the estopped refusal")
        ws.send('{"type":"estop_clear"}')
        wait_until(lambda: "E-STOP" not in statuses()[-1], SLOW, 0.1,
                   "a status without the e-stop once cleared")
    assert all(not t.linear.x for t in recorder.twists)  # only the latch's zero was published

"""/metrics, /healthz and /status scraped with a real HTTP client while the bridge works; JSON logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.conftest import BridgeFactory, client, recv_json, twist, wait_until
from viewer_bridge import Twist


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_as_frames_arrive(bridge_factory: BridgeFactory) -> None:
    server, rec = bridge_factory(deadman_timeout=0.2)
    url = server.http_url("/metrics")
    before = scrape(url)
    assert value(before, "viewer_bridge_frames_total", type="twist") == 0
    with client(server) as a, client(server) as b:
        a.send(twist(linear_x=0.5))
        rec.wait_twists(1)  # two connections have no order between them: a drives first
        b.send(twist(linear_x=-0.5))
        assert recv_json(b)["reason"] == "not_driver"
        a.send("garbage")
        assert recv_json(a)["reason"] == "invalid_json"
        a.send('{"type":"click","x":1,"y":2,"z":3}')
        rec.wait_points(1)
        wait_until(lambda: server.snapshot().zeros.get("deadman", 0) == 1, what="deadman")
        during = scrape(url)
        assert value(during, "viewer_bridge_connections") == 2
    after = scrape(url)
    assert value(after, "viewer_bridge_connections_total") == 2
    assert value(after, "viewer_bridge_frames_total", type="twist") == 2
    assert value(after, "viewer_bridge_frames_total", type="click") == 1
    assert value(after, "viewer_bridge_rejects_total", reason="not_driver") == 1
    assert value(after, "viewer_bridge_rejects_total", reason="invalid_json") == 1
    assert value(after, "viewer_bridge_published_total", stream="tele_cmd_vel", transport="inprocess") == 2
    assert value(after, "viewer_bridge_published_total", stream="clicked_point", transport="inprocess") == 1
    assert value(after, "viewer_bridge_published_total", stream="stop_movement", transport="inprocess") == 1
    assert value(after, "viewer_bridge_zero_twists_total", cause="deadman") == 1
    # Normally the loop's own timer sends the zero; a loop held past the watchdog's grace (a loaded
    # machine) leaves it to the watchdog. Either way the metric is the bridge's count, and one zero went out.
    assert value(after, "viewer_bridge_watchdog_zeros_total") == server.snapshot().watchdog_zeros in (0, 1)
    assert rec.twists.count(Twist.zero()) == 1
    assert value(after, "viewer_bridge_paused_clients") == 0
    assert value(after, "viewer_bridge_loop_lag_seconds_count") > 0
    assert value(after, "viewer_bridge_lease_changes_total") == 2
    # Every publish-bearing message was timed.
    assert value(after, "viewer_bridge_publish_latency_seconds_count") == 2
    assert value(after, "viewer_bridge_publish_latency_seconds_bucket", le="+Inf") == 2


def test_healthz_answers_under_load(bridge_factory: BridgeFactory) -> None:
    # Limits lifted: this is a load the bridge must take in full (every click arrives), not a flood to throttle.
    server, rec = bridge_factory(rate_limit=1e9, rate_burst=1e9, frame_budget=1e9)
    done = threading.Event()
    sent = [0]

    def flood() -> None:
        frame = json.dumps({"type": "click", "x": 1, "y": 2, "z": 3})
        with connect(server.websocket_url(), open_timeout=5) as ws:
            while not done.is_set() and sent[0] < 200_000:
                ws.send(frame)
                sent[0] += 1

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        wait_until(lambda: len(rec.points) > 1000, timeout=10, what="the flood to start")
        for _ in range(5):
            health = json.loads(urllib.request.urlopen(server.http_url("/healthz"), timeout=10).read())
            assert health["up"] is True and health["clients"] == 1
    finally:
        done.set()
        flooder.join(timeout=30)
    wait_until(lambda: len(rec.points) == sent[0], timeout=20, what="every flooded click")


def test_json_logs_name_the_client() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "viewer_bridge", "serve", "--port", "0", "--log-format", "json"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            match = re.search(r"--ws-url (ws://\S+)", line)
            if match:
                url = match.group(1)
                break
        assert url is not None
        with connect(url, open_timeout=5) as ws:
            ws.send("nope")
            ws.recv(timeout=5)
        proc.terminate()
        _, rest = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    records = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    rejected = [r for r in records if "rejected invalid_json" in r["msg"]]
    assert rejected and rejected[0]["level"] == "warning"
    assert re.search(r"client 127\.0\.0\.1:\d+ #[0-9a-f]{4}", rejected[0]["msg"])
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)

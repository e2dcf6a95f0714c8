"""viewer_bridge.dimos in a real DimOS 0.0.15: blueprints, DimOS's own checks, and installing beside DimOS.

DimOS lives in its own venv (``bench/setup_dimos.sh --with-viewer-bridge``,
built here once and cached), so these tests drive it as subprocesses: the
code they run there is in ``tests/dimos_venv/``. Each subprocess gets a Zenoh
scouting group and domain of its own (DimOS's default transport is Zenoh), so
parallel runs on one machine never hear each other.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import recv_json, require, wait_until

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench" / "dimos-vb-venv"
PYTHON = VENV / "bin" / "python"
SIDE = ROOT / "tests" / "dimos_venv"

OURS = "viewer_bridge.dimos"
THEIRS = "dimos.visualization.rerun.websocket_server"
DIMOS_TWIST = "dimos.msgs.geometry_msgs.Twist.Twist"
DIMOS_POINT = "dimos.msgs.geometry_msgs.PointStamped.PointStamped"
# A subprocess that has not answered in this long is stuck (a blueprint starts in ~3 s).
ANSWER_TIMEOUT = 60.0

# Building the venv the first time downloads DimOS and its few dependencies.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def dimos_python() -> Path:
    """The DimOS venv's interpreter, the venv built (or found up to date) by the project's recipe."""
    built = subprocess.run(
        ["bash", str(ROOT / "bench" / "setup_dimos.sh"), "--with-viewer-bridge"],
        capture_output=True,
        text=True,
        timeout=840,
    )
    log = "\n".join(line for line in built.stderr.splitlines() if not line.startswith("WARNING: Location"))
    require(built.returncode == 0, f"bench/setup_dimos.sh --with-viewer-bridge failed:\n{log[-3000:]}")
    return PYTHON


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def dimos_env(tmp_path: Path) -> dict[str, str]:
    """An environment for DimOS processes: a private Zenoh bus, logs in tmp_path, our helpers importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIEWER_BRIDGE_", "ZENOH_", "DIMOS_"))}
    env.update(
        PYTHONPATH=str(SIDE),
        DIMOS_TRANSPORT="zenoh",
        # Sessions on different scouting groups never discover each other, RPC included.
        ZENOH_SCOUT_ADDR=f"224.0.0.224:{_free_udp_port()}",
        ZENOH_DOMAIN=f"vb{uuid.uuid4().hex[:12]}",
        DIMOS_RUN_LOG_DIR=str(tmp_path / "dimos-logs"),
        PYTEST_VERSION=env.get("PYTEST_VERSION", "1"),  # DimOS then reads no .env file
    )
    return env


class Subprocess:
    """A DimOS-venv script that answers in JSON lines on stdout; its stderr goes to a file."""

    def __init__(self, python: Path, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stderr_path = cwd / f"stderr-{uuid.uuid4().hex[:8]}.txt"
        self._stderr = self.stderr_path.open("w")
        self.proc = subprocess.Popen(
            [str(python), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=cwd,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="dimos-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")[-4000:]

    def answer(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no answer within {ANSWER_TIMEOUT}s; its log:\n{self.log()}") from None
        if line is None:
            raise AssertionError(f"it exited ({self.proc.wait()}) without answering; its log:\n{self.log()}")
        return dict(json.loads(line))

    def send(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()


@pytest.fixture
def blueprint(dimos_python: Path, dimos_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    started: list[Subprocess] = []

    def start(module: str, *how: str) -> Subprocess:
        args = [str(SIDE / "blueprint_driver.py"), module, *how]
        process = Subprocess(dimos_python, args, dimos_env, tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def _click(x: float, y: float, z: float, timestamp_ms: int, entity_path: str = "/world/map") -> str:
    return json.dumps(
        {"type": "click", "x": x, "y": y, "z": z, "entity_path": entity_path, "timestamp_ms": timestamp_ms}
    )


def _twist(linear_x: float, angular_z: float) -> str:
    return json.dumps(
        {"type": "twist", "linear_x": linear_x, "linear_y": 0.0, "linear_z": 0.0,
         "angular_x": 0.0, "angular_y": 0.0, "angular_z": angular_z}
    )


_STOP = json.dumps({"type": "stop"})


def _twists(messages: list[dict[str, Any]]) -> list[tuple[float, float]]:
    out = []
    for m in messages:
        if m["stream"] == "twist_command":
            assert m["class"] == DIMOS_TWIST
            assert m["linear"][1:] == [0.0, 0.0] and m["angular"][:2] == [0.0, 0.0], m
            out.append((m["linear"][0], m["angular"][2]))
    return out


def _points(messages: list[dict[str, Any]]) -> list[tuple[float, float, float, float, str]]:
    out = []
    for m in messages:
        if m["stream"] == "clicked_point":
            assert m["class"] == DIMOS_POINT
            out.append((*m["point"], m["ts"], m["frame_id"]))
    return out


@pytest.mark.parametrize(
    ("module", "how"),
    [(OURS, ""), (THEIRS, ""), (OURS, "over-dimos")],
    ids=["viewer-bridge", "dimos-module", "viewer-bridge-added-over-a-dimos-stack"],
)
def test_a_blueprint_carries_the_viewer_to_another_worker_over_dimos_transport(
    blueprint: Any, module: str, how: str
) -> None:
    """autoconnect(server, recorder) with tele_cmd_vel remapped: the recorder, in its own worker, gets exactly
    what the viewer sent. Run with DimOS's own module too (the swap is symmetric), and with ours autoconnected
    over a stack written for DimOS's (it replaces DimOS's, and the stack's remapping applies to it)."""
    process = blueprint(module, *([how] if how else []))
    ready = process.answer()
    assert ready["event"] == "ready", ready
    assert ready["server"] == f"{module}.RerunWebSocketServer"
    url = ready["url"]
    assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws"), url
    # websocket_url() over DimOS RPC, from the coordinator and from the recorder's worker through its Spec.
    assert ready["url_from_spec"] == url
    ours = module == OURS
    # DimOS's module names the frame after the clicked entity; viewer-bridge uses its frame_id setting.
    frame = "world" if ours else "/world/map"

    def received() -> list[dict[str, Any]]:
        answer = process.send("received")
        assert answer["event"] == "received", answer
        return list(answer["messages"])

    with connect(url, open_timeout=10) as ws:
        ws.send(_STOP)  # nobody is driving: a stop still publishes one zero (as DimOS 0.0.15 does)
        ws.send(_twist(0.5, 0.8))
        ws.send(_STOP)
        ws.send(_click(1.0, 2.0, 3.0, 5000))
        ws.send("not json {")
        if ours:
            error = recv_json(ws, timeout=10)
            assert error["type"] == "error" and error["reason"] == "invalid_json", error
            # MovementManager's goal limits, applied by the bridge: refused with a reason, never published.
            ws.send(_click(600.0, 0.0, 0.0, 5500))
            error = recv_json(ws, timeout=10)
            assert error["reason"] == "goal_out_of_range", error
        ws.send(_click(4.0, 5.0, 6.0, 6000))
        # Fences: the last message on each stream. Everything before them has arrived once they have.
        ws.send(_twist(0.25, 0.0))
        ws.send(_STOP)
        ws.send(_click(-1.0, -1.0, -1.0, 7000))
        expected_twists = [(0.0, 0.0), (0.5, 0.8), (0.0, 0.0), (0.25, 0.0), (0.0, 0.0)]
        expected_points = [
            (1.0, 2.0, 3.0, 5.0, frame),
            (4.0, 5.0, 6.0, 6.0, frame),
            (-1.0, -1.0, -1.0, 7.0, frame),
        ]
        messages = wait_until(
            lambda: (m := received())
            and len(_twists(m)) >= len(expected_twists)
            and len(_points(m)) >= len(expected_points)
            and m,
            timeout=20,
            interval=0.05,
            what=lambda: f"the recorder to receive everything; it has {received()}",
        )
        assert _twists(messages) == expected_twists
        assert _points(messages) == expected_points

        if ours:
            # The driver vanishes mid-drive: viewer-bridge publishes the zero DimOS's module does not.
            ws.send(_twist(0.1, 0.0))
    if ours:
        messages = wait_until(
            lambda: (m := received()) and len(_twists(m)) >= len(expected_twists) + 2 and m,
            timeout=20,
            interval=0.05,
            what="the zero after the driver disconnected",
        )
        assert _twists(messages)[len(expected_twists):] == [(0.1, 0.0), (0.0, 0.0)]

    stopped = process.send("stop")
    assert stopped["event"] == "stopped", stopped
    assert process.proc.wait(timeout=ANSWER_TIMEOUT) == 0, process.log()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


# -- DimOS's own tests for its server, only the import changed ---------------------------------------

_PROFILES = {
    "dimos-module": (THEIRS, []),
    "viewer-bridge": (OURS, []),
    "viewer-bridge-entity-frames": (OURS, ['click_frame="entity_path"']),
}


@pytest.fixture(scope="module")
def module_check_results(
    dimos_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, dict[str, Any]]]:
    """Each profile's results from tests/dimos_venv/module_checks.py, by check name."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for profile, (module, settings) in _PROFILES.items():
        tmp = tmp_path_factory.mktemp(profile)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIEWER_BRIDGE_", "ZENOH_", "DIMOS_"))}
        env.update(
            PYTHONPATH=str(SIDE),
            ZENOH_SCOUT_ADDR=f"224.0.0.224:{_free_udp_port()}",
            ZENOH_DOMAIN=f"vb{uuid.uuid4().hex[:12]}",
            DIMOS_RUN_LOG_DIR=str(tmp / "dimos-logs"),
            PYTEST_VERSION=env.get("PYTEST_VERSION", "1"),
        )
        run = subprocess.run(
            [str(dimos_python), str(SIDE / "module_checks.py"), module, *settings],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=ANSWER_TIMEOUT * 2,
        )
        assert run.returncode == 0, f"{profile}: module_checks.py failed:\n{run.stderr[-4000:]}"
        results[profile] = {r["check"]: r for r in map(json.loads, run.stdout.splitlines())}
    return results


def _expected_frame(profile: str, dimos_frame: str) -> str:
    # The one deliberate difference these checks meet (docs/dimos.md): the click's frame_id is the
    # frame_id setting ("world"), not the viewer's entity path; click_frame="entity_path" restores it.
    return "world" if profile == "viewer-bridge" else dimos_frame


@pytest.mark.parametrize("profile", list(_PROFILES))
@pytest.mark.parametrize("check", ["click", "twist", "stop", "invalid_json", "mixed"])
def test_dimos_own_server_checks_pass_with_only_the_import_changed(
    module_check_results: dict[str, dict[str, dict[str, Any]]], profile: str, check: str
) -> None:
    result = module_check_results[profile][check]
    assert "error" not in result, result["error"]
    points, twists = result["points"], result["twists"]
    for item in points:
        assert item["class"] == DIMOS_POINT
    for item in twists:
        assert item["class"] == DIMOS_TWIST
    if check == "click":
        # A click becomes one PointStamped: its coordinates, the entity as frame, timestamp_ms / 1000 as ts.
        assert [(p["xyz"], p["frame_id"], p["ts"]) for p in points] == [
            ([1.5, 2.5, 0.0], _expected_frame(profile, "/robot/base"), 5.0)
        ]
        assert twists == []
    elif check == "twist":
        assert [(t["linear"], t["angular"]) for t in twists] == [([0.5, 0.0, 0.0], [0.0, 0.0, 0.8])]
        assert points == []
    elif check == "stop":
        # A stop publishes one zero twist, even with nobody driving.
        assert [t["is_zero"] for t in twists] == [True]
        assert points == []
    elif check == "invalid_json":
        # Malformed JSON is survived: the next client's click still comes out.
        assert [(p["xyz"], p["frame_id"]) for p in points] == [([3.0, 4.0, 5.0], _expected_frame(profile, "/world"))]
    else:
        # heartbeat-free mixed session: click, twist, stop; only the click makes a point.
        assert [(p["xyz"], p["frame_id"], p["ts"]) for p in points] == [
            ([7.0, 8.0, 9.0], _expected_frame(profile, "/map"), 1.1)
        ]
        drive = [(t["linear"][0], t["angular"][2], t["is_zero"]) for t in twists]
        assert drive == [(0.3, 0.2, False), (0.0, 0.0, True)]


# -- installing beside DimOS ---------------------------------------------------------------------------


def test_installing_viewer_bridge_dimos_changes_none_of_dimos_packages(dimos_python: Path) -> None:
    """The recipe installs viewer-bridge[dimos] under constraints holding every installed version and every
    requirement DimOS declares; it may add packages, never change one, and pip check finds nothing new."""
    error = VENV / ".guest-install-error"
    complaint = error.read_text() if error.exists() else ""
    complaint = "\n".join(line for line in complaint.splitlines() if not line.startswith("WARNING: Location"))
    assert not complaint, f"pip could not fit viewer-bridge[dimos] around DimOS 0.0.15:\n{complaint}"

    def freeze(name: str) -> dict[str, str]:
        pairs = (line.split("==", 1) for line in (VENV / name).read_text().splitlines() if "==" in line)
        return {package.lower(): version for package, version in pairs}

    before, after = freeze(".freeze-before"), freeze(".freeze-after")
    changed = {p: (v, after.get(p)) for p, v in before.items() if after.get(p) != v}
    assert changed == {}

    def complaints(name: str) -> set[str]:
        return set((VENV / name).read_text().splitlines())

    # Before: only what DimOS's --no-deps install leaves out ("requires X, which is not installed").
    assert all("which is not installed" in line for line in complaints(".pip-check-before") if line)
    assert complaints(".pip-check-after") - complaints(".pip-check-before") == set()


def test_the_module_has_dimos_shape_and_every_bridge_setting(dimos_python: Path, tmp_path: Path) -> None:
    """Same name, outputs, RPCs and host/port defaults as DimOS's module; every BridgeConfig field as config."""
    script = """
import json, typing
from dimos.core.global_config import global_config
from dimos.visualization.rerun import websocket_server as theirs
import viewer_bridge.dimos as ours
from viewer_bridge.config import BridgeConfig

def shape(cls):
    hints = typing.get_type_hints(cls)
    streams = {n: f"{typing.get_origin(h).__name__}[{typing.get_args(h)[0].__module__}]"
               for n, h in hints.items() if getattr(typing.get_origin(h), "__name__", "") in ("In", "Out", "IO")}
    fields = hints["config"].model_fields
    host = fields["host"].get_default(call_default_factory=True, validated_data={"g": global_config})
    return {"name": cls.__name__, "blueprint_name": cls.name, "streams": streams,
            "rpcs": sorted(n for n in ("websocket_url", "start", "stop") if n in cls.rpcs),
            "host": host, "port": fields["port"].get_default()}

module_fields = typing.get_type_hints(ours.RerunWebSocketServer)["config"].model_fields
print(json.dumps({"theirs": shape(theirs.RerunWebSocketServer), "ours": shape(ours.RerunWebSocketServer),
                  "missing": sorted(set(BridgeConfig.__struct_fields__) - set(module_fields)),
                  "profile": {n: module_fields[n].default for n in ("stop_movement", "click_frame",
                                                                     "max_goal_distance", "max_goal_height")},
                  "spec": ours.RerunWebSocketServerSpec.__module__}))
"""
    run = subprocess.run([str(dimos_python), "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=ANSWER_TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.splitlines()[-1])
    assert found["ours"] == found["theirs"]
    assert found["ours"]["streams"] == {
        "clicked_point": "Out[dimos.msgs.geometry_msgs.PointStamped]",
        "tele_cmd_vel": "Out[dimos.msgs.geometry_msgs.Twist]",
    }
    assert (found["ours"]["host"], found["ours"]["port"]) == ("127.0.0.1", 3030)
    assert found["missing"] == []
    assert found["profile"] == {
        "stop_movement": "off", "click_frame": "frame_id",
        "max_goal_distance": 500.0, "max_goal_height": 50.0,
    }
    assert found["spec"] == "dimos.visualization.rerun.spec"


def test_viewer_bridge_dimos_names_the_extra_when_dimos_is_missing() -> None:
    """In a venv without DimOS, importing the module fails on DimOS itself, not somewhere obscure."""
    run = subprocess.run([sys.executable, "-c", "import viewer_bridge.dimos"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert "viewer-bridge[dimos]" in run.stderr, run.stderr[-2000:]


def test_the_module_lifecycle_and_its_errors(dimos_python: Path, dimos_env: dict[str, str], tmp_path: Path) -> None:
    """Start, URL, stop, no restart (as DimOS's module); a taken port and bad settings fail with their name."""
    script = """
import json, socket
from viewer_bridge.dimos import RerunWebSocketServer

def error(call):
    try:
        call()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None

out = {}
module = RerunWebSocketServer(port=0)
out["bound_port_before_start"] = error(lambda: module.bound_port)
module.start()
out["url"] = module.websocket_url()
out["bound_port"] = module.bound_port
module.start()  # already started: nothing happens
module.stop()
module.stop()  # idempotent
out["restart"] = error(module.start)
with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    busy = RerunWebSocketServer(port=port)
    out["port_taken"] = error(busy.start)
    busy.stop()
out["bad_limit"] = error(lambda: RerunWebSocketServer(max_linear_x=-1.0))
out["bad_choice"] = error(lambda: RerunWebSocketServer(stop_movement="never"))
out["unknown"] = error(lambda: RerunWebSocketServer(speed=1))
out["frame"] = RerunWebSocketServer(frame_id="map").bridge_config.frame_id
print(json.dumps(out))
"""
    run = subprocess.run([str(dimos_python), "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env=dimos_env, timeout=ANSWER_TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["bound_port_before_start"] == "RuntimeError: RerunWebSocketServer is not listening; call start() first"
    assert out["url"] == f"ws://127.0.0.1:{out['bound_port']}/ws"
    assert out["restart"].startswith("RuntimeError: this RerunWebSocketServer was stopped")
    assert out["port_taken"].startswith("BindError: ") and "127.0.0.1:" in out["port_taken"], out["port_taken"]
    assert out["bad_limit"].startswith("ConfigError: ") and "max_linear_x" in out["bad_limit"], out["bad_limit"]
    assert "stop_movement" in out["bad_choice"], out["bad_choice"]
    assert "speed" in out["unknown"], out["unknown"]
    assert out["frame"] == "map"

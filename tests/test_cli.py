"""The ``viewer-bridge serve`` command as a user runs it: banner, echo, config layering, signals, errors."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import twist, until_closed


class Serve:
    """A ``python -m viewer_bridge serve`` child process with its output read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "viewer_bridge", "serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        for stream, sink in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True).start()

    @staticmethod
    def _pump(stream: IO[str], sink: queue.Queue[str]) -> None:
        for line in stream:
            sink.put(line.rstrip("\n"))

    def wait_stderr(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        regex = re.compile(pattern)
        while True:
            try:
                line = self.stderr.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no stderr line matching {pattern!r}; saw {self.stderr_lines}") from None
            self.stderr_lines.append(line)
            match = regex.search(line)
            if match:
                return match

    def stdout_line(self, timeout: float = 10.0) -> str:
        return self.stdout.get(timeout=timeout)

    def url(self) -> str:
        return self.wait_stderr(r"--ws-url (ws://\S+)").group(1)

    def finish(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def serve() -> Iterator[type[Serve]]:
    started: list[Serve] = []

    class Tracked(Serve):
        def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
            super().__init__(*args, env=env)
            started.append(self)

    yield Tracked
    for proc in started:
        proc.kill()


def test_echo_json_lines_and_sigterm_stops_the_driver(serve: type[Serve]) -> None:
    srv = serve("--port", "0", "--echo", "json")
    url = srv.url()
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws", url)
    assert not url.endswith(":0/ws")
    with connect(url, open_timeout=5) as ws:
        ws.send(twist(linear_x=0.5, angular_z=0.8))
        ws.send('{"type":"click","x":1,"y":2,"z":0.5,"timestamp_ms":1764000000500}')
        assert json.loads(srv.stdout_line()) == {"stream": "stop_movement", "type": "std_msgs.Bool", "data": True}
        assert json.loads(srv.stdout_line()) == {
            "stream": "tele_cmd_vel",
            "type": "geometry_msgs.Twist",
            "linear": [0.5, 0.0, 0.0],
            "angular": [0.0, 0.0, 0.8],
        }
        assert json.loads(srv.stdout_line()) == {
            "stream": "clicked_point",
            "type": "geometry_msgs.PointStamped",
            "x": 1.0,
            "y": 2.0,
            "z": 0.5,
            "ts": 1764000000.5,
            "frame_id": "world",
        }
        # Shutting down while this client drives: clients closed with 1001,
        # one zero twist published, exit status 0.
        assert srv.finish() == 0
        with pytest.raises(ConnectionClosed) as closed:
            until_closed(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert json.loads(srv.stdout_line()) == {
        "stream": "tele_cmd_vel",
        "type": "geometry_msgs.Twist",
        "linear": [0.0, 0.0, 0.0],
        "angular": [0.0, 0.0, 0.0],
    }


def test_echo_text(serve: type[Serve]) -> None:
    # The link monitor would scale speeds on a loaded machine; this test is about the printed text.
    srv = serve("--port", "0", "--echo", "text", "--frame-id", "map", "--no-link-limits")
    with connect(srv.url(), open_timeout=5) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":0.5}')
        assert srv.stdout_line() == "[CLICK] 1.000,2.000,0.500 frame=map"
        ws.send(twist(linear_x=0.5))
        assert srv.stdout_line() == "[STOP_MOVEMENT] true"
        assert srv.stdout_line() == "[TWIST] linear=(0.500,0.000,0.000) angular=(0.000,0.000,0.000)"
        ws.send('{"type":"stop"}')
        assert srv.stdout_line() == "[STOP] linear=(0.000,0.000,0.000) angular=(0.000,0.000,0.000)"
    assert srv.finish() == 0


def test_python_dash_m_and_sigint(serve: type[Serve]) -> None:
    srv = serve("--port", "0")
    srv.url()
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(timeout=10) == 0


def test_config_file_env_and_flags_layer(serve: type[Serve], tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('path = "/from-file"\nframe_id = "file_frame"\nport = 0\n')
    srv = serve(
        "--config", str(config), "--frame-id", "flag_frame", "--echo", "text",
        env={"VIEWER_BRIDGE_PATH": "/from-env", "VIEWER_BRIDGE_FRAME_ID": "env_frame"},
    )
    url = srv.url()
    assert url.endswith("/from-env")
    with connect(url, open_timeout=5) as ws:
        ws.send('{"type":"click","x":1,"y":2,"z":3}')
        assert srv.stdout_line().endswith("frame=flag_frame")
    assert srv.finish() == 0


def test_unknown_config_key_is_named(serve: type[Serve], tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text("port = 0\ndeadman_timout = 2.0\n")
    srv = serve("--config", str(config))
    assert srv.proc.wait(timeout=10) == 2
    srv.wait_stderr("unknown setting 'deadman_timout'")


def test_unknown_env_var_is_named(serve: type[Serve]) -> None:
    srv = serve("--port", "0", env={"VIEWER_BRIDGE_PROT": "1"})
    assert srv.proc.wait(timeout=10) == 2
    srv.wait_stderr("VIEWER_BRIDGE_PROT")


def test_port_in_use_exits_non_zero_naming_the_address(serve: type[Serve]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        srv = serve("--port", str(port))
        assert srv.proc.wait(timeout=10) == 1
        srv.wait_stderr(f"127.0.0.1:{port}")
    # One line, said once, with the way out.
    assert srv.stderr_lines + list(iter_queue(srv.stderr)) == [
        f"viewer-bridge: cannot listen on 127.0.0.1:{port}: the port is in use (another bridge, or DimOS's own "
        "server?); stop it or choose another port with --port (0 picks a free one)"
    ]


def test_wildcard_bind_prints_a_url_per_interface(serve: type[Serve], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    srv = serve("--host", "0.0.0.0", "--port", "0", "--token-file", str(token_file))
    first = srv.wait_stderr(r"--ws-url ws://(\S+?):(\d+)/ws\?token=<your token>")
    assert first.group(1) == "127.0.0.1"
    assert srv.finish() == 0
    everything = "\n".join(srv.stderr_lines) + "\n" + "\n".join(iter_queue(srv.stderr))
    assert "s3cret-token-0123456789" not in everything


def iter_queue(q: queue.Queue[str]) -> Iterator[str]:
    while True:
        try:
            yield q.get_nowait()
        except queue.Empty:
            return


def test_wildcard_bind_without_token_refuses(serve: type[Serve]) -> None:
    srv = serve("--host", "0.0.0.0", "--port", "0")
    assert srv.proc.wait(timeout=10) == 2
    srv.wait_stderr("token")

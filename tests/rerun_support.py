"""A real Rerun gRPC server in a child process, and what reached it read back, for the Rerun sink's tests.

* :class:`RerunServer` runs ``tests/rerun_server.py`` (``rr.serve_grpc``), as
  DimOS's Rerun bridge serves the robot's recording;
* :class:`RecordingTap` is a second, independent reader: Rerun's own CLI,
  ``rerun --connect URL --save FILE``, subscribes to that server and streams
  the recording to a file, which is read back with ``rerun.chunk.RrdReader``.
  The server replays what it holds to a late subscriber, so the tap may start
  at any time.

Nothing here uses viewer_bridge: a bug in the sink cannot hide behind the same
bug in the checker.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import require

SERVER_SCRIPT = Path(__file__).with_name("rerun_server.py")


def require_rerun() -> None:
    try:
        import rerun  # noqa: F401
    except ImportError as exc:
        require(False, f"rerun-sdk is not installed ({exc}); pip install -e '.[rerun]'")


def rerun_cli() -> str:
    """Rerun's CLI from the SDK in this venv (``rerun``)."""
    beside = Path(sys.executable).parent / "rerun"
    found = str(beside) if beside.is_file() else shutil.which("rerun")
    require(found is not None, "the rerun CLI (from rerun-sdk) is not installed")
    assert found is not None
    return found


def _read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what} printed nothing within {timeout} s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                raise AssertionError(f"{what} exited ({proc.wait()}) before it was ready")
            line += chunk
    return line.decode().strip()


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class RerunServer:
    """``tests/rerun_server.py`` in a child process (context manager); ``url`` once started."""

    def __init__(self, recording_id: str | None = None, *, app_id: str = "dimos", port: int = 0,
                 cloud: bool = False) -> None:
        self.recording_id = recording_id or uuid.uuid4().hex
        self.app_id = app_id
        self.port = port
        self.cloud = cloud
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RerunServer:
        require_rerun()
        argv = [sys.executable, str(SERVER_SCRIPT), "--app-id", self.app_id, "--recording-id", self.recording_id,
                "--port", str(self.port)]
        if self.cloud:
            argv.append("--cloud")
        self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            self.url = _read_line(self._proc, 60.0, "the Rerun server")
        except BaseException:
            self.stop()
            raise
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on any connection."""
        assert self._proc is not None
        self._proc.kill()
        self._proc.wait(timeout=5)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but reads nothing, as a wedged one would."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
            if self._proc.stdin is not None and self._proc.poll() is None:
                with contextlib.suppress(BrokenPipeError):
                    self._proc.stdin.close()
            _end(self._proc)
            self._proc = None

    def __enter__(self) -> RerunServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Row:
    """One logged row of an entity: its components (``Archetype:field`` -> value) and its log time (ns)."""

    log_time: int | None
    components: dict[str, Any]


class RecordingTap:
    """``rerun --connect URL --save FILE`` (context manager): the recording as the server holds it."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        self.path = directory / f"tap-{uuid.uuid4().hex[:8]}.rrd"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = directory / f"{self.path.stem}.log"

    def start(self) -> RecordingTap:
        # Its own gRPC server is bound to loopback on a free port: parallel runs never clash.
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [rerun_cli(), "--connect", self.url, "--save", str(self.path), "--bind", "127.0.0.1", "--port", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        if self._proc is not None:
            _end(self._proc, signal.SIGINT)
            self._proc = None

    def __enter__(self) -> RecordingTap:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rows(self, entity: str) -> list[Row]:
        """Every row logged to ``entity`` so far, in the order the server got them (empty while none)."""
        from rerun.chunk import RrdReader

        if not self.path.exists() or self.path.stat().st_size == 0:
            return []
        wanted = "/" + entity.strip("/")
        rows: list[Row] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no footer": the file is still being written
                for chunk in RrdReader(self.path).stream():
                    if chunk.entity_path != wanted:
                        continue
                    batch = chunk.to_record_batch()
                    names = [n for n in batch.schema.names if ":" in n]
                    times = (
                        batch.column("log_time").cast("int64").to_pylist() if "log_time" in batch.schema.names
                        else [None] * batch.num_rows
                    )
                    columns = {n: batch.column(n).to_pylist() for n in names}
                    for i in range(batch.num_rows):
                        components = {n: columns[n][i] for n in names if columns[n][i] is not None}
                        rows.append(Row(times[i], components))
        except Exception:  # a message half written at the end of the file: read again later
            return rows
        return rows

    def values(self, entity: str, component: str) -> list[Any]:
        """The ``component`` (e.g. ``TextDocument:text``) of each row of ``entity`` that has it, unwrapped
        when a row holds one instance."""
        out = []
        for row in self.rows(entity):
            if component in row.components:
                value = row.components[component]
                out.append(value[0] if isinstance(value, list) and len(value) == 1 else value)
        return out

"""Child processes of the benchmark: spawn, read one JSON line, end them by their own group.

Shared by the orchestrator (:mod:`bench.run`) and the attack scenarios
(:mod:`bench.attack`). Every child is started in a session of its own, so
ending it ends whatever it spawned, by process-group id and nothing broader.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["end_child", "kill_group", "read_json_line", "read_line", "start_child", "wait_for_text"]


def start_child(
    cmd: list[str], cwd: Path, log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A child in a session of its own, stdin and stdout piped; stderr goes to ``log``, because a full pipe
    nobody drains would block a chatty child. The parent keeps stdin open: closing it tells the child to go."""
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True
    )


def end_child(proc: subprocess.Popen[bytes]) -> None:
    """End a child of :func:`start_child` and everything it spawned, and close its pipes."""
    kill_group(proc)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def kill_group(proc: subprocess.Popen[Any], grace: float = 3.0) -> None:
    """End ``proc`` and anything it spawned: its own process group, by id (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def read_json_line(stream: IO[bytes], timeout: float) -> dict[str, Any]:
    """One JSON line from a child's stdout, or TimeoutError after ``timeout`` s."""
    parsed: dict[str, Any] = json.loads(read_line(stream, timeout))
    return parsed


def read_line(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's stdout (without its newline), or TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise TimeoutError(f"no line from child within {timeout:.0f} s")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise ConnectionError(f"child exited before a full line: {buf!r}")
            buf += chunk
    return buf.split(b"\n", 1)[0]


def wait_for_text(path: Path, needle: str, timeout: float, proc: subprocess.Popen[Any] | None = None) -> str:
    """The first line of the file at ``path`` that contains ``needle``, polling until ``timeout`` s.

    A child's stderr goes to a file rather than a pipe (a pipe nobody drains
    would block a chatty child); this is how a parent waits for a line in it.
    Raises RuntimeError if ``proc`` exits first, TimeoutError at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"child exited with {proc.returncode} before printing {needle!r} (see {path})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} did not appear in {path} within {timeout:.0f} s")
        time.sleep(0.02)

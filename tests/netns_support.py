"""Network namespaces for tests: the ``ip`` command, whether namespaces can be made, and processes run in one.

Used by the transport tests across hosts (tests/bus/transports/test_netns.py)
and the fleet's topology (tests/fleet/topology.py). A process in a namespace
speaks JSON lines on stdin/stdout; its stderr is drained so it never blocks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.bus.transports.bus_support import LineReader

REPO = Path(__file__).resolve().parents[1]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def can_make_namespaces() -> tuple[bool, str]:
    """Whether this process may make network namespaces, and if not, why."""
    if shutil.which("ip") is None:
        return False, "iproute2 ('ip') is not installed"
    if os.geteuid() != 0:
        return False, "making network namespaces needs root"
    return True, ""


class NetnsProc:
    """A process in namespace ``ns``, spoken to by JSON lines; its stdout and stderr read line by line."""

    def __init__(self, ns: str, argv: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout = LineReader(self.proc.stdout)
        self.stderr = LineReader(self.proc.stderr)

    def read(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """The next JSON line on stdout, or None if none came within ``timeout``."""
        try:
            line = self.stdout.get(timeout)
        except TimeoutError:
            return None
        if line is None:
            raise AssertionError(f"{self.name} exited with {self.proc.wait()}; stderr:\n{self.stderr_text()}")
        record: dict[str, Any] = json.loads(line)
        return record

    def expect(self, timeout: float = 30.0) -> dict[str, Any]:
        record = self.read(timeout)
        assert record is not None, f"no answer from {self.name} within {timeout} s"
        return record

    def send(self, line: str) -> dict[str, Any]:
        """Write one command line and return the answer to it."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect()

    def stderr_text(self) -> str:
        """What the process has written to stderr so far (for a failure's message)."""
        lines: list[str] = []
        while True:
            try:
                line = self.stderr.get(0.01)
            except TimeoutError:
                break
            if line is None:
                break
            lines.append(line)
        return "\n".join(lines)

    def kill(self) -> None:
        """kill -9: no shutdown code runs, the kernel closes its sockets."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def close(self, grace: float = 20.0, *, term: bool = True) -> None:
        """Ask it to quit (``quit`` on stdin, and SIGTERM unless ``term`` is false: a process that reads
        its stdin may want to finish what it does), kill it after ``grace``, close every pipe."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            if term:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in (self.stdout, self.stderr):
            reader.join()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

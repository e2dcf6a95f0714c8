"""Loopback by address, not by text: ``127.evil.example`` is a name, and what it resolves to is what counts.

The bridge runs without a token only when every address its host resolves
to is a loopback address. The test gives a child process its own view of
``/etc/hosts`` (a private mount namespace, so the rest of the machine is
untouched) in which ``127.evil.example`` resolves where the test says.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require


def serve_with_hosts(tmp_path: Path, hosts_line: str, *args: str) -> tuple[int | None, str]:
    """``viewer-bridge serve ARGS`` where /etc/hosts holds ``hosts_line``.

    Returns its exit status and stderr once it exits, or ``None`` and what it
    said once it is listening (it is stopped then).
    """
    require(os.geteuid() == 0 and shutil.which("unshare") is not None,
            "needs root and unshare(1) for a private /etc/hosts")
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{hosts_line}\n")
    serve = f"{sys.executable} -m viewer_bridge serve --port 0 {' '.join(args)}"
    script = f"mount --bind {hosts} /etc/hosts && exec {serve}"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        for line in proc.stderr:  # ends when the process exits
            lines.append(line)
            if "listening" in line:
                return None, "".join(lines)
        return proc.wait(timeout=10), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        proc.stderr.close()


@pytest.mark.netns
def test_a_name_that_looks_like_loopback_but_resolves_wide_needs_a_token(tmp_path: Path) -> None:
    status, err = serve_with_hosts(tmp_path, "0.0.0.0 127.evil.example", "--host", "127.evil.example")
    assert status == 2, err
    assert "refusing to listen on 127.evil.example" in err and "0.0.0.0" in err


@pytest.mark.netns
def test_a_name_that_resolves_to_loopback_needs_none(tmp_path: Path) -> None:
    status, err = serve_with_hosts(tmp_path, "127.0.0.5 robot-loopback.example", "--host", "robot-loopback.example")
    assert status is None and "refusing" not in err, err


def test_the_textual_check_is_gone() -> None:
    from viewer_bridge.config import BridgeConfig

    assert not BridgeConfig(host="127.evil.example").is_loopback
    assert BridgeConfig(host="127.0.0.2").is_loopback and BridgeConfig(host="::1").is_loopback
    assert not BridgeConfig(host="0.0.0.0").is_loopback

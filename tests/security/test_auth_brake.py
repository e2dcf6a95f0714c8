"""Token guessing: a brake per address, one summary line instead of one per guess, and no weak tokens."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BridgeFactory, wait_until
from tests.security.conftest import TOKEN, get


def test_after_ten_wrong_tokens_an_address_gets_429_without_a_comparison(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(token=TOKEN)
    port = server.bound_port or 0
    statuses = [get(port, f"/healthz?token=guess-{i:012d}", source="127.0.0.2").status for i in range(10)]
    assert statuses == [401] * 10
    braked = get(port, "/healthz?token=guess-again-000000", source="127.0.0.2")
    assert braked.status == 429
    assert 1 <= int(braked.headers["retry-after"]) <= 60
    # The right token is not even looked at from a braked address...
    assert get(port, f"/healthz?token={TOKEN}", source="127.0.0.2").status == 429
    assert get(port, "/ws", source="127.0.0.2", extra=f"Authorization: Bearer {TOKEN}\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n").status == 429
    # ...while another address is unaffected.
    assert get(port, f"/healthz?token={TOKEN}", source="127.0.0.3").status == 200
    snapshot = server.snapshot()
    assert snapshot.auth_failures == 10
    assert snapshot.http_refused[429] == 3


def test_the_brake_lets_go_when_the_failures_leave_the_window(bridge_factory: BridgeFactory) -> None:
    server, _ = bridge_factory(token=TOKEN, auth_failures=3, auth_window=0.5)
    port = server.bound_port or 0
    for _ in range(3):
        assert get(port, "/healthz", source="127.0.0.2").status == 401
    assert get(port, f"/healthz?token={TOKEN}", source="127.0.0.2").status == 429
    wait_until(lambda: get(port, f"/healthz?token={TOKEN}", source="127.0.0.2").status == 200, timeout=10,
               what="the brake to let go")


def test_guessing_is_logged_as_a_summary(bridge_factory: BridgeFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="viewer_bridge")
    server, _ = bridge_factory(token=TOKEN)
    port = server.bound_port or 0
    for i in range(200):
        get(port, f"/status?token={TOKEN[:-4]}{i:04d}", source="127.0.0.2")
    lines = [r.getMessage() for r in caplog.records if "HTTP 4" in r.getMessage()]
    # One line per status (401 for the first ten, 429 after) while the guesses go on, not one per guess.
    assert 1 <= len(lines) <= 4, lines
    assert any("HTTP 401 from 127.0.0.2" in line for line in lines) and any("HTTP 429" in line for line in lines)
    assert not [r for r in caplog.records if TOKEN[:-4] in r.getMessage()]


def test_a_short_token_is_refused_at_start(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("hunter2\n")
    result = subprocess.run(
        [sys.executable, "-m", "viewer_bridge", "serve", "--port", "0", "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "7 characters long; use at least 16" in result.stderr and "viewer-bridge token" in result.stderr
    assert "hunter2" not in result.stderr
    environment = {**os.environ, "VIEWER_BRIDGE_TOKEN": "hunter2"}
    result = subprocess.run(
        [sys.executable, "-m", "viewer_bridge", "serve", "--port", "0"],
        capture_output=True, text=True, timeout=30, env=environment,
    )
    assert result.returncode == 2 and "use at least 16" in result.stderr and "hunter2" not in result.stderr


def test_viewer_bridge_token_prints_a_strong_token() -> None:
    from viewer_bridge.core.auth import parse_tokens_file

    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "viewer_bridge", "token", *args], capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout.strip()

    first, second = run(), run()
    assert first != second
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", first)  # 32 random bytes, URL-safe: fits in ?token= as it is
    line = run("--name", "field-laptop", "--role", "stop")
    [entry] = parse_tokens_file(line, "the output")
    assert (entry.name, entry.role.value, len(entry.secret)) == ("field-laptop", "stop", 43)

"""Fixtures for the browser page: headless Debian Chromium via Playwright, and a real Rerun gRPC server.

Chromium is Debian's ``/usr/bin/chromium`` (or ``$TEST_CHROMIUM``; Playwright's own builds
are never downloaded). Each test module gets one browser; each test a fresh
context and page. All browser tests share one xdist worker so that at most
one Chromium runs per test session.
"""

from __future__ import annotations

import importlib.util
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import require, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, WebSocket

# Not VIEWER_BRIDGE_*: the bridge refuses unknown settings in its environment.
CHROMIUM = os.environ.get("TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    # Tests run as root, where Chromium's sandbox cannot start.
    "--no-sandbox",
    # WebGL on the CPU (no GPU here): what the Rerun viewer renders with.
    "--enable-unsafe-swiftshader",
    # The network is closed; no background fetches to wait for or fail.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Run as a module from the repository's root, so the scene can share tests/rerun_server.py's helpers.
SCENE_COMMAND = (sys.executable, "-m", "tests.server.web.rerun_scene")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install '.[test]')")
    path = shutil.which(CHROMIUM)
    require(path is not None, f"{CHROMIUM} is not installed (apt-get install chromium; make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, has_touch=True)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


class SentFrames:
    """Every WebSocket frame the page sends, decoded, in order."""

    def __init__(self, page: Page) -> None:
        import json

        self.items: list[dict[str, Any]] = []
        self._json = json

        def on_socket(ws: WebSocket) -> None:
            ws.on("framesent", self._add)

        page.on("websocket", on_socket)

    def _add(self, payload: str | bytes) -> None:
        self.items.append(self._json.loads(payload))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.items if m["type"] == kind]

    def types(self) -> list[str]:
        return [m["type"] for m in self.items]


def open_page(context: BrowserContext, url: str) -> tuple[Page, SentFrames]:
    """Open the bridge's page and wait until its WebSocket is connected."""
    page = context.new_page()
    frames = SentFrames(page)
    page.goto(url)
    page.wait_for_selector("#conn[data-state=open]")
    return page, frames


# Playwright's sync API delivers events (such as sent WebSocket frames) only
# while a Playwright call is running, so these waits poll through the page.
_POLL_MS = 10


def wait_for(page: Page, predicate: Callable[[], Any], what: str, timeout: float = 5.0) -> Any:
    """Poll ``predicate`` until it is truthy, or fail after ``timeout`` seconds."""
    return wait_until(predicate, timeout, _POLL_MS / 1000, what, pause=lambda s: page.wait_for_timeout(s * 1000))


def hold(page: Page, predicate: Callable[[], bool], duration: float, what: str) -> None:
    """Assert ``predicate`` stays true for ``duration`` seconds (for "nothing more is sent")."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        assert predicate(), what
        page.wait_for_timeout(_POLL_MS)
    assert predicate(), what


class RerunScene:
    """A child process serving a small 3D scene over Rerun gRPC on a free port."""

    def __init__(
        self, process: subprocess.Popen[str], url: str, box_center: tuple[float, float, float], box_half: float
    ) -> None:
        self.process = process
        self.url = url
        self.box_center = box_center
        self.box_half = box_half

    def distance_to_box(self, x: float, y: float, z: float) -> float:
        """Distance from a point to the logged box (0 inside it)."""
        outside = [max(abs(p - c) - self.box_half, 0.0) for p, c in zip((x, y, z), self.box_center, strict=True)]
        return float(sum(d * d for d in outside) ** 0.5)


@pytest.fixture(scope="module")
def rerun_scene() -> Iterator[RerunScene]:
    require(
        importlib.util.find_spec("rerun") is not None,
        "rerun-sdk is not installed (pip install -e '.[web3d]'; make test does it)",
    )
    # stderr goes to a file: a pipe nobody reads could fill and stall the child.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            SCENE_COMMAND,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], 60)
            line = process.stdout.readline().strip() if ready else ""
            if not line.startswith("rerun+http://"):
                process.kill()
                process.wait(timeout=10)
                errors.seek(0)
                tail = errors.read()[-2000:].decode("utf-8", "replace")
                raise AssertionError(f"the Rerun scene process did not start: {line!r} {tail}")
            url, center, half = line.split(" ")
            cx, cy, cz = (float(v) for v in center.split(","))
            yield RerunScene(process, url, (cx, cy, cz), float(half))
        finally:
            # Closing stdin tells the child to exit; kill it if it does not.
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()

"""Take the docs' screenshots of the browser page: ``.venv/bin/python -m tests.server.web.screenshots [NAME ...]``.

Runs a real bridge, a Rerun gRPC server with a demo room (``rerun_scene.py
--demo``) and headless Chromium, drives the page the way a person would, and
writes PNGs to ``docs/img/``. With names (``desktop``, ``phone``,
``teleop-only``, ``gamepad``, ``estop``) only those are taken; the gamepad one needs no
Rerun server and holds the test suite's fake pad (``fake_gamepad.js``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.web.conftest import CHROMIUM, CHROMIUM_ARGS, REPO, SCENE_COMMAND
from viewer_bridge import RerunWebSocketServer
from viewer_bridge.clients.client import ViewerClient

OUT = Path(__file__).resolve().parents[3] / "docs" / "img"
FAKE_PAD = Path(__file__).with_name("fake_gamepad.js")
SHOTS = ("desktop", "phone", "teleop-only", "gamepad", "estop")


def settle(page: Page, frames: int = 30) -> None:
    """Let the viewer draw a few frames (the software renderer needs them)."""
    for _ in range(frames):
        page.evaluate("() => new Promise(r => requestAnimationFrame(r))")


def desktop(browser: Browser, url: str) -> None:
    """Desktop: 3D view, driving forward-left with the keyboard."""
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.goto(url)
    page.wait_for_selector("#view3d[data-state=ready]", timeout=90_000)
    settle(page)
    page.keyboard.down("w")
    page.keyboard.down("a")
    page.wait_for_selector("#driver[data-state=self]")
    # The header's "in force" follows the bridge's next status frame (at most 10 a second).
    page.wait_for_function("document.getElementById('cmd-applied').textContent === '0.50 0.00 0.80'")
    page.screenshot(path=str(OUT / "web-desktop.png"))
    page.keyboard.up("a")
    page.keyboard.up("w")


def phone(browser: Browser, url: str) -> None:
    """Phone: 3D view on top; a tap on the map sent a goal."""
    # Scale 1: headless Chromium's device-scale emulation reports sizes
    # that disagree with each other, which skews the viewer's picking.
    page = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=1, has_touch=True, is_mobile=True
    ).new_page()
    page.goto(url)
    page.wait_for_selector("#view3d[data-state=ready]", timeout=90_000)
    settle(page)
    box = page.locator("#rerun-canvas").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5
    # A finger tap: Rerun picks what was under the touch a frame or two
    # earlier, so the finger rests for a few frames before lifting.
    touch = page.context.new_cdp_session(page)
    for _ in range(10):
        touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        page.wait_for_timeout(150)
        touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        page.wait_for_timeout(1000)
        if page.locator("#goal").is_visible():
            break
    else:
        raise SystemExit("the tap on the map sent no goal")
    settle(page)
    page.screenshot(path=str(OUT / "web-phone.png"))


def teleop_only(browser: Browser, url: str) -> None:
    """Phone, teleop only (no Rerun URL): thumb on the joystick."""
    page = browser.new_context(
        viewport={"width": 390, "height": 760}, device_scale_factor=2, has_touch=True, is_mobile=True
    ).new_page()
    page.goto(url)
    page.wait_for_selector("#conn[data-state=open]")
    stick = page.locator("#joystick").bounding_box()
    assert stick is not None
    cx, cy = stick["x"] + stick["width"] / 2, stick["y"] + stick["height"] / 2
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": cx, "y": cy}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": cx + 25, "y": cy - 55}]})
    page.wait_for_selector("#driver[data-state=self]")
    page.screenshot(path=str(OUT / "web-teleop-only.png"))
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def gamepad(browser: Browser, url: str) -> None:
    """The gamepad panel while driving: enable held, forward with a little strafe and a left turn."""
    context = browser.new_context(viewport={"width": 1280, "height": 1100}, device_scale_factor=2)
    context.add_init_script(path=str(FAKE_PAD))
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#conn[data-state=open]")
    page.evaluate("fakePad.connect({id: 'Xbox Wireless Controller (STANDARD GAMEPAD)'})")
    page.evaluate("fakePad.set({buttons: {4: true}, axes: {0: -0.3, 1: -0.8, 2: -0.45, 3: 0.05}})")
    page.wait_for_selector("#gamepad[data-state=driving]")
    # Long enough for the rate readout to fill its one-second window.
    page.wait_for_function("Number(document.getElementById('pad-sent').dataset.rate) >= 19", timeout=10_000)
    page.locator("#gamepad .help summary").click()
    page.locator("#gamepad").screenshot(path=str(OUT / "web-gamepad.png"))
    page.evaluate("fakePad.set({buttons: {4: false}})")
    context.close()


def estop(browser: Browser, url: str, ws_url: str) -> None:
    """The e-stop another operator latched, with Release being held."""
    page = browser.new_page(viewport={"width": 1000, "height": 420})
    page.goto(url)
    page.wait_for_selector("#conn[data-state=open]")
    with ViewerClient(ws_url) as panel:
        panel.estop("person in the aisle")
        page.wait_for_selector("#estop-banner:not([hidden])")
        release = page.locator("#release").bounding_box()
        assert release is not None
        page.mouse.move(release["x"] + release["width"] / 2, release["y"] + release["height"] / 2)
        page.mouse.down()
        page.wait_for_timeout(800)  # about half of the hold: the fill shows how far it is
        page.screenshot(path=str(OUT / "web-estop.png"))
        page.mouse.move(0, 0)  # slid off: cancelled, nothing released
        page.mouse.up()
        panel.estop_clear()
    page.close()


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(SHOTS))
    if unknown:
        raise SystemExit(f"no such screenshot: {', '.join(unknown)} (choose from {', '.join(SHOTS)})")
    wanted = names or list(SHOTS)
    OUT.mkdir(parents=True, exist_ok=True)
    needs_3d = bool({"desktop", "phone"} & set(wanted))
    scene = (
        subprocess.Popen(
            [*SCENE_COMMAND, "--demo"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if needs_3d
        else None
    )
    bridges: list[RerunWebSocketServer] = []
    try:
        plain = RerunWebSocketServer(port=0)
        bridges.append(plain)
        with_3d = None
        if scene is not None:
            assert scene.stdout is not None
            with_3d = RerunWebSocketServer(port=0, rerun_url=scene.stdout.readline().split(" ")[0])
            bridges.append(with_3d)
        for bridge in bridges:
            bridge.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name in wanted:
                if name == "desktop" and with_3d is not None:
                    desktop(browser, with_3d.http_url("/"))
                elif name == "phone" and with_3d is not None:
                    phone(browser, with_3d.http_url("/"))
                elif name == "teleop-only":
                    teleop_only(browser, plain.http_url("/"))
                elif name == "gamepad":
                    gamepad(browser, plain.http_url("/"))
                elif name == "estop":
                    estop(browser, plain.http_url("/"), plain.websocket_url())
                print(OUT / f"web-{name}.png")
            browser.close()
    finally:
        for bridge in bridges:
            bridge.stop()
        if scene is not None:
            assert scene.stdin is not None
            scene.stdin.close()
            scene.wait(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1:])

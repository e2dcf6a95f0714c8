"""Take the README's screenshots of the browser page: ``.venv/bin/python -m tests.server.web.screenshots``.

Runs a real bridge, a Rerun gRPC server with a demo room (``rerun_scene.py
--demo``) and headless Chromium, drives the page the way a person would, and
writes PNGs to ``docs/img/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.server.web.conftest import CHROMIUM, CHROMIUM_ARGS, SCENE_SCRIPT
from viewer_bridge import RerunWebSocketServer

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


def settle(page: Page, frames: int = 30) -> None:
    """Let the viewer draw a few frames (the software renderer needs them)."""
    for _ in range(frames):
        page.evaluate("() => new Promise(r => requestAnimationFrame(r))")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    scene = subprocess.Popen(
        [sys.executable, str(SCENE_SCRIPT), "--demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert scene.stdout is not None and scene.stdin is not None
    grpc_url = scene.stdout.readline().split(" ")[0]
    with_3d = RerunWebSocketServer(port=0, rerun_url=grpc_url)
    plain = RerunWebSocketServer(port=0)
    with_3d.start()
    plain.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

            # Desktop: 3D view, driving forward-left with the keyboard.
            desktop = browser.new_page(viewport={"width": 1280, "height": 760})
            desktop.goto(with_3d.http_url("/"))
            desktop.wait_for_selector("#view3d[data-state=ready]", timeout=90_000)
            settle(desktop)
            desktop.keyboard.down("w")
            desktop.keyboard.down("a")
            desktop.wait_for_selector("#driver[data-state=self]")
            desktop.screenshot(path=str(OUT / "web-desktop.png"))
            desktop.keyboard.up("a")
            desktop.keyboard.up("w")

            # Phone: 3D view on top; a tap on the map sent a goal.
            # Scale 1: headless Chromium's device-scale emulation reports sizes
            # that disagree with each other, which skews the viewer's picking.
            phone = browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=1, has_touch=True, is_mobile=True
            ).new_page()
            phone.goto(with_3d.http_url("/"))
            phone.wait_for_selector("#view3d[data-state=ready]", timeout=90_000)
            settle(phone)
            box = phone.locator("#rerun-canvas").bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.5
            # A finger tap: Rerun picks what was under the touch a frame or two
            # earlier, so the finger rests for a few frames before lifting.
            touch = phone.context.new_cdp_session(phone)
            for _ in range(10):
                touch.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
                phone.wait_for_timeout(150)
                touch.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
                phone.wait_for_timeout(1000)
                if phone.locator("#goal").is_visible():
                    break
            else:
                raise SystemExit("the tap on the map sent no goal")
            settle(phone)
            phone.screenshot(path=str(OUT / "web-phone.png"))

            # Phone, teleop only (no Rerun URL): thumb on the joystick.
            small = browser.new_context(
                viewport={"width": 390, "height": 760}, device_scale_factor=2, has_touch=True, is_mobile=True
            ).new_page()
            small.goto(plain.http_url("/"))
            small.wait_for_selector("#conn[data-state=open]")
            stick = small.locator("#joystick").bounding_box()
            assert stick is not None
            cx, cy = stick["x"] + stick["width"] / 2, stick["y"] + stick["height"] / 2
            cdp = small.context.new_cdp_session(small)
            cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": cx, "y": cy}]})
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": cx + 25, "y": cy - 55}]})
            small.wait_for_selector("#driver[data-state=self]")
            small.screenshot(path=str(OUT / "web-teleop-only.png"))
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
            browser.close()
    finally:
        with_3d.stop()
        plain.stop()
        scene.stdin.close()
        scene.wait(timeout=10)
    for name in ("web-desktop.png", "web-phone.png", "web-teleop-only.png"):
        print(OUT / name)


if __name__ == "__main__":
    main()

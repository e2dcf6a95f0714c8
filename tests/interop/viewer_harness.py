"""Run the real ``dimos-viewer`` headless under Xvfb and drive it with xdotool.

This module is a test harness, not a test: interop tests import it to put a
real, independent WebSocket client (the Rerun-viewer fork ``dimos-viewer``,
0.32.0a3) in front of the server under test.

Typical use::

    # tests/interop has no __init__.py: with pytest's default (prepend)
    # import mode a test module beside this file imports it by its name.
    from viewer_harness import DimosViewer, XvfbDisplay, missing_tools

    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    url = "ws://127.0.0.1:PORT/ws"
    with XvfbDisplay() as display, DimosViewer(display, url) as viewer:
        # the viewer dials the server ~15 ms after launch, long before it is
        # ready for input: wait for the server to see the connection, then
        viewer.engage_teleop()
        viewer.key_hold("w", 0.3)               # -> twist x N, then stop
        viewer.key_hold("w", 0.3, shift=True)   # -> twist (linear_x 1.0) x N, stop
        x, y = viewer.find_cloud_pixel()
        viewer.click_at(x, y)                   # -> (stop if engaged) then click

What the viewer does, as observed with this harness (see docs/protocol.md too):

* Every command is condition-polled against a deadline: the display number
  comes from ``Xvfb -displayfd``; readiness is "window exists and the 3D view
  shows the point cloud and the teleop panel is drawn" (read from
  screenshots); engaging teleop waits for the panel's green border.
* The viewer picks what is under the pointer asynchronously (GPU read-back):
  a click sent right after a pointer move is attributed to the *previous*
  pointer position. :meth:`DimosViewer.click_at` therefore moves the pointer,
  waits until the hover tooltip is drawn, and only then clicks.
* A click outside the teleop panel disengages it (the viewer sends ``stop``).
* A click that picks the same point as the previous click sends nothing:
  move at least a few pixels (3 px at the view centre is one grid point).
* Twists come once per redrawn frame (~0.1 s apart here), not at a fixed
  rate: a 0.5 s hold gave 3 twists (X key-repeat starts only after 0.66 s),
  then ``stop`` ~20 ms after the key-up. Space sends no ``stop``.
* Clicking the view centre of the default scene, (590, 296) on 1280x720,
  picks the cloud at the world origin, reproducibly (x -0.0313, y -0.0116,
  z 0.034: z is on the drawn sphere, up to :attr:`PointCloudScene.radius`).
* The viewer keeps state in ``$XDG_DATA_HOME/dimos-viewer`` even without
  ``--persist-state``; each :class:`DimosViewer` gets its own private data,
  config and runtime directories so runs never influence one another.
* Without ``--connect`` it hosts a gRPC server on 0.0.0.0:9876; the harness
  passes ``--bind 127.0.0.1 --port 0`` so parallel runs do not clash.

Only the standard library is used. External programs needed: ``Xvfb``,
``xdotool``, ImageMagick's ``import`` and ``dimos-viewer`` (see
``scripts/system-deps.sh`` and ``pip install dimos-viewer==0.32.0a3``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self, TypeVar

from tests.conftest import wait_until as poll_until

__all__ = [
    "CLOUD_RGB",
    "DimosViewer",
    "HarnessError",
    "PointCloudScene",
    "Rect",
    "Screenshot",
    "XvfbDisplay",
    "find_viewer_binary",
    "missing_tools",
    "wait_until",
]

T = TypeVar("T")

#: Colour given to every point of the default scene: a magenta that appears
#: nowhere else in the viewer's UI, so the cloud can be found in a screenshot.
CLOUD_RGB: tuple[int, int, int] = (255, 0, 255)
#: Border colour of the "Keyboard Teleop" panel while engaged (idle: #505064).
TELEOP_ENGAGED_RGB: tuple[int, int, int] = (0x3C, 0xB4, 0x4B)
TELEOP_IDLE_RGB: tuple[int, int, int] = (0x50, 0x50, 0x64)
#: Background of the hover tooltip the 3D view draws over a picked point.
TOOLTIP_BG_RGB: tuple[int, int, int] = (0x1C, 0x21, 0x23)
WINDOW_TITLE = "DimOS Viewer"


class HarnessError(RuntimeError):
    """The harness could not bring the viewer or display into the wanted state."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.05,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns a truthy value; return that value.

    Raises :class:`HarnessError` naming ``what`` once ``timeout`` seconds have
    passed (``on_timeout`` may add diagnostics to the message).
    """
    try:
        result: T = poll_until(condition, timeout, interval, what)
    except AssertionError:
        extra = on_timeout() if on_timeout else ""
        raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}{extra}") from None
    return result


def find_viewer_binary() -> str | None:
    """Path of ``dimos-viewer``: on PATH, else beside this interpreter (venv bin/)."""
    found = shutil.which("dimos-viewer")
    if found:
        return found
    beside = Path(sys.executable).parent / "dimos-viewer"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def missing_tools() -> str | None:
    """Why the viewer tests cannot run here (for ``pytest.skip``), or ``None``."""
    missing = [tool for tool in ("Xvfb", "xdotool", "import") if shutil.which(tool) is None]
    if find_viewer_binary() is None:
        missing.append("dimos-viewer (pip install dimos-viewer==0.32.0a3)")
    if not missing:
        return None
    return "missing: " + ", ".join(missing) + " (run scripts/system-deps.sh as root)"


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it after ``grace`` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    # Whatever else is left in the group (the leader may be gone already).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - kernel trouble
        raise HarnessError(f"process {proc.pid} survived SIGKILL") from exc


# --------------------------------------------------------------------------
# Geometry and screenshots
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    """An axis-aligned screen rectangle, in pixels (``x``/``y`` = top left)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def center(self) -> tuple[int, int]:
        return (self.x + self.width // 2, self.y + self.height // 2)

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x + self.width and self.y <= y < self.y + self.height


class Screenshot:
    """An RGB image of the whole X screen (a PPM from ImageMagick's ``import``)."""

    def __init__(self, width: int, height: int, rgb: bytes) -> None:
        if len(rgb) != width * height * 3:
            raise ValueError("pixel data does not match the size")
        self.width = width
        self.height = height
        self.rgb = rgb

    @classmethod
    def from_ppm(cls, data: bytes) -> Screenshot:
        """Parse a binary (P6, 8-bit) PPM."""
        fields: list[bytes] = []
        pos = 0
        while len(fields) < 4:
            while data[pos : pos + 1].isspace():
                pos += 1
            if data[pos : pos + 1] == b"#":
                pos = data.index(b"\n", pos) + 1
                continue
            end = pos
            while not data[end : end + 1].isspace():
                end += 1
            fields.append(data[pos:end])
            pos = end
        magic, width, height, maxval = (
            fields[0],
            int(fields[1]),
            int(fields[2]),
            int(fields[3]),
        )
        if magic != b"P6" or maxval != 255:
            raise ValueError(f"unsupported PPM: {magic!r} maxval {maxval}")
        pos += 1  # the single whitespace byte after maxval
        return cls(width, height, data[pos : pos + width * height * 3])

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        i = (y * self.width + x) * 3
        return (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])

    def _matches(
        self,
        x: int,
        y: int,
        rgb: tuple[int, int, int],
        tolerance: int,
        shaded: bool = False,
    ) -> bool:
        """Pixel (x, y) is ``rgb`` +/- ``tolerance`` per channel.

        ``shaded``: compare with ``rgb`` scaled to the pixel's brightness
        (factor 0.5 to 1.1), as the viewer shades the spheres it draws for
        points: a magenta cloud shows up as #C000C0 ... #F300F3.
        """
        i = (y * self.width + x) * 3
        r, g, b = self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]
        k = 1.0
        if shaded:
            norm = rgb[0] * rgb[0] + rgb[1] * rgb[1] + rgb[2] * rgb[2]
            k = (r * rgb[0] + g * rgb[1] + b * rgb[2]) / norm if norm else 0.0
            if not 0.5 <= k <= 1.1:
                return False
        return (
            abs(r - k * rgb[0]) <= tolerance and abs(g - k * rgb[1]) <= tolerance and abs(b - k * rgb[2]) <= tolerance
        )

    def count_color(
        self,
        rgb: tuple[int, int, int],
        rect: Rect | None = None,
        tolerance: int = 0,
        step: int = 1,
        shaded: bool = False,
    ) -> int:
        """How many pixels in ``rect`` (every ``step``-th) match ``rgb``.

        See :meth:`_matches` for ``tolerance`` and ``shaded``.
        """
        r = rect or Rect(0, 0, self.width, self.height)
        x_end = min(r.x + r.width, self.width)
        y_end = min(r.y + r.height, self.height)
        if tolerance == 0 and not shaded:
            needle = bytes(rgb)
            count = 0
            for y in range(max(r.y, 0), y_end, step):
                row = self.rgb[(y * self.width) * 3 : (y * self.width + self.width) * 3]
                for x in range(max(r.x, 0), x_end, step):
                    if row[x * 3 : x * 3 + 3] == needle:
                        count += 1
            return count
        return sum(
            1
            for y in range(max(r.y, 0), y_end, step)
            for x in range(max(r.x, 0), x_end, step)
            if self._matches(x, y, rgb, tolerance, shaded)
        )

    def find_solid_region_pixel(
        self,
        rgb: tuple[int, int, int],
        rect: Rect,
        tolerance: int = 30,
        radius: int = 4,
        step: int = 2,
        shaded: bool = True,
        near: tuple[int, int] | None = None,
    ) -> tuple[int, int] | None:
        """A pixel well inside the area coloured ``rgb``, or ``None``.

        Among the pixels whose whole (2*radius+1)^2 neighbourhood (corners,
        edge midpoints and centre) has the colour, the one nearest ``near``
        (default: the centroid of all matching pixels): a click there hits
        the object, not a gap or an edge.
        """
        x0, y0 = max(rect.x, radius), max(rect.y, radius)
        x1 = min(rect.x + rect.width, self.width - radius)
        y1 = min(rect.y + rect.height, self.height - radius)
        hits = [
            (x, y)
            for y in range(y0, y1, step)
            for x in range(x0, x1, step)
            if self._matches(x, y, rgb, tolerance, shaded)
        ]
        if not hits:
            return None
        if near is not None:
            cx, cy = float(near[0]), float(near[1])
        else:
            cx = sum(x for x, _ in hits) / len(hits)
            cy = sum(y for _, y in hits) / len(hits)
        offsets = [(dx, dy) for dx in (-radius, 0, radius) for dy in (-radius, 0, radius)]
        solid = [
            (x, y) for x, y in hits if all(self._matches(x + dx, y + dy, rgb, tolerance, shaded) for dx, dy in offsets)
        ]
        if not solid:
            return None
        return min(solid, key=lambda p: (p[0] - cx) ** 2 + (p[1] - cy) ** 2)


# --------------------------------------------------------------------------
# Xvfb
# --------------------------------------------------------------------------


class XvfbDisplay:
    """A private headless X server (context manager).

    The display number is chosen by Xvfb itself (``-displayfd``), which takes
    the X lock file atomically, so parallel test runs on one machine never
    clash. Readiness is Xvfb writing that number: it then accepts clients.
    """

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        depth: int = 24,
        start_timeout: float = 15.0,
        key_repeat: bool | None = None,
    ) -> None:
        """``key_repeat``: ``None`` keeps the default (on), else ``xset r on|off``."""
        self.width = width
        self.height = height
        self.depth = depth
        self.start_timeout = start_timeout
        self.key_repeat = key_repeat
        self.display: str = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> Self:
        read_fd, write_fd = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [
                    "Xvfb",
                    "-displayfd",
                    str(write_fd),
                    "-screen",
                    "0",
                    f"{self.width}x{self.height}x{self.depth}",
                    "-nolisten",
                    "tcp",
                    "-noreset",
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        try:
            number = self._read_display_number(read_fd)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(read_fd)
        self.display = f":{number}"
        if self.key_repeat is not None:
            self.run("xset", "r", "on" if self.key_repeat else "off")
        return self

    def _read_display_number(self, fd: int) -> int:
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise HarnessError(f"Xvfb gave no display number in {self.start_timeout}s" + self._log_tail())
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 64)
                if not chunk:  # Xvfb exited
                    raise HarnessError(f"Xvfb exited before it was ready{self._log_tail()}")
                buf += chunk
        return int(buf.strip())

    def _log_tail(self) -> str:
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")[-2000:]
        return f"\n--- Xvfb log ---\n{text}" if text else ""

    def stop(self) -> None:
        if self._proc is not None:
            _kill_group(self._proc, grace=2.0)
            self._proc = None
        self._log.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """A copy of ``os.environ`` with ``DISPLAY`` pointing at this server."""
        return {**os.environ, "DISPLAY": self.display}

    def run(self, *argv: str, timeout: float = 10.0) -> str:
        """Run an X client (xdotool, xset, ...) on this display; return its stdout."""
        if not self.display:
            raise HarnessError("display not started")
        done = subprocess.run(
            list(argv),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessError(
                f"{' '.join(argv)} exited {done.returncode}: " + done.stderr.decode(errors="replace").strip()
            )
        return done.stdout.decode(errors="replace")

    def xdotool(self, *args: str) -> str:
        return self.run("xdotool", *args)

    def grab(self) -> Screenshot:
        """Capture the whole screen (the viewer's window fills it)."""
        done = subprocess.run(
            ["import", "-window", "root", "-depth", "8", "ppm:-"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
        if done.returncode != 0:
            raise HarnessError(f"import failed: {done.stderr.decode(errors='replace').strip()}")
        return Screenshot.from_ppm(done.stdout)

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save the whole screen to ``path`` (format from its suffix, e.g. ``.png``)."""
        out = Path(path)
        self.run("import", "-window", "root", str(out), timeout=20)
        return out


# --------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PointCloudScene:
    """A flat square grid of points on z=0, centred on the origin, as an ASCII PLY.

    Loaded from a file, it gives the viewer a 3D view to click on without any
    data source. The default camera frames it so that it covers the middle of
    the 3D view.
    """

    points_per_side: int = 200
    spacing: float = 0.05
    rgb: tuple[int, int, int] = CLOUD_RGB
    #: World-space point radius (PLY ``radius`` property); larger than half
    #: the spacing, so the grid renders as a solid sheet without gaps.
    #: ``None`` leaves it out (the viewer then draws small, gappy points).
    radius: float | None = 0.03

    @property
    def half_extent(self) -> float:
        """Largest |x| or |y| of any point."""
        return (self.points_per_side - 1) * self.spacing / 2

    def ply(self) -> str:
        n = self.points_per_side
        r, g, b = self.rgb
        header = [
            "ply",
            "format ascii 1.0",
            f"element vertex {n * n}",
            "property float x",
            "property float y",
            "property float z",
            "property uchar red",
            "property uchar green",
            "property uchar blue",
            *(["property float radius"] if self.radius is not None else []),
            "end_header",
        ]
        half = self.half_extent
        tail = f" {self.radius}" if self.radius is not None else ""
        rows = (
            f"{i * self.spacing - half:.4f} {j * self.spacing - half:.4f} 0 {r} {g} {b}{tail}"
            for i in range(n)
            for j in range(n)
        )
        return "\n".join([*header, *rows]) + "\n"

    def write(self, path: Path) -> Path:
        path.write_text(self.ply(), encoding="ascii")
        return path


# --------------------------------------------------------------------------
# The viewer
# --------------------------------------------------------------------------


class DimosViewer:
    """The real ``dimos-viewer`` on an :class:`XvfbDisplay` (context manager).

    Entering launches it (``dimos-viewer --ws-url URL --bind 127.0.0.1
    --port 0 --window-size WxH scene.ply``, in its own process group, with
    private XDG dirs), then waits for the window and for the first rendered
    frame of the scene (:meth:`wait_ready`). Leaving kills the process group.
    Its stdout/stderr go to :attr:`log_path` (``DIMOS_DEBUG=1`` by default,
    so connection events and every publish are logged there).

    Layout facts below hold for the default 1280x720 screen, where the
    window fills the screen at (0, 0) (there is no window manager).
    """

    #: Where the 3D view is, for a 1280x720 window: left panel 200 px wide,
    #: right panel 300 px, top bars 52 px, time/streams panel 180 px.
    VIEW_MARGINS = (200, 52, 300, 180)  # left, top, right, bottom

    def __init__(
        self,
        display: XvfbDisplay,
        ws_url: str,
        *,
        scene: PointCloudScene | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        sources: Sequence[str] | None = None,
        debug: bool = True,
        ready_timeout: float = 60.0,
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        """
        ``scene``: the point cloud to load (default :class:`PointCloudScene`).
        ``sources``: what to open instead of the scene's PLY file (e.g. nothing,
        with ``extra_args=["--connect", URL]`` to a Rerun server that logs the
        same cloud); ``scene`` still says what the 3D view must show to be ready.
        ``workdir``: where the scene, the log and the viewer's private state
        go (default: a temporary directory removed on exit).
        ``ready_timeout``: deadline for window + first frame (software
        rendering on 2 busy cores can be slow).
        """
        self.display = display
        self.ws_url = ws_url
        self.scene = scene or PointCloudScene()
        self.binary = binary or find_viewer_binary()
        if self.binary is None:
            raise HarnessError("dimos-viewer not found (pip install dimos-viewer==0.32.0a3)")
        self.extra_args = list(extra_args)
        self.sources = None if sources is None else list(sources)
        self.debug = debug
        self.ready_timeout = ready_timeout
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._workdir = Path(workdir) if workdir is not None else None
        self.window_id: str = ""
        self.launched_at: float = 0.0  #: time.monotonic() at launch
        self.ready_at: float = 0.0  #: time.monotonic() when wait_ready() succeeded
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------
    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise HarnessError("viewer not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        return self.workdir / "viewer.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_text(self) -> str:
        """Everything the viewer printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (FileNotFoundError, HarnessError):
            return ""

    def _diagnostics(self) -> str:
        status = (
            "running"
            if self._proc and self._proc.poll() is None
            else (f"exited {self._proc.returncode}" if self._proc else "not started")
        )
        return f"\n--- viewer {status}; log tail ---\n{self.log_text()[-3000:]}"

    def start(self) -> Self:
        if self._workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="dimos-viewer-")
            self._workdir = Path(self._own_tmp.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        scene_path = self.scene.write(self._workdir / "scene.ply")
        env = self.display.env
        for var, sub in (
            ("XDG_DATA_HOME", "data"),
            ("XDG_CONFIG_HOME", "config"),
            ("XDG_RUNTIME_DIR", "runtime"),
        ):
            d = self._workdir / sub
            d.mkdir(mode=0o700, exist_ok=True)
            env[var] = str(d)
        env.pop("DIMOS_VIEWER_WS_URL", None)
        if self.debug:
            env["DIMOS_DEBUG"] = "1"
        else:
            env.pop("DIMOS_DEBUG", None)
        argv = [
            str(self.binary),
            "--ws-url",
            self.ws_url,
            # Its own gRPC server: loopback, ephemeral port (0.0.0.0:9876 clashes).
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--window-size",
            f"{self.display.width}x{self.display.height}",
            *self.extra_args,
            # Relative (cwd is the workdir): the entity path is then "/scene.ply".
            *([scene_path.name] if self.sources is None else self.sources),
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        self.launched_at = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            env=env,
            cwd=self._workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill the viewer's process group (SIGTERM, then SIGKILL after 2 s)."""
        if self._proc is not None:
            _kill_group(self._proc, grace=2.0)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self, signum: int = signal.SIGKILL) -> float:
        """Send ``signum`` to the viewer process itself (not its group), as a
        crash would; returns ``time.monotonic()`` taken just before the signal.

        The process is left for :meth:`stop` to reap.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise HarnessError(f"dimos-viewer is not running{self._diagnostics()}")
        sent_at = time.monotonic()
        os.kill(self._proc.pid, signum)
        return sent_at

    # -- what the viewer says it did (needs debug=True: DIMOS_DEBUG=1) --------
    def published(self) -> dict[str, int]:
        """How many twists and stops the viewer has logged as published so far.

        Keys ``"twist"`` and ``"stop"``. Clicks are not logged by 0.32.0a3, so
        they are not counted. With :attr:`debug` off this is always zero.
        """
        text = self.log_text()
        return {
            "twist": text.count("[DIMOS_DEBUG] Published twist:"),
            "stop": text.count("[DIMOS_DEBUG] Published stop command"),
        }

    def connections(self) -> int:
        """How many times the viewer has logged connecting to its WebSocket URL."""
        return self.log_text().count("[DIMOS_DEBUG] WsPublisher: connected to ")

    def _check_alive(self) -> None:
        if not self.is_running():
            raise HarnessError(f"dimos-viewer is not running{self._diagnostics()}")

    # -- readiness -----------------------------------------------------------
    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait for the window, then for a frame showing the cloud and teleop panel."""
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)

        def window() -> str | None:
            self._check_alive()
            found = subprocess.run(
                ["xdotool", "search", "--name", f"^{WINDOW_TITLE}$"],
                env=self.display.env,
                capture_output=True,
                timeout=10,
                check=False,
            )
            ids = found.stdout.decode().split()
            return ids[0] if ids else None

        self.window_id = wait_until(
            window,
            max(deadline - time.monotonic(), 0),
            "the viewer's window",
            interval=0.1,
            on_timeout=self._diagnostics,
        )
        self.park_pointer()

        def drawn() -> bool:
            self._check_alive()
            shot = self.display.grab()
            return (
                shot.count_color(self.scene.rgb, self.view_rect, tolerance=30, step=4, shaded=True) > 200
                and shot.count_color(TELEOP_IDLE_RGB, self.teleop_rect) > 20
            )

        wait_until(
            drawn,
            max(deadline - time.monotonic(), 0),
            "the first frame of the scene",
            interval=0.2,
            on_timeout=self._diagnostics,
        )
        self.ready_at = time.monotonic()

    # -- layout ----------------------------------------------------------------
    @property
    def view_rect(self) -> Rect:
        """The 3D view (default layout)."""
        left, top, right, bottom = self.VIEW_MARGINS
        return Rect(
            left,
            top,
            self.display.width - left - right,
            self.display.height - top - bottom,
        )

    @property
    def teleop_rect(self) -> Rect:
        """The "Keyboard Teleop" panel (bottom right)."""
        return Rect(self.display.width - 140, self.display.height - 190, 140, 190)

    @property
    def teleop_engage_point(self) -> tuple[int, int]:
        """The panel's title: clicking it engages teleop."""
        return (self.display.width - 70, self.display.height - 164)

    # -- input -----------------------------------------------------------------
    def focus(self) -> None:
        """Focus the window (there is no window manager: keys go nowhere without)."""
        self._check_alive()
        self.display.xdotool("windowfocus", "--sync", self.window_id)

    def park_pointer(self) -> None:
        """Move the pointer to an inert spot (empty left panel): nothing is hovered."""
        self.display.xdotool("mousemove", "100", "170")

    def teleop_engaged(self, shot: Screenshot | None = None) -> bool:
        """Whether the teleop panel shows its green "engaged" border."""
        shot = shot or self.display.grab()
        return shot.count_color(TELEOP_ENGAGED_RGB, self.teleop_rect) > 20

    def engage_teleop(self, timeout: float = 20.0, reclick_after: float = 6.0) -> None:
        """Click the teleop panel's title and wait for its green border; focus the window.

        A click on the title TOGGLES teleop, and the border turns green only
        when the viewer next redraws (seconds later on a loaded machine). So
        this clicks once, then only moves the pointer by a pixel to make the
        viewer redraw, and clicks again only if ``reclick_after`` seconds
        passed with no green (the first click came too early): re-clicking
        sooner could toggle it straight back off.
        """
        self.focus()
        if self.teleop_engaged():
            return
        x, y = self.teleop_engage_point
        self.display.xdotool("mousemove", str(x), str(y), "click", "1")
        clicked_at = time.monotonic()
        nudge = 0

        def engaged() -> bool:
            nonlocal clicked_at, nudge
            self._check_alive()
            if self.teleop_engaged():
                return True
            if time.monotonic() - clicked_at > reclick_after:
                self.display.xdotool("mousemove", str(x), str(y), "click", "1")
                clicked_at = time.monotonic()
            else:
                nudge ^= 1  # a pointer move makes the viewer repaint; it never toggles
                self.display.xdotool("mousemove", str(x + nudge), str(y))
            return False

        wait_until(
            engaged,
            timeout,
            "teleop to engage",
            interval=0.1,
            on_timeout=self._diagnostics,
        )

    def disengage_teleop(self, timeout: float = 10.0) -> None:
        """Click an inert spot outside the panel (the viewer sends ``stop``); wait
        for the border to lose its green."""
        if not self.teleop_engaged():
            return
        self.display.xdotool("mousemove", "100", "170", "click", "1")
        wait_until(
            lambda: not self.teleop_engaged(),
            timeout,
            "teleop to disengage",
            interval=0.1,
            on_timeout=self._diagnostics,
        )

    def key_down(self, *keys: str) -> None:
        """Press keys (xdotool names: ``w``, ``shift``, ``space``) and hold them."""
        self.focus()
        self.display.xdotool("keydown", *keys)

    def key_up(self, *keys: str) -> None:
        self.display.xdotool("keyup", *keys)

    def key_hold(self, key: str, seconds: float, shift: bool = False) -> None:
        """Hold ``key`` (with Shift if asked) for ``seconds``, then release it.

        Releasing the last key makes the viewer send ``stop``. Twists arrive
        once per redrawn frame while held (roughly every 0.1 s here), not at
        a fixed rate.
        """
        keys = ["shift", key] if shift else [key]
        self.key_down(*keys)
        try:
            time.sleep(seconds)
        finally:
            self.key_up(*reversed(keys))

    def _tooltip_pixels(self, shot: Screenshot | None = None) -> int:
        """Pixels of the 3D view in the hover tooltip's background colour."""
        shot = shot or self.display.grab()
        return shot.count_color(TOOLTIP_BG_RGB, self.view_rect, step=2)

    def click_at(self, x: int, y: int, *, wait_hover: bool = True, timeout: float = 10.0) -> None:
        """Left-click at screen pixel (x, y).

        The viewer resolves what is under the pointer a few frames late; a
        click sent at once would be attributed to the previous pointer
        position. So with ``wait_hover`` (the default; for clicks on
        something in the 3D scene) this parks the pointer, moves it to
        (x, y) and waits until the hover tooltip appears in the 3D view
        before clicking. For clicks on UI or on empty sky (no tooltip ever
        appears) pass ``wait_hover=False``: then nothing proves the viewer
        has seen the pointer move.
        """
        self._check_alive()
        # A click outside the teleop panel disengages it, but the panel keeps
        # its green border until the viewer redraws: wait for that, or a
        # following engage_teleop() would see the stale border and not click.
        was_engaged = not self.teleop_rect.contains(x, y) and self.teleop_engaged()
        if wait_hover:
            self.park_pointer()
            baseline = self._tooltip_pixels()
        self.display.xdotool("mousemove", str(x), str(y))
        if wait_hover:
            wait_until(
                lambda: self._tooltip_pixels() - baseline > 500,
                timeout,
                f"the hover tooltip at ({x}, {y}) (is there an entity under it?)",
                interval=0.05,
                on_timeout=self._diagnostics,
            )
        self.display.xdotool("click", "1")
        if was_engaged:
            wait_until(
                lambda: not self.teleop_engaged(),
                timeout,
                "teleop to disengage after a click outside its panel",
                interval=0.05,
                on_timeout=self._diagnostics,
            )

    def find_cloud_pixel(self, timeout: float = 10.0) -> tuple[int, int]:
        """A screen pixel of the 3D view that hits the point cloud.

        Parks the pointer (so no hover highlight or tooltip is drawn), then
        picks the pixel nearest the centre of the 3D view that lies well
        inside the area drawn in the scene's colour. With the default scene
        and camera that is the view centre itself, (590, 296) on 1280x720,
        which hits the cloud at the world origin (observed click: x, y within
        0.05 of 0, z = up to the point radius, 0.03).
        """
        self.park_pointer()
        centre = self.view_rect.center

        def look() -> tuple[int, int] | None:
            self._check_alive()
            return self.display.grab().find_solid_region_pixel(self.scene.rgb, self.view_rect, near=centre)

        return wait_until(
            look,
            timeout,
            "the point cloud on screen",
            interval=0.2,
            on_timeout=self._diagnostics,
        )

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save what the viewer drew (whole screen) to ``path``."""
        return self.display.screenshot(path)

"""The Rerun web viewer (``re_viewer.js`` + ``re_viewer_bg.wasm``), taken from the installed rerun-sdk.

The browser page embeds the Rerun viewer when a Rerun gRPC URL is configured.
Its two files are served from the bridge's own origin because the page must
work offline (no CDN) and because Rerun's own web server
(``rr.serve_web_viewer``) sends no CORS headers, so a page on another port
could not load them.

Where the files live depends on how the wheel was built. Some wheels ship
them as ``rerun/web_viewer.zip``; the PyPI wheels embed them in the
``rerun_bindings`` extension module, with no Python call that returns them.
For that case a short-lived child process starts the SDK's own web-viewer
server on a random port, downloads the two files over loopback and exits
(~0.3 s; the SDK binds that server on all interfaces, so for that moment the
viewer's public files are reachable from the network too).
Either way the files are read once per process and kept in memory (one copy
shared by every bridge in the process, ~43 MB for the Wasm plus a gzip copy
of ~15 MB made in the background for clients that accept it).

rerun-sdk is an optional dependency (``pip install 'viewer-bridge[web3d]'``):
without it the page runs without its 3D view.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final

__all__ = ["FILES", "RerunAssets", "RerunAssetsError", "load", "rerun_version"]

log = logging.getLogger("viewer_bridge.server.web")

FILES: Final = {
    "re_viewer.js": "text/javascript; charset=utf-8",
    "re_viewer_bg.wasm": "application/wasm",
}
# Extracting takes ~0.3 s; this only bounds a wedged child.
_EXTRACT_TIMEOUT: Final = 60.0
_WASM_MAGIC: Final = b"\x00asm"

# Run by the child process: serve the embedded viewer, find the port it got
# (the SDK binds port 0 but does not say which port it picked), fetch the
# files and write them to stdout as "<length>\n<bytes>" records.
_EXTRACT_SCRIPT: Final = """
import sys, time, urllib.request
import psutil, rerun_bindings
rerun_bindings.serve_web_viewer(web_port=0, open_browser=False, connect_to=None)
me = psutil.Process()
deadline = time.monotonic() + 20.0
port = None
while port is None:
    listening = [c.laddr.port for c in me.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    if listening:
        port = listening[0]
    elif time.monotonic() > deadline:
        sys.exit("the Rerun web-viewer server did not start listening")
    else:
        time.sleep(0.01)
# No proxy: the server is on this machine, whatever http_proxy says.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
out = sys.stdout.buffer
for name in sys.argv[1:]:
    with opener.open(f"http://127.0.0.1:{port}/{name}", timeout=30) as response:
        body = response.read()
    out.write(b"%d\\n" % len(body))
    out.write(body)
out.flush()
"""


class RerunAssetsError(RuntimeError):
    """The Rerun web viewer's files could not be had; the message says why and what to do."""


@dataclass
class RerunAssets:
    """The viewer's files by name, for one rerun-sdk ``version``."""

    version: str
    files: dict[str, bytes]
    gzipped: dict[str, bytes] = field(default_factory=dict)
    """Filled in the background; a name appears here once its gzip copy is complete."""

    def start_compressing(self) -> None:
        thread = threading.Thread(target=self._compress, name="viewer-bridge-gzip", daemon=True)
        thread.start()

    def _compress(self) -> None:
        # Level 1: the Wasm shrinks ~3x either way and level 6 costs four
        # times the CPU, which matters on a robot's small computer.
        for name, body in self.files.items():
            self.gzipped[name] = gzip.compress(body, compresslevel=1, mtime=0)


_lock = threading.Lock()
_loaded: RerunAssets | None = None
_failed: RerunAssetsError | None = None


def rerun_version() -> str | None:
    """The installed rerun-sdk's version, or None when it is not installed."""
    if importlib.util.find_spec("rerun_bindings") is None:
        return None
    try:
        return metadata.version("rerun-sdk")
    except metadata.PackageNotFoundError:
        return None


def load() -> RerunAssets:
    """The viewer's files, read on the first call and cached for the life of the process.

    Raises :class:`RerunAssetsError` (every time, without retrying) if they cannot be had.
    """
    global _loaded, _failed
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failed is not None:
            raise _failed
        try:
            _loaded = _read()
        except RerunAssetsError as exc:
            _failed = exc
            raise
        _loaded.start_compressing()
        return _loaded


def _read() -> RerunAssets:
    version = rerun_version()
    if version is None:
        raise RerunAssetsError(
            "rerun-sdk is not installed, so the page has no 3D view: pip install 'viewer-bridge[web3d]'"
        )
    spec = importlib.util.find_spec("rerun")
    archive = None
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "web_viewer.zip"
        archive = candidate if candidate.is_file() else None
    files = _read_zip(archive) if archive is not None else _extract_embedded()
    wasm = files["re_viewer_bg.wasm"]
    if not wasm.startswith(_WASM_MAGIC) or b"wasm_bindgen" not in files["re_viewer.js"]:
        raise RerunAssetsError(f"the Rerun web viewer files from rerun-sdk {version} are not what was expected")
    log.info("Rerun web viewer %s loaded (%.1f MB)", version, sum(map(len, files.values())) / 1e6)
    return RerunAssets(version, files)


def _read_zip(path: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename.rsplit("/", 1)[-1]
                if name in FILES and name not in files:
                    files[name] = archive.read(info)
    except (OSError, zipfile.BadZipFile) as exc:
        raise RerunAssetsError(f"cannot read the Rerun web viewer from {path}: {exc}") from None
    missing = sorted(set(FILES) - set(files))
    if missing:
        raise RerunAssetsError(f"{path} has no {', '.join(missing)}")
    return files


def _extract_embedded() -> dict[str, bytes]:
    names = list(FILES)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _EXTRACT_SCRIPT, *names],
            capture_output=True,
            timeout=_EXTRACT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RerunAssetsError(f"cannot extract the Rerun web viewer from rerun-sdk: {exc}") from None
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RerunAssetsError(
            f"extracting the Rerun web viewer from rerun-sdk failed (exit {result.returncode}): {' | '.join(tail)}"
        )
    files: dict[str, bytes] = {}
    data = memoryview(result.stdout)
    pos = 0
    for name in names:
        end = bytes(data[pos : pos + 20]).find(b"\n")
        if end < 0:
            raise RerunAssetsError("extracting the Rerun web viewer: truncated output")
        size = int(bytes(data[pos : pos + end]))
        start = pos + end + 1
        if start + size > len(data):
            raise RerunAssetsError("extracting the Rerun web viewer: truncated output")
        files[name] = bytes(data[start : start + size])
        pos = start + size
    return files

"""The browser client's files, served by the bridge from its own origin at ``/``.

Files are read from this package once and kept in memory: the page is a few
kilobytes and must work offline (no CDN), so everything it needs ships here.
"""

from __future__ import annotations

import mimetypes
from importlib import resources
from typing import Final

from viewer_bridge.config import BridgeConfig

__all__ = ["StaticFiles"]

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wasm": "application/wasm",
}


class StaticFiles:
    """Maps a request path to ``(body, content type)``, or ``None`` when there is no such file."""

    def __init__(self, config: BridgeConfig) -> None:
        self._config = config
        self._cache: dict[str, tuple[bytes, str] | None] = {}
        self._root = resources.files(__package__).joinpath("static")

    def __call__(self, path: str) -> tuple[bytes, str] | None:
        if path in self._cache:
            return self._cache[path]
        found = self._load(path)
        # Cache misses too, but only for names that look like ours, so a
        # scanner walking random paths cannot grow the cache without bound.
        if found is not None or len(self._cache) < 256:
            self._cache[path] = found
        return found

    def _load(self, path: str) -> tuple[bytes, str] | None:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        if not name or "/" in name or name.startswith("."):
            return None
        entry = self._root.joinpath(name)
        if not entry.is_file():
            return None
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = entry.read_bytes()
        if name == "index.html":
            body = body.replace(b"__VIEWER_BRIDGE_CONFIG__", self._page_config())
        return body, content_type

    def _page_config(self) -> bytes:
        import json

        return json.dumps(
            {"wsPath": self._config.path, "rerunUrl": self._config.rerun_url}, separators=(",", ":")
        ).encode("utf-8")

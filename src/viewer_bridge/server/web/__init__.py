"""The browser client's files, served by the bridge from its own origin at ``/``.

Files are read from this package once and kept in memory: the page is a few
kilobytes and must work offline (no CDN), so everything it needs ships here.
When a Rerun gRPC URL is configured and rerun-sdk is installed, the Rerun web
viewer's two files are served too, under ``/rerun/<version>/`` (see
:mod:`viewer_bridge.server.web.rerun_assets`).

The page's settings (the WebSocket path, the Rerun URL) are written into
``index.html``, unless the bridge has tokens (``protected``): then the page
is a shell that carries none of them, and asks ``/config`` for them with
the token (see :mod:`viewer_bridge.server.http`). The scripts, the style
sheet and Rerun's own files hold no settings and are served to anyone.
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Mapping
from importlib import resources
from typing import Final

from viewer_bridge.config import BridgeConfig, ConfigError
from viewer_bridge.extras import missing_extra
from viewer_bridge.server.web import rerun_assets

__all__ = ["StaticFiles"]

log = logging.getLogger(__name__)

_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".wasm": "application/wasm",
}
# The page and its scripts change with the bridge (and the page carries its
# config), so browsers must not keep them. The Rerun files live under a path
# that names the rerun-sdk version, so they can be kept for good: without
# that a phone would download ~15-43 MB on every visit.
_NO_STORE: Final = "no-store"
_IMMUTABLE: Final = "public, max-age=31536000, immutable"
_RERUN_PREFIX: Final = "/rerun/"
# The page drives a robot: no other site may frame it (clickjacking a STOP or
# a drive), and its URL may carry the token, which must not leak as a Referer.
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class StaticFiles:
    """Maps a request path to a response body and headers, or ``None`` when there is no such file."""

    def __init__(self, config: BridgeConfig, protected: bool = False) -> None:
        self._config = config
        self._protected = protected
        self._cache: dict[str, tuple[bytes, str] | None] = {}
        self._root = resources.files(__package__).joinpath("static")
        self._rerun: rerun_assets.RerunAssets | None = None
        self._rerun_problem: str | None = None
        if config.rerun_url:
            # Asked for a 3D view without the package that carries it: say so at
            # start rather than in the browser later.
            problem = missing_extra("web3d")
            if problem is not None:
                raise ConfigError(problem)
            # Read now, before the server listens: it takes ~0.3 s once per
            # process, and doing it here means no request ever waits for it.
            try:
                self._rerun = rerun_assets.load()
            except rerun_assets.RerunAssetsError as exc:
                self._rerun_problem = str(exc)
                log.warning("the web page will have no 3D view: %s", exc)

    @property
    def rerun_prefix(self) -> str | None:
        """Where the Rerun viewer's files are served, e.g. ``/rerun/0.41.0/``; None when they are not."""
        return f"{_RERUN_PREFIX}{self._rerun.version}/" if self._rerun is not None else None

    def respond(self, path: str, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]] | None:
        """``(body, response headers)`` for ``path``, given the request's ``headers``."""
        if path.startswith(_RERUN_PREFIX):
            return self._rerun_file(path, headers)
        if path in self._cache:
            found = self._cache[path]
        else:
            found = self._load(path)
            # Cache misses too, but only a bounded number, so a scanner walking
            # random paths cannot grow the cache without bound.
            if found is not None or len(self._cache) < 256:
                self._cache[path] = found
        if found is None:
            return None
        body, content_type = found
        return body, {"Content-Type": content_type, "Cache-Control": _NO_STORE, **_PAGE_HEADERS}

    def _rerun_file(self, path: str, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]] | None:
        prefix = self.rerun_prefix
        if self._rerun is None or prefix is None or not path.startswith(prefix):
            return None
        name = path[len(prefix) :]
        body = self._rerun.files.get(name)
        if body is None:
            return None
        out = {"Content-Type": rerun_assets.FILES[name], "Cache-Control": _IMMUTABLE, "Vary": "Accept-Encoding"}
        packed = self._rerun.gzipped.get(name)
        if packed is not None and _accepts_gzip(headers.get("accept-encoding", "")):
            out["Content-Encoding"] = "gzip"
            return packed, out
        return body, out

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

    def page_config(self) -> dict[str, object]:
        """The settings the page needs (served as ``/config``, and in the page when no token is set)."""
        return {
            "wsPath": self._config.path,
            "rerunUrl": self._config.rerun_url,
            "rerunAssets": self.rerun_prefix,
            "rerunProblem": self._rerun_problem,
            # This bridge has the latched e-stop (estop / estop_clear): the page's STOP latches it.
            "estop": True,
            # A fleet station's robots, for the page's robot picker (docs/fleet.md).
            **({"robots": sorted(self._config.robots)} if self._config.robots else {}),
        }

    def _page_config(self) -> bytes:
        # With tokens, the page says only that it must ask (with a token) for its settings.
        text = json.dumps({"auth": True} if self._protected else self.page_config(), separators=(",", ":"))
        # The JSON sits inside a <script> element: "</script>" in a URL must
        # not end it early.
        return text.replace("<", "\\u003c").encode("utf-8")


def _accepts_gzip(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False

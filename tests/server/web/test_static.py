"""The page's files over real HTTP from a bridge: config injection, offline-only references, the Rerun files."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import re
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Recorder, require, wait_until
from viewer_bridge import BridgeConfig, RerunWebSocketServer
from viewer_bridge.server.web import StaticFiles, rerun_assets

Factory = Callable[..., tuple[RerunWebSocketServer, Recorder]]
STATIC = Path(rerun_assets.__file__).with_name("static")
# No proxy: the bridge is on this machine, whatever http_proxy says.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def page_config(html: bytes) -> dict[str, object]:
    match = re.search(rb'<script id="bridge-config" type="application/json">(.*?)</script>', html, re.S)
    assert match, html[:500]
    result: dict[str, object] = json.loads(match.group(1))
    return result


def no_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> rerun_assets.RerunAssets:
        raise rerun_assets.RerunAssetsError("rerun-sdk is not installed (test)")

    monkeypatch.setattr(rerun_assets, "load", missing)


def test_page_and_its_files(bridge_factory: Factory) -> None:
    server, _ = bridge_factory()
    status, headers, body = get(server.http_url("/"))
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Cache-Control"] == "no-store"
    # No other site may frame the page (clickjacking), and the token in its URL never leaks as a Referer.
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert page_config(body) == {
        "wsPath": "/ws", "rerunUrl": None, "rerunAssets": None, "rerunProblem": None, "estop": True
    }
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        status, headers, _ = get(server.http_url(f"/{name}"))
        assert status == 200 and headers["Content-Type"].startswith(kind), (name, headers)
    # Without a Rerun URL there are no Rerun files, even when rerun-sdk is installed.
    assert get(server.http_url("/rerun/0.41.0/re_viewer.js"))[0] == 404


def test_page_loads_nothing_from_other_hosts() -> None:
    # Offline on a robot's network: no CDN, no web fonts, no remote anything.
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?:src|href)\s*=\s*[\"'](?:https?:)?//", text), path.name
        assert "@import" not in text and "url(http" not in text, path.name


def test_config_follows_the_path_and_cannot_break_out_of_its_script(monkeypatch: pytest.MonkeyPatch) -> None:
    no_rerun(monkeypatch)
    files = StaticFiles(BridgeConfig(path="/teleop", rerun_url="rerun+http://host:9876/proxy?</script><b>"))
    found = files.respond("/", {})
    assert found is not None
    body, headers = found
    assert headers["Content-Type"].startswith("text/html")
    assert body.count(b"</script>") == body.decode().count("</script>")  # no extra one injected
    config = page_config(body)
    assert config["wsPath"] == "/teleop"
    assert config["rerunUrl"] == "rerun+http://host:9876/proxy?</script><b>"
    assert config["rerunAssets"] is None
    assert "rerun-sdk is not installed" in str(config["rerunProblem"])


def test_rerun_files_are_served_from_the_bridge(bridge_factory: Factory) -> None:
    require(rerun_assets.rerun_version() is not None, "rerun-sdk is not installed (pip install -e '.[web3d]')")
    server, _ = bridge_factory(rerun_url="rerun+http://127.0.0.1:9876/proxy")
    config = page_config(get(server.http_url("/"))[2])
    prefix = config["rerunAssets"]
    assert prefix == f"/rerun/{rerun_assets.rerun_version()}/"
    status, headers, js = get(server.http_url(f"{prefix}re_viewer.js"))
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert b"wasm_bindgen" in js
    # The version is in the path, so browsers may keep the files for good.
    assert "immutable" in headers["Cache-Control"]
    status, headers, wasm = get(server.http_url(f"{prefix}re_viewer_bg.wasm"))
    assert status == 200 and headers["Content-Type"] == "application/wasm"
    assert wasm[:4] == b"\x00asm" and len(wasm) > 1_000_000
    assert "Content-Encoding" not in headers
    # Compressed copies are made in the background; once there, a client that asks gets one.
    assets = rerun_assets.load()
    wait_until(lambda: "re_viewer_bg.wasm" in assets.gzipped, timeout=60, what="the gzip copy")
    status, headers, packed = get(server.http_url(f"{prefix}re_viewer_bg.wasm"), {"Accept-Encoding": "gzip, br"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
    assert len(packed) < len(wasm) / 2 and gzip.decompress(packed) == wasm
    # Other versions and other names are not there.
    assert get(server.http_url("/rerun/0.0.1/re_viewer.js"))[0] == 404
    assert get(server.http_url(f"{prefix}index.html"))[0] == 404


def test_a_large_file_is_written_whole_and_closed_once_with_nothing_logged(
    bridge_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # The 43 MB Wasm goes out over many rounds of the transport's flow control. Closing the transport from
    # inside asyncio's own write handler (resume_writing) once the socket had taken the rest made asyncio
    # tear the connection down twice, logging an "Exception in callback" traceback for most downloads.
    require(rerun_assets.rerun_version() is not None, "rerun-sdk is not installed (pip install -e '.[web3d]')")
    server, _ = bridge_factory(rerun_url="rerun+http://127.0.0.1:9876/proxy")
    url = server.http_url(f"/rerun/{rerun_assets.rerun_version()}/re_viewer_bg.wasm")
    expected = rerun_assets.load().files["re_viewer_bg.wasm"]
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            status, headers, wasm = get(url, {"Accept-Encoding": "identity"})
            assert status == 200 and int(headers["Content-Length"]) == len(expected) and wasm == expected
        # The bridge has sent the last bytes before the client has them, and tears the connection down in
        # that same turn of its loop and the next: a request answered after that is a barrier.
        assert get(server.http_url("/healthz"))[0] == 200
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == [], [f"{r.name}: {r.getMessage()}" for r in problems]


def test_bridge_without_rerun_sdk_serves_the_page(bridge_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    no_rerun(monkeypatch)
    server, rec = bridge_factory(rerun_url="rerun+http://127.0.0.1:9876/proxy")
    config = page_config(get(server.http_url("/"))[2])
    assert config["rerunAssets"] is None and "not installed" in str(config["rerunProblem"])
    assert get(server.http_url("/app.js"))[0] == 200
    assert server.is_running and rec.twists == []


def test_assets_from_a_wheel_that_ships_a_zip(tmp_path: Path) -> None:
    archive = tmp_path / "web_viewer.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("web_viewer/re_viewer.js", "let wasm_bindgen = 1;")
        zf.writestr("web_viewer/re_viewer_bg.wasm", b"\x00asm\x01\x00\x00\x00")
        zf.writestr("web_viewer/index.html", "<html>")
    files = rerun_assets._read_zip(archive)
    assert files == {"re_viewer.js": b"let wasm_bindgen = 1;", "re_viewer_bg.wasm": b"\x00asm\x01\x00\x00\x00"}
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip")
    with pytest.raises(rerun_assets.RerunAssetsError, match="cannot read"):
        rerun_assets._read_zip(broken)


def test_extraction_fails_with_a_clear_message_when_rerun_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rerun_assets, "rerun_version", lambda: None)
    with pytest.raises(rerun_assets.RerunAssetsError, match=r"viewer-bridge\[web3d\]"):
        rerun_assets._read()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.8", True),
        ("gzip;q=0", False),
        ("identity", False),
        ("", False),
        ("GZIP", True),
    ],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    from viewer_bridge.server.web import _accepts_gzip

    assert _accepts_gzip(header) is expected


def test_rerun_sdk_is_found_when_installed() -> None:
    # make test installs the web3d extra; in CI its absence is a failure, not a skip.
    require(importlib.util.find_spec("rerun") is not None, "rerun-sdk is not installed (pip install -e '.[web3d]')")
    assert rerun_assets.rerun_version() is not None

"""A feature whose pip extra is missing says, in one line, which ``pip install`` brings it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from viewer_bridge import extras
from viewer_bridge.cli import main

ROOT = Path(__file__).resolve().parents[1]


def without(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make extra ``name`` look uninstalled: its marker module becomes one that does not exist."""
    monkeypatch.setitem(extras.EXTRAS, name, extras.EXTRAS[name]._replace(module="viewer_bridge_no_such_module"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_every_extra_named_in_a_message_exists_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.EXTRAS) <= set(declared)
    assert set(extras.EXTRAS) <= set(declared["all"][0].split("[")[1].rstrip("]").split(","))
    for name in extras.EXTRAS:
        assert extras.missing_extra(name) is None, f"make test installs every extra; {name} is missing"


@pytest.mark.parametrize(
    ("extra", "argv", "code", "message"),
    [
        ("lcm", ["serve", "--port", "0", "--transport", "lcm"], 1,
         "viewer-bridge: the LCM transport needs the lcm package: pip install 'viewer-bridge[lcm]'"),
        ("zenoh", ["serve", "--port", "0", "--transport", "zenoh"], 1,
         "viewer-bridge: the Zenoh transport needs the eclipse-zenoh package: pip install 'viewer-bridge[zenoh]'"),
        ("zenoh", ["listen", "--transport", "zenoh", "--duration", "0.1"], 1,
         "viewer-bridge: the Zenoh transport needs the eclipse-zenoh package: pip install 'viewer-bridge[zenoh]'"),
        ("web3d", ["serve", "--port", "0", "--rerun-url", "rerun+http://127.0.0.1:9876/proxy"], 2,
         "viewer-bridge: rerun_url (the page's 3D view) needs the Rerun web viewer from rerun-sdk: "
         "pip install 'viewer-bridge[web3d]'"),
        ("teleop", ["teleop", "--url", "ws://127.0.0.1:9/ws"], 2,
         "viewer-bridge teleop: the terminal teleop needs the textual package: pip install 'viewer-bridge[teleop]'"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: str,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    without(monkeypatch, extra)
    assert run(capsys, *argv) == (code, message + "\n")

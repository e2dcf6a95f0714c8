"""The package as others get it: a wheel and sdist PyPI would accept, and an install that coexists with DimOS.

Both tests reach the package index (CI has it): the build installs its
backend in isolated environments, and the coexistence check asks pip to
resolve ``dimos==0.0.15`` alone and with viewer-bridge, then compares.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

ROOT = Path(__file__).resolve().parents[1]
DIMOS = "dimos==0.0.15"
# Every extra but the test tools: what a DimOS user might add.
OURS = f"{ROOT}[all]"


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.timeout(600)
def test_wheel_and_sdist_carry_the_web_page_and_pass_twine(tmp_path: Path) -> None:
    require(_has_module("build") and _has_module("twine"), "build and twine are missing (make test installs them)")
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True, text=True, timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    needed = {
        "viewer_bridge/py.typed",
        "viewer_bridge/server/web/static/index.html",
        "viewer_bridge/server/web/static/app.js",
        "viewer_bridge/server/web/static/style.css",
    }
    assert needed <= set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"src/{name}" for name in needed} <= names
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".dist-info/METADATA"))
    ).decode()
    # Compatible ranges, never exact pins, for what the package needs (constraints.txt pins for tests).
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    assert requires and not [r for r in requires if "==" in r.split(";")[0]], requires


def _resolve(*requirements: str, report: Path) -> subprocess.Popen[str]:
    # --ignore-installed: resolve as a fresh venv would, whatever this one holds.
    return subprocess.Popen(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), *requirements],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _picked(report: Path) -> dict[str, str]:
    data: dict[str, Any] = json.loads(report.read_text())
    return {
        re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
        for item in data["install"]
    }


# Two full resolutions of DimOS's ~150 dependencies: about a minute, more on a busy machine.
@pytest.mark.timeout(900)
def test_installs_beside_dimos_without_changing_what_pip_picks_for_it(tmp_path: Path) -> None:
    runs = {
        "dimos alone": _resolve(DIMOS, report=tmp_path / "alone.json"),
        "dimos + viewer-bridge[all]": _resolve(DIMOS, OURS, report=tmp_path / "together.json"),
    }
    try:
        for name, proc in runs.items():
            out, _ = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"pip could not resolve {name}:\n{out[-3000:]}"
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    dimos_only = _picked(tmp_path / "alone.json")
    both = _picked(tmp_path / "together.json")
    assert both.get("viewer-bridge") is not None
    changed = {name: (version, both.get(name)) for name, version in dimos_only.items() if both.get(name) != version}
    assert changed == {}, f"adding viewer-bridge changed what pip picks for DimOS: {changed}"

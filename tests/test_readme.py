"""The README's Python examples run as written, and print what the README says they print."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```(?:\s*\n[^`]*?```text\n(.*?)```)?", re.S)


def examples() -> list[tuple[str, str | None]]:
    return [(match.group(1), match.group(2)) for match in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def test_the_readme_has_python_examples() -> None:
    assert examples(), "README.md has no ```python block"


@pytest.mark.parametrize(("code", "printed"), examples(), ids=lambda value: str(value)[:40])
def test_a_readme_example_runs_as_written(code: str, printed: str | None) -> None:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    if printed is not None:
        # Ports are chosen at run time; everything else must be printed as the README shows it.
        expected = re.sub(r":\d+/", ":PORT/", printed.strip())
        assert re.sub(r":\d+/", ":PORT/", result.stdout.strip()) == expected, result.stdout

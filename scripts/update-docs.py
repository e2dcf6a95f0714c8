"""Rewrite the settings tables in README.md and docs/ from the settings' own help (viewer_bridge.config).

A table is the text between ``<!-- settings-table [NAME ...] -->`` and
``<!-- /settings-table -->``; with names, only those settings are listed.
tests/test_config.py fails when a table is out of date; ``make docs`` runs this.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from viewer_bridge.config import settings_markdown

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- settings-table(?: ([\w ]+))? -->\n)(.*?)(<!-- /settings-table -->)", re.S)


def main() -> int:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")

        def table(match: re.Match[str]) -> str:
            names = match.group(2).split() if match.group(2) else None
            return match.group(1) + settings_markdown(names) + match.group(4)

        updated = BLOCK.sub(table, text)
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

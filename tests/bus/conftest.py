"""The bus tests open LCM and Zenoh handles of their own: they must leave no thread at all behind."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/bus/" in str(item.path):
            item.add_marker(pytest.mark.all_threads)

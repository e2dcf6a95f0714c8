"""Fixtures for the transport tests: no test may leave a thread behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bus.transports.bus_support import threads_end_with_test


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    yield from threads_end_with_test()

"""Fixtures for the transport tests: no test may leave a thread behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.transports.bus_support import wait_until


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    # Zenoh's callback thread and the bridge thread end shortly after close()/stop() return.
    wait_until(
        lambda: not (set(threading.enumerate()) - before),
        timeout=10.0,
        what="threads started by the test to end",
    )

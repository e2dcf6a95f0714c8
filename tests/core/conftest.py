"""``make fuzz`` reports how fast each property ran: test-function calls (examples) per second."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

import pytest


def _fuzzing() -> bool:
    return os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    handle = getattr(getattr(item, "obj", None), "hypothesis", None)
    if handle is None or not _fuzzing():
        return (yield)
    inner = handle.inner_test
    calls = 0

    # Hypothesis reads ``inner_test`` when the test runs, so wrapping it counts every example it tries.
    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return inner(*args, **kwargs)

    handle.inner_test = counted
    started = time.perf_counter()
    try:
        return (yield)
    finally:
        handle.inner_test = inner
        # user_properties travel with the report, so this works under xdist too.
        item.user_properties.append(("fuzz", (calls, time.perf_counter() - started)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    rows = []
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for key, value in getattr(report, "user_properties", ()):
                if key == "fuzz" and report.when == "call":
                    rows.append((report.nodeid.rsplit("::", 1)[-1], outcome, *value))
    if not rows:
        return
    terminalreporter.section("fuzz: examples per second")
    for name, outcome, calls, seconds in sorted(rows):
        rate = calls / seconds if seconds > 0 else 0.0
        terminalreporter.write_line(f"{name} ({outcome}): {calls} examples in {seconds:.1f} s = {rate:,.0f}/s")

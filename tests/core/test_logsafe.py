"""Client text made fit for a log line: escaped, shortened, secrets redacted; and the line throttle."""

from __future__ import annotations

import pytest

from viewer_bridge.core.logsafe import Throttle, clean, redact_target

SECRET = "correct-horse-battery-staple"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain /world/map", "plain /world/map"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("a\nINFO forged\r\n", "a\\nINFO forged\\r\\n"),
        ("tab\there", "tab\\there"),
        ("c1 \x9b31m", "c1 \\x9b31m"),
        ("bidi \u202eevil\u2066", "bidi \\u202eevil\\u2066"),
        ("line\u2028sep", "line\\u2028sep"),
        (b"bytes \xff\x1b", "bytes \\xff\\x1b"),
    ],
)
def test_control_characters_are_escaped(text: str | bytes, shown: str) -> None:
    assert clean(text) == shown


def test_long_text_is_cut_and_says_so() -> None:
    assert clean("x" * 500, limit=10) == "xxxxxxxxxx...(+490 chars)"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/ws?token=abc&x=1", "/ws?token=***&x=***"),
        (f"/ws#token={SECRET}", "/ws#token=***"),
        (f"/ws;token={SECRET}", "/ws;token=***"),
        (f"/ws&token={SECRET}", "/ws&token=***"),
        (f"/ws%3Ftoken%3D{SECRET}", "/ws?token=***"),
        (f"/ws?{SECRET}", "/ws?***"),
        (f"/ws?{SECRET}=1", "/ws?***=***"),
        (f"/{SECRET}/x", "/***/x"),
        ("/%1b%5b2J", "/\\x1b[2J"),
        ("/x%0aINFO forged", "/x\\nINFO forged"),
        ("/ws", "/ws"),
        ("/ws?robot=go2-2&token=abc", "/ws?robot=go2-2&token=***"),  # a robot's name is no secret
        ("/ws?robot=a%2Fb", "/ws?robot=***"),  # not a name's form
        (f"/ws?robot={SECRET}", "/ws?robot=***"),  # a known secret, even in a name's form
    ],
)
def test_targets_are_redacted_however_malformed(target: str, logged: str) -> None:
    assert redact_target(target, [SECRET]) == logged


def test_the_throttle_logs_once_per_interval_with_a_count() -> None:
    throttle = Throttle(interval=10.0, max_keys=2)
    assert throttle.allow("a", 0.0) == 0
    assert throttle.allow("a", 1.0) is None and throttle.allow("a", 2.0) is None
    assert throttle.allow("a", 10.0) == 2
    assert throttle.allow("b", 11.0) == 0
    assert throttle.allow("b", 12.0) is None
    assert throttle.take_pending() == {"b": 1} and throttle.take_pending() == {}
    throttle.allow("c", 13.0)  # a third key: the oldest is forgotten
    assert throttle.allow("a", 14.0) == 0

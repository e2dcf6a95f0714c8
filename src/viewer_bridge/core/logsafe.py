"""Client-supplied text made safe for a log line, and log lines that cannot be made to flood, sans I/O.

Anything a client sends (a request target, an Origin, an ``entity_path``)
may hold control characters: an ESC sequence that repaints the operator's
terminal, a newline that forges a whole log line, a bidi override that
makes one word read as another. Every such string goes through
:func:`clean` before it is logged: control and format characters are
written as ``\\xNN``/``\\uNNNN`` escapes and the text is cut to a bounded
length, so one line stays one line and a long header cannot fill the log.

Secrets are kept out of logs by :func:`redact_target`: everything after the
first ``?``, ``#``, ``;`` or ``&`` of a request target is replaced by
``key=***`` (the token travels as ``?token=`` and a mistyped ``#token=``,
``;token=`` or ``&token=`` is just as secret), the target is read
percent-decoded so ``%3Ftoken%3D`` is caught too, and any configured secret
found anywhere in what is left is replaced as well.

:class:`Throttle` says whether a recurring line may be logged now, and how
many were held back since the last one: a client that can make the bridge
log a line per request must not be able to make it log thousands a second.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable
from typing import Final
from urllib.parse import unquote

__all__ = ["LIMIT", "Throttle", "clean", "escape", "redact_target", "scrub"]

# Long enough for any real path or Origin; a hostile one is cut here.
LIMIT: Final = 160
# C0 controls, DEL, C1 controls (ESC's 8-bit twin CSI is U+009B), and the
# Unicode characters that move or reorder text: line/paragraph separators,
# bidi marks, embeddings, overrides and isolates, and the BOM.
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_DELIMITER: Final = re.compile(r"([?#;&])")
# Tokens are at least 16 characters, so a key this short and plain cannot be one.
_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,14}\Z")
# Parameters whose value names something and is shown when it has that form (a robot's name, as a fleet's
# `robots` table spells it): which robot a client chose helps whoever reads the log, and is no secret.
_NAMES: Final = {"robot": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}\Z")}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with control and format characters escaped (no shortening)."""
    return _UNSAFE.sub(_escape, text)


def clean(value: object, limit: int = LIMIT) -> str:
    """``value`` as one printable line: control characters escaped, at most ``limit`` characters of it kept."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: limit + 1]).decode("utf-8", "backslashreplace")
    else:
        text = value if isinstance(value, str) else str(value)
    extra = len(text) - limit
    if extra > 0:
        text = text[:limit]
    text = _UNSAFE.sub(_escape, text)
    return f"{text}...(+{extra} chars)" if extra > 0 else text


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def redact_target(target: str, secrets: Iterable[str] = (), limit: int = LIMIT) -> str:
    """A request target fit for a log line: parameters' values and known secrets replaced, controls escaped.

    ``/ws?token=abc&x=1`` -> ``/ws?token=***&x=***``; ``/ws#token=abc`` ->
    ``/ws#token=***``; a bare value (``/ws?abc``) becomes ``/ws?***``. A
    robot's name (``?robot=go2-1``) is shown; a known secret never is.
    """
    decoded = unquote(target, errors="backslashreplace") if "%" in target else target
    pieces = _DELIMITER.split(decoded)  # path, delimiter, item, delimiter, item, ...
    out = [pieces[0]]
    for delimiter, item in zip(pieces[1::2], pieces[2::2], strict=True):
        key, sep, value = item.partition("=")
        if not sep:
            out.append(delimiter + ("***" if item else ""))
        else:
            # A key is shown only while it is short and plain: a secret pasted as a key is not.
            name = _NAMES.get(key)
            shown = value if name is not None and name.match(value) else "***"
            out.append(delimiter + (key if _KEY.match(key) else "***") + "=" + shown)
    return clean(scrub("".join(out), secrets), limit)


class Throttle:
    """At most one line per key every ``interval`` seconds, with a count of those held back.

    ``allow(key, now)`` returns ``None`` when the line should be dropped,
    otherwise how many lines for that key were dropped since the last one
    logged (0 the first time). Keys are bounded: past ``max_keys`` the
    oldest are forgotten, so a client inventing keys cannot grow it.
    """

    __slots__ = ("_last", "_max_keys", "_suppressed", "interval")

    def __init__(self, interval: float = 10.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self._max_keys = max_keys
        self._last: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable, now: float) -> int | None:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self._max_keys:
            oldest = next(iter(self._last))
            del self._last[oldest]
            self._suppressed.pop(oldest, None)
        self._last.pop(key, None)
        self._last[key] = now  # re-inserted: the dict stays in order of last logging
        return self._suppressed.pop(key, 0)

    def take_pending(self) -> dict[Hashable, int]:
        """Keys with lines held back since they were last logged, and how many; the counts restart at 0."""
        pending, self._suppressed = self._suppressed, {}
        return pending

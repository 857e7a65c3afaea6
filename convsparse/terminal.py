"""`printable`: text from documents made safe to write to a terminal.

A document can carry escape sequences (colours, window titles, cursor moves, hyperlinks, and
worse on some terminals). Everything the CLI prints that came from a document (ids, titles,
text, dead-letter reasons) goes through `printable`: C0 and C1 control characters (except
tab and newline when allowed), DEL and the Unicode bidirectional overrides are shown escaped
(``\\x1b``, ``\\u202e``) instead of being sent to the terminal.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_NO_NEWLINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: object, *, newlines: bool = False) -> str:
    """`text` with control characters escaped (newlines kept only if `newlines`)."""
    pattern = _CONTROL if newlines else _CONTROL_NO_NEWLINE
    return pattern.sub(_escape, str(text))


__all__ = ["printable"]

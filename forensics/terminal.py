"""What reaches a terminal: evidence text with control characters shown as escapes and secrets masked.

Evidence is untrusted text. A log line or an error message can carry ANSI/OSC escape
sequences that recolour, retitle or rewrite the screen of whoever prints it (or hide a line
with a carriage return, or reorder it with bidirectional overrides), and connection strings
or bot tokens that must not end up in a scrollback or a pasted ticket. :func:`printable`
makes one string safe to print; :class:`SafeStream` wraps stdout or stderr so that every
line any command prints passes through it (the CLI installs it once, in ``main``).
"""

from __future__ import annotations

import re
from typing import TextIO

from forensics.credentials import mask_text

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls but newline and tab, DEL, and the Unicode bidirectional and line controls."""


def _escape(match: re.Match) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` safe for a terminal: control characters as visible escapes (``\\x1b``),
    secrets masked (:func:`forensics.credentials.mask_text`); newlines kept unless
    ``keep_newlines`` is false (a value that must stay on one line)."""
    text = _CONTROL.sub(_escape, text)
    if not keep_newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t")
    return mask_text(text)


class SafeStream:
    """A text stream that writes everything through :func:`printable` to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)

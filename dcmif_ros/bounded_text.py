"""Text from outside (an image's encoding, a format string, an error about them) cut to a bounded length.

A publisher controls these strings: one sent a 1 MB encoding, which came back as 2 MB log lines and a
2-million-character ``status.last_error`` every second. Everything that echoes input text goes through here.
"""
from __future__ import annotations

MAX_MESSAGE_CHARS = 400
"""Longest problem text logged or reported in status."""
MAX_QUOTED_CHARS = 40
"""Longest piece of an input (an encoding, a format) quoted inside a message."""


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def quote(value: str) -> str:
    """An input's own text quoted for a message (repr, so control characters show), however long it is."""
    return repr(clip(value, MAX_QUOTED_CHARS))

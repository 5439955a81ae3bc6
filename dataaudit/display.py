"""Showing user strings (file names, labels, messages) on a terminal without obeying them.

A file name is data: it must never move the cursor, recolour or retitle a terminal, nor
reorder the text around it (bidi overrides). :func:`safe_text` shows such characters as
visible escapes; JSON output needs nothing (``json.dumps`` escapes them already).
"""

from __future__ import annotations

import unicodedata

_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_text(text: str, keep: str = "") -> str:
    """Control characters and bidi overrides as ``\\xNN`` / ``\\uNNNN``; ``keep`` is spared."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in keep or (unicodedata.category(ch) != "Cc" and ch not in _BIDI):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)

"""How a file is named in the index: its stored path and its 64-bit id."""

from __future__ import annotations

import re

import xxhash

# What an escaped name is made of: an escaped backslash, or an undecodable byte.
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def storable(name: str) -> str:
    """A file name as valid UTF-8 text, reversibly (:func:`disk_name` undoes it).

    ``os.scandir`` hands back undecodable bytes as lone surrogates, which Arrow and DuckDB
    refuse; they are stored as ``\\xNN``. So that a real name containing the text ``\\xff``
    cannot collide with a name holding the byte 0xFF, a name that needs escaping, or that
    contains text that reads as an escape (``\\\\`` or ``\\xNN``), has every backslash
    doubled as well. Every other name, the usual case, is stored as it is.
    """
    try:
        name.encode("utf-8")
        if not _ESCAPE.search(name):
            return name
    except UnicodeEncodeError:
        pass
    return escaped(name)


def escaped(name: str) -> str:
    """The escaped form of a name, whether or not :func:`storable` would need it."""
    raw = name.encode("utf-8", "surrogateescape").replace(b"\\", b"\\\\")
    out = []
    for ch in raw.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        out.append(f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else ch)
    return "".join(out)


def disk_name(stored: str) -> str:
    """The name on disk (with surrogate escapes, as ``os`` functions take it) of a stored path."""
    if not _ESCAPE.search(stored):
        return stored

    def undo(m: re.Match[str]) -> str:
        s = m.group(1)
        return "\\" if s == "\\" else chr(0xDC00 + int(s[1:], 16))

    return _ESCAPE.sub(undo, stored)


def file_id(rel_path: str) -> int:
    """Stable id of a file: a 64-bit hash of its relative path (resume and joins key on it)."""
    return xxhash.xxh3_64_intdigest(rel_path.encode("utf-8", "surrogateescape")) - (1 << 63)

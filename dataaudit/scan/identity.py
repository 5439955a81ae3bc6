"""How a file is named in the index: its stored path and its 64-bit id."""

from __future__ import annotations

import xxhash


def storable(name: str) -> str:
    """A file name as valid UTF-8 text: undecodable bytes become ``\\xNN`` escapes.

    ``os.scandir`` hands back such bytes as lone surrogates, which Arrow and DuckDB refuse.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_id(rel_path: str) -> int:
    """Stable id of a file: a 64-bit hash of its relative path (resume and joins key on it)."""
    return xxhash.xxh3_64_intdigest(rel_path.encode("utf-8", "surrogateescape")) - (1 << 63)

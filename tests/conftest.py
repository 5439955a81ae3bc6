"""Shared fixtures: tiny generated images, scan helpers, and the CLI run two ways.

Images are generated with Pillow into tmp dirs (a few hundred bytes each), indexes are real
DuckDB files. ``cli`` calls ``dataaudit.cli.main`` in-process (fast); ``run_cli`` runs the
real entry point ``python -m dataaudit`` in a subprocess (exit codes, stderr, signals).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import settings
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run and have no deadline: a red CI must be
# reproducible, never luck or a busy machine.
settings.register_profile("deterministic", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("deterministic")

# File names that break naive path handling; every scan test that walks names uses these.
ODD_NAMES = [
    "with space.jpg",
    'quote\'s "double".jpg',
    "semi;colon.jpg",
    "ünïcødé-名前.jpg",
    "emoji 😀🐈.jpg",
    "new\nline.jpg",
    "-leading-dash.jpg",
    "a" * 196 + ".jpg",
    "UPPER.JPG",
    "[brackets] & $dollar `tick`.png",
    "[bold]markup[/bold].jpg",
]

_FORMATS = dict(Image.registered_extensions())  # ".png" -> "PNG"


def _fill(mode: str, color: Any) -> Any:
    """A colour given as RGB becomes the right shape for the target mode."""
    if not isinstance(color, tuple) or mode == "P":
        return color
    bands = Image.getmodebands(mode)
    if bands == len(color):
        return color
    if bands == 1:
        return color[0]
    return (color + (255,) * bands)[:bands]


def _image_bytes(
    size: tuple[int, int] = (32, 32),
    color: Any = (200, 30, 30),
    mode: str = "RGB",
    fmt: str = "PNG",
    **save: Any,
) -> bytes:
    """Encode a flat image of ``color`` and return its bytes."""
    im = Image.new(mode, size, _fill(mode, color))
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def _write_image(
    path: str | Path,
    size: tuple[int, int] = (32, 32),
    color: Any = (200, 30, 30),
    mode: str = "RGB",
    fmt: str | None = None,
    **save: Any,
) -> Path:
    """Write a flat image to ``path`` (format from the extension unless ``fmt``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fmt = fmt or _FORMATS.get(p.suffix.lower(), "PNG")
    p.write_bytes(_image_bytes(size, color, mode, fmt, **save))
    return p


def _png_chunk(ctype: bytes, data: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A ~100-byte PNG whose valid IHDR claims ``width x height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child ``python -m dataaudit``: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _cli_command(*args: Any) -> list[str]:
    return [sys.executable, "-m", "dataaudit", *map(str, args)]


def _run_cli(
    *args: Any, env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str, str]:
    """Run ``python -m dataaudit ARGS`` and return (exit code, stdout, stderr)."""
    proc = subprocess.run(
        _cli_command(*args),
        capture_output=True,
        text=True,
        env=env or _subprocess_env(),
        timeout=timeout,
        cwd=REPO,
    )
    return proc.returncode, proc.stdout, proc.stderr


def _start_cli(*args: Any, **popen: Any) -> subprocess.Popen:
    """Start ``python -m dataaudit ARGS`` without waiting (for interrupt and kill tests)."""
    popen.setdefault("env", _subprocess_env())
    popen.setdefault("cwd", REPO)
    return subprocess.Popen(_cli_command(*args), **popen)


def _scan_dir(root: str | Path, db: str | Path | None = None, **options: Any):
    """In-process scan, no worker processes unless ``workers`` is given."""
    from dataaudit.scan.measure import MeasureConfig
    from dataaudit.scan.pipeline import ScanOptions, scan

    measure_kw = {k: options.pop(k) for k in list(options) if k in MeasureConfig.__annotations__}
    options.setdefault("workers", 0)
    opts = ScanOptions(measure=MeasureConfig(**measure_kw), **options)
    return scan(root, db, opts)


def _index_rows(db_path: str | Path, table: str = "images") -> dict[str, dict[str, Any]]:
    """Every row of ``table`` as a dict, keyed by relative path."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        cur = con.execute(f"SELECT * FROM {table}")
        cols = [c[0] for c in cur.description]
        return {r[cols.index("path")]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}
    finally:
        con.close()


def _query(db_path: str | Path, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Run one read-only query against an index file."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _snapshot(root: Path, skip: str = ".dataaudit") -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (except the index folder) with its size and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != skip]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No test writes an index into the real user cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def make_image() -> Callable[..., Path]:
    """``make_image(path, size=(32, 32), color=(r, g, b), mode="RGB", fmt=None, **save)``."""
    return _write_image


@pytest.fixture(scope="session")
def image_bytes() -> Callable[..., bytes]:
    """``image_bytes(size=(32, 32), color=(r, g, b), mode="RGB", fmt="PNG", **save)``."""
    return _image_bytes


@pytest.fixture(scope="session")
def png_chunk() -> Callable[[bytes, bytes], bytes]:
    """``png_chunk(b"IHDR", data)``: one PNG chunk with a correct CRC, to craft files."""
    return _png_chunk


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A ~100-byte PNG whose valid IHDR claims 20,000 x 20,000 RGB pixels."""
    return _bomb_png()


@pytest.fixture(scope="session")
def scan_dir() -> Callable[..., Any]:
    """``scan_dir(root, db=None, workers=0, labels_file=None, thumb_size=..., ...)``."""
    return _scan_dir


@pytest.fixture(scope="session")
def index_rows() -> Callable[..., dict[str, dict[str, Any]]]:
    """``index_rows(db_path, table="images")``: every row keyed by relative path."""
    return _index_rows


@pytest.fixture(scope="session")
def query() -> Callable[..., list[tuple]]:
    """``query(db_path, sql, params=None)``: rows of one read-only query."""
    return _query


@pytest.fixture(scope="session")
def snapshot() -> Callable[[Path], dict[str, tuple[int, int]]]:
    """``snapshot(root)``: every path under root (but the index folder) -> (size, mtime)."""
    return _snapshot


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., tuple[int, str, str]]:
    """``run_cli(*args, env=None)`` runs ``python -m dataaudit`` -> (rc, stdout, stderr)."""
    return _run_cli


@pytest.fixture(scope="session")
def start_cli() -> Callable[..., subprocess.Popen]:
    """``start_cli(*args, **popen_kwargs)``: a running ``python -m dataaudit`` process."""
    return _start_cli


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``cli(*args)`` calls ``dataaudit.cli.main`` in this process -> (rc, stdout, stderr)."""
    from dataaudit.cli import main

    def run(*args: Any) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return rc, out, err

    return run


@pytest.fixture
def torch_one_thread():
    """Tiny models train fastest on one torch thread (and do not fight other processes)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

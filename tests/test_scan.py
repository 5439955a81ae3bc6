"""The scan end to end: every kind of bad file becomes a row, re-scans are incremental, the
source folder is never touched, and the index says how it was made."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import types
from pathlib import Path

import duckdb
import imagehash
import numpy as np
import pytest
from conftest import ODD_NAMES
from PIL import Image

from dataaudit.errors import DataAuditError
from dataaudit.scan import task as scan_task
from dataaudit.store import db as store


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def encode(im: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **save)
    return buf.getvalue()


def build_zoo(root: Path, write_image, image_bytes, bomb_png: bytes) -> None:
    """One folder holding every kind of file the scan must survive."""
    write_image(root / "good" / "ok.jpg", size=(40, 30))
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / "empty.jpg").write_bytes(b"")
    jpg, png = encode(noise_image((64, 64)), "JPEG"), encode(noise_image((64, 64)), "PNG")
    (bad / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (bad / "truncated_header.jpg").write_bytes(jpg[:200])
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "random.jpg").write_bytes(np.random.default_rng(9).bytes(3000))
    (bad / "error_page.jpg").write_bytes(
        b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body></body></html>"
    )
    (bad / "png_bytes.jpg").write_bytes(image_bytes(fmt="PNG"))
    (bad / "jpeg_bytes.png").write_bytes(image_bytes(fmt="JPEG"))
    crc = bytearray(image_bytes(size=(16, 16), fmt="PNG"))
    crc[crc.find(b"IDAT") + 6] ^= 0xFF
    (bad / "bad_crc.png").write_bytes(bytes(crc))
    (bad / "bomb.png").write_bytes(bomb_png)
    (bad / "trailing.jpg").write_bytes(image_bytes(fmt="JPEG") + b"\x00garbage after EOI" * 4)

    fmt = root / "formats"
    write_image(fmt / "cmyk.jpg", mode="CMYK", color=(0, 0, 0, 0))
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype("<u2")
    Image.frombytes("I;16", (32, 32), ramp.tobytes()).save(fmt / "gray16.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(fmt / "palette_trans.png", transparency=0)
    write_image(fmt / "rgba.png", mode="RGBA", color=(10, 20, 30, 40))
    write_image(fmt / "la.png", mode="LA", color=(10, 40))
    frames = [Image.new("RGB", (16, 16), (80 * i, 0, 0)) for i in range(3)]
    frames[0].save(fmt / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(fmt / "exif6.jpg", size=(64, 32), exif=exif)
    write_image(fmt / "img.tif")
    write_image(fmt / "img.webp")
    write_image(fmt / "img.bmp")
    write_image(fmt / "one.png", size=(1, 1))
    write_image(fmt / "big.jpg", size=(6000, 4000), color=(90, 120, 150), quality=80)

    for name in ODD_NAMES:
        write_image(root / "names" / name, size=(8, 8))
    write_image(root / "x.jpg" / "inner.png", size=(8, 8))  # a folder named like an image
    (root / "empty label").mkdir()

    other = root / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not an image")
    (other / "image_without_ext").write_bytes(image_bytes(fmt="PNG"))
    for junk in (".DS_Store", "._foo.jpg", "Thumbs.db", ".hidden.png"):
        (other / junk).write_bytes(b"\x00\x05\x16\x07 litter")
    os.symlink(root, other / "loop")
    outside = root.parent / "outside"
    write_image(outside / "escaped.png")
    os.symlink(outside, root / "outside_link")


# (path, decode_status, is_corrupt, substring of error_message or None, other expected columns)
ZOO_EXPECTED = [
    ("good/ok.jpg", "ok", False, None, {"width": 40, "height": 30, "format": "JPEG"}),
    ("bad/empty.jpg", "empty", True, "zero bytes", {"bytes": 0}),
    ("bad/truncated.jpg", "truncated", True, "truncated", {"format": "JPEG"}),
    ("bad/truncated_header.jpg", "truncated", True, "", {"format": "JPEG"}),
    ("bad/truncated.png", "truncated", True, "truncated", {"format": "PNG"}),
    ("bad/random.jpg", "not_image", True, "random or unknown bytes", {"format": None}),
    ("bad/error_page.jpg", "not_image", True, "HTML", {"format": None}),
    ("bad/png_bytes.jpg", "ok", False, None, {"format": "PNG", "format_matches_ext": False}),
    ("bad/jpeg_bytes.png", "ok", False, None, {"format": "JPEG", "format_matches_ext": False}),
    ("bad/bad_crc.png", "corrupt", True, "CRC mismatch in chunk IDAT", {}),
    ("bad/bomb.png", "bomb", False, "400,000,000 pixels", {"width": 20_000, "height": 20_000}),
    ("bad/trailing.jpg", "ok", False, "end-of-image", {"trailing_bytes": True}),
    ("formats/cmyk.jpg", "ok", False, None, {"mode": "CMYK", "channels": 4}),
    ("formats/gray16.png", "ok", False, None, {"bit_depth": 16}),
    ("formats/palette_trans.png", "ok", False, None, {"mode": "P", "has_alpha": True}),
    ("formats/rgba.png", "ok", False, None, {"mode": "RGBA", "has_alpha": True}),
    ("formats/la.png", "ok", False, None, {"mode": "LA", "has_alpha": True}),
    ("formats/anim.gif", "ok", False, None, {"format": "GIF", "n_frames": 3}),
    ("formats/exif6.jpg", "ok", False, None, {"exif_orientation": 6, "width": 64}),
    ("formats/img.tif", "ok", False, None, {"format": "TIFF"}),
    ("formats/img.webp", "ok", False, None, {"format": "WEBP"}),
    ("formats/img.bmp", "ok", False, None, {"format": "BMP"}),
    ("formats/one.png", "ok", False, None, {"width": 1, "height": 1}),
    ("formats/big.jpg", "ok", False, None, {"width": 6000, "decode_scale": 8}),
    ("x.jpg/inner.png", "ok", False, None, {"label": "x.jpg"}),
    ("other/image_without_ext", "ok", False, None, {"format": "PNG", "format_matches_ext": False}),
] + [(f"names/{n}", "ok", False, None, {"label": "names"}) for n in ODD_NAMES]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, make_image, image_bytes, bomb_png, scan_dir, index_rows, snapshot):
    root = tmp_path_factory.mktemp("zoo") / "data"
    build_zoo(root, make_image, image_bytes, bomb_png)
    before = snapshot(root)
    summary = scan_dir(root)
    db_path = root / ".dataaudit" / "index.duckdb"
    return root, db_path, summary, index_rows(db_path), before


@pytest.mark.parametrize(
    ("path", "status", "corrupt", "message", "extra"),
    ZOO_EXPECTED,
    ids=[c[0] for c in ZOO_EXPECTED],
)
def test_zoo_row(zoo, path, status, corrupt, message, extra):
    rows = zoo[3]
    row = rows[path]
    assert row["decode_status"] == status, row["error_message"]
    assert row["is_corrupt"] is corrupt
    if message is None:
        assert row["error_message"] is None
    else:
        assert message in row["error_message"]
    for col, value in extra.items():
        assert row[col] == value, col
    if status == "ok":
        assert row["phash"] is not None and row["brightness_mean"] is not None
    else:
        assert row["phash"] is None


def test_zoo_scan_completes_with_one_row_per_image(zoo, query):
    root, db_path, summary, rows, _ = zoo
    assert summary.status == "completed"
    assert sorted(rows) == sorted(c[0] for c in ZOO_EXPECTED)
    assert summary.images == len(ZOO_EXPECTED)
    assert summary.skipped_non_images == 1
    assert [r[0] for r in query(db_path, "SELECT path FROM skipped_files")] == ["other/notes.txt"]
    expected_corrupt = sum(c[2] for c in ZOO_EXPECTED)
    assert summary.corrupt == expected_corrupt
    assert summary.files_seen == len(ZOO_EXPECTED) + 1
    assert summary.new == summary.files_seen and summary.measured == len(ZOO_EXPECTED)


def test_zoo_skips_litter_links_and_the_index(zoo):
    rows = zoo[3]
    assert not [p for p in rows if "/." in p or p.startswith(".") or "Thumbs" in p]
    assert not [p for p in rows if "outside" in p or "loop" in p or "escaped" in p]


def test_zoo_stats_of_special_modes(zoo):
    rows = zoo[3]
    gray16 = rows["formats/gray16.png"]
    assert gray16["brightness_mean"] == pytest.approx(127.5, abs=3)  # not clipped to white
    assert gray16["bright_fraction"] < 0.05
    cmyk = rows["formats/cmyk.jpg"]
    assert cmyk["brightness_mean"] > 240  # no ink is white paper
    big = rows["formats/big.jpg"]
    assert big["brightness_mean"] == pytest.approx(114.7, abs=2)


def test_zoo_thumbnails(zoo, query):
    _, db_path, _, rows, _ = zoo
    thumbs = dict(
        query(db_path, "SELECT i.path, t.jpeg FROM thumbnails t JOIN images i USING (file_id)")
    )
    ok = {p for p, r in rows.items() if r["decode_status"] == "ok"}
    assert set(thumbs) == ok
    with Image.open(io.BytesIO(thumbs["formats/exif6.jpg"])) as t:
        assert t.size == (32, 64)  # stored 64x32, shown upright
    with Image.open(io.BytesIO(thumbs["formats/big.jpg"])) as t:
        assert max(t.size) == 128


def test_zoo_source_folder_untouched(zoo, snapshot):
    root, _, _, _, before = zoo
    assert snapshot(root) == before
    assert sorted(os.listdir(root / ".dataaudit")) == ["index.duckdb"]


def test_zoo_pool_gives_the_same_rows(zoo, tmp_path, scan_dir, index_rows):
    """The real forkserver pool and in-process measuring store identical records."""
    root, _, _, rows, _ = zoo
    other_db = tmp_path / "pool.duckdb"
    summary = scan_dir(root, other_db, workers=2)
    assert summary.status == "completed"
    pooled = index_rows(other_db)
    assert sorted(pooled) == sorted(rows)
    for path, row in rows.items():
        a = {k: v for k, v in row.items() if k != "scan_run_id"}
        b = {k: v for k, v in pooled[path].items() if k != "scan_run_id"}
        assert a == b, path


# ------------------------------------------------------------------ reference hashes


def test_stored_hashes_equal_imagehash(tmp_path, scan_dir, index_rows):
    p = tmp_path / "ref.jpg"
    smooth = noise_image((8, 8), 4).resize((64, 64), Image.Resampling.BICUBIC)
    smooth.save(p, "JPEG", quality=90)
    scan_dir(tmp_path)
    row = index_rows(tmp_path / ".dataaudit" / "index.duckdb")["ref.jpg"]
    with Image.open(p) as im:
        phash, dhash = imagehash.phash(im), imagehash.dhash(im)
    mask = (1 << 64) - 1
    assert row["phash"] & mask == int(str(phash), 16)
    assert row["dhash"] & mask == int(str(dhash), 16)
    assert -(1 << 63) <= row["phash"] < (1 << 63)


# ------------------------------------------------------------------ incremental re-scan


@pytest.fixture
def counted_reads(monkeypatch):
    """Record every file the scan reads (in-process scans only)."""
    reads: list[str] = []
    real = scan_task.measure_file

    def spy(abs_path, *args, **kwargs):
        reads.append(os.path.basename(abs_path))
        return real(abs_path, *args, **kwargs)

    monkeypatch.setattr(scan_task, "measure_file", spy)
    return reads


def test_rescan_reads_only_what_changed(
    tmp_path, counted_reads, make_image, scan_dir, index_rows, query
):
    root = tmp_path / "data"
    for i in range(5):
        make_image(root / "cat" / f"{i}.png", color=(i * 40, 0, 0))
    (root / "readme.txt").write_text("hello")
    db_path = root / ".dataaudit" / "index.duckdb"
    first = scan_dir(root)
    assert (first.new, first.changed, first.unchanged, first.deleted) == (6, 0, 0, 0)
    assert first.measured == 5 and first.skipped_non_images == 1
    before = index_rows(db_path)

    counted_reads.clear()
    again = scan_dir(root)
    assert counted_reads == []
    assert (again.new, again.changed, again.unchanged, again.deleted, again.measured) == (
        0, 0, 6, 0, 0,
    )  # fmt: skip
    assert index_rows(db_path) == before  # not even scan_run_id moved

    make_image(root / "cat" / "1.png", color=(0, 255, 0))  # modified
    os.utime(root / "cat" / "1.png", ns=(1, 10**18))
    (root / "cat" / "2.png").unlink()  # deleted
    make_image(root / "dog" / "new.png")  # new
    counted_reads.clear()
    third = scan_dir(root)
    assert sorted(counted_reads) == ["1.png", "new.png"]
    assert (third.new, third.changed, third.unchanged, third.deleted) == (1, 1, 4, 1)
    assert third.measured == 2
    rows = index_rows(db_path)
    assert "cat/2.png" not in rows
    assert rows["cat/1.png"]["content_hash"] != before["cat/1.png"]["content_hash"]
    assert rows["cat/1.png"]["scan_run_id"] == third.run_id
    assert rows["cat/0.png"]["scan_run_id"] == first.run_id
    assert rows["dog/new.png"]["label"] == "dog"
    n_images, n_thumbs, n_distinct = query(
        db_path,
        "SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM thumbnails), "
        "(SELECT count(DISTINCT path) FROM images)",
    )[0]
    assert n_images == n_thumbs == n_distinct == 5


def test_same_size_same_mtime_is_trusted(tmp_path, counted_reads, make_image, scan_dir):
    """Size and mtime decide whether a file changed (like rsync); content is not re-hashed."""
    p = make_image(tmp_path / "a.bmp", color=(1, 1, 1))  # BMP: same size for any colour
    st = p.stat()
    scan_dir(tmp_path)
    make_image(p, color=(2, 2, 2))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size
    counted_reads.clear()
    assert scan_dir(tmp_path).measured == 0
    assert counted_reads == []


def test_file_that_stops_being_an_image_leaves_images(tmp_path, image_bytes, scan_dir, query):
    p = tmp_path / "blob"
    p.write_bytes(image_bytes(fmt="PNG"))
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    s1 = scan_dir(tmp_path)
    assert (s1.images, s1.skipped_non_images) == (1, 0)
    p.write_bytes(b"now just text, much longer than before")
    s2 = scan_dir(tmp_path)
    assert (s2.images, s2.skipped_non_images, s2.changed) == (0, 1, 1)
    assert query(db_path, "SELECT count(*) FROM thumbnails") == [(0,)]
    p.write_bytes(image_bytes(fmt="PNG", size=(9, 9)))
    s3 = scan_dir(tmp_path)
    assert (s3.images, s3.skipped_non_images, s3.changed) == (1, 0, 1)


def test_labels_file_change_relabels_without_reading(
    tmp_path, counted_reads, make_image, scan_dir, index_rows
):
    root = tmp_path / "flat"
    for name in ("a.png", "b.png", "c.png"):
        make_image(root / name)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,cat\nb.png,dog\nc.png,dog\n")
    db_path = root / ".dataaudit" / "index.duckdb"
    s1 = scan_dir(root, labels_file=str(labels))
    assert s1.layout == "label/image (labels from file)"
    assert {p: r["label"] for p, r in index_rows(db_path).items()} == {
        "a.png": "cat", "b.png": "dog", "c.png": "dog",
    }  # fmt: skip
    labels.write_text("path,label,split\na.png,cow,train\nb.png,dog,TEST\n")
    counted_reads.clear()
    s2 = scan_dir(root, labels_file=str(labels))
    assert counted_reads == [] and s2.measured == 0
    got = {p: (r["split"], r["label"]) for p, r in index_rows(db_path).items()}
    assert got == {"a.png": ("train", "cow"), "b.png": ("test", "dog"), "c.png": (None, None)}


def test_small_write_batches(tmp_path, make_image, scan_dir, query):
    for i in range(23):
        make_image(tmp_path / f"{i:02d}.png", size=(4, 4), color=(i, i, i))
    (tmp_path / "x.txt").write_text("x")
    s = scan_dir(tmp_path, write_batch=4)
    assert (s.images, s.skipped_non_images) == (23, 1)
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    assert query(db_path, "SELECT count(*), count(DISTINCT file_id) FROM images") == [(23, 23)]


def test_interrupted_scan_keeps_what_it_measured_and_resumes(
    tmp_path, monkeypatch, make_image, scan_dir, query
):
    """Ctrl-C in the middle: finished measurements are written, the run says interrupted."""
    from dataaudit.scan.measure import MeasureConfig
    from dataaudit.scan.pipeline import ScanOptions, scan

    for i in range(40):
        make_image(tmp_path / f"{i:02d}.png", size=(4, 4), color=(i, 0, 0))
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    real, reads = scan_task.measure_file, []

    def interrupt_at_21(abs_path, *args, **kwargs):
        if len(reads) == 20:
            raise KeyboardInterrupt
        reads.append(abs_path)
        return real(abs_path, *args, **kwargs)

    monkeypatch.setattr(scan_task, "measure_file", interrupt_at_21)
    opts = ScanOptions(workers=0, write_batch=8, measure=MeasureConfig(thumb_size=0))
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path, None, opts)
    assert query(db_path, "SELECT status FROM runs") == [("interrupted",)]
    assert query(db_path, "SELECT count(*) FROM images") == [(20,)]

    monkeypatch.setattr(scan_task, "measure_file", real)
    s = scan_dir(tmp_path)
    assert (s.status, s.images, s.measured, s.unchanged) == ("completed", 40, 20, 20)
    assert query(db_path, "SELECT count(*), count(DISTINCT path) FROM images") == [(40, 40)]
    assert query(db_path, "SELECT status FROM runs ORDER BY run_id") == [
        ("interrupted",),
        ("completed",),
    ]


def test_non_utf8_file_name_is_indexed(tmp_path, make_image, image_bytes, scan_dir, index_rows):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with open(raw, "wb") as f:
        f.write(image_bytes(fmt="PNG"))
    make_image(tmp_path / "plain.png")
    s = scan_dir(tmp_path)
    rows = index_rows(tmp_path / ".dataaudit" / "index.duckdb")
    assert sorted(rows) == ["caf\\xe9.png", "plain.png"]
    assert rows["caf\\xe9.png"]["decode_status"] == "ok"
    assert s.images == 2
    assert scan_dir(tmp_path).measured == 0  # and it is stable across scans


# ------------------------------------------------------------------ layouts


@pytest.mark.parametrize(
    ("files", "layout", "expected"),
    [
        (["train/cat/1.png", "Training/dog/2.png", "VALID/cat/3.png", "dev/dog/4.png",
          "Testing/cat/5.png", "TEST/dog/6.png"], "split/label/image",
         {"train/cat/1.png": ("train", "cat"), "Training/dog/2.png": ("train", "dog"),
          "VALID/cat/3.png": ("val", "cat"), "dev/dog/4.png": ("val", "dog"),
          "Testing/cat/5.png": ("test", "cat"), "TEST/dog/6.png": ("test", "dog")}),
        (["cat/1.png", "golden retriever/2.png"], "label/image",
         {"cat/1.png": (None, "cat"), "golden retriever/2.png": (None, "golden retriever")}),
        (["1.png", "2.png"], "flat (unlabelled)", {"1.png": (None, None), "2.png": (None, None)}),
        (["train/1.png", "val/2.png"], "split/image (unlabelled)",
         {"train/1.png": ("train", None), "val/2.png": ("val", None)}),
    ],
    ids=["split-label", "label", "flat", "split-only"],
)  # fmt: skip
def test_layouts(tmp_path, files, layout, expected, make_image, scan_dir, index_rows):
    for rel in files:
        make_image(tmp_path / rel, size=(4, 4))
    s = scan_dir(tmp_path)
    assert s.layout == layout
    rows = index_rows(tmp_path / ".dataaudit" / "index.duckdb")
    assert {p: (r["split"], r["label"]) for p, r in rows.items()} == expected
    assert sum(n for _, _, n in s.split_label_counts) == len(files)


def test_empty_folder(tmp_path, scan_dir):
    (tmp_path / "empty label").mkdir()
    s = scan_dir(tmp_path)
    assert (s.images, s.files_seen, s.layout, s.status) == (0, 0, "empty", "completed")


# ------------------------------------------------------------------ the index itself


def test_runs_table_records_versions_and_params(tmp_path, make_image, scan_dir, query):
    make_image(tmp_path / "a.png")
    s = scan_dir(tmp_path, thumb_size=64)
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    (kind, status, params, versions, counts, started, ended) = query(
        db_path, "SELECT kind, status, params, versions, counts, started_at, ended_at FROM runs"
    )[0]
    assert (kind, status) == ("scan", "completed")
    params, versions, counts = json.loads(params), json.loads(versions), json.loads(counts)
    assert params["root"] == str(tmp_path.resolve())
    assert params["workers"] == 0
    assert params["measure"]["thumb_size"] == 64
    import duckdb as ddb
    import PIL

    import dataaudit

    assert versions["dataaudit"] == dataaudit.__version__
    assert versions["pillow"] == PIL.__version__
    assert versions["imagehash"] == imagehash.__version__
    assert versions["duckdb"] == ddb.__version__
    assert counts["images"] == 1 and counts["status"] == "completed"
    assert started <= ended
    assert s.run_id == 1
    assert scan_dir(tmp_path).run_id == 2
    meta = dict(query(db_path, "SELECT key, value FROM meta"))
    assert meta["schema_version"] == str(store.SCHEMA_VERSION)
    assert meta["root"] == str(tmp_path.resolve())
    tables = {r[0] for r in query(db_path, "SELECT table_name FROM information_schema.tables")}
    assert not {t for t in tables if t.startswith("_scan")}  # staging tables are dropped


def test_index_file_inside_the_root_is_not_scanned(tmp_path, make_image, scan_dir):
    make_image(tmp_path / "a.png")
    db_path = tmp_path / "my index.duckdb"
    scan_dir(tmp_path, db_path)
    s = scan_dir(tmp_path, db_path)
    assert (s.files_seen, s.images, s.skipped_non_images) == (1, 1, 0)


def test_index_of_another_root_is_refused(tmp_path, make_image, scan_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    make_image(a / "1.png")
    make_image(b / "1.png")
    db_path = tmp_path / "index.duckdb"
    scan_dir(a, db_path)
    with pytest.raises(DataAuditError, match="belongs to"):
        scan_dir(b, db_path)


def test_not_a_duckdb_file_is_refused_and_left_alone(tmp_path, make_image, scan_dir):
    make_image(tmp_path / "data" / "a.png")
    bogus = tmp_path / "index.duckdb"
    bogus.write_text("these are my notes, not a database\n")
    before = bogus.read_bytes(), bogus.stat().st_mtime_ns
    with pytest.raises(DataAuditError, match="not a DuckDB database"):
        scan_dir(tmp_path / "data", bogus)
    assert (bogus.read_bytes(), bogus.stat().st_mtime_ns) == before
    assert not Path(f"{bogus}.wal").exists()


def test_missing_root(tmp_path, scan_dir):
    with pytest.raises(DataAuditError, match="does not exist"):
        scan_dir(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_default_index_location(tmp_path, monkeypatch, make_image):
    make_image(tmp_path / "data" / "a.png")
    root = (tmp_path / "data").resolve()
    assert store.default_index_path(root) == root / ".dataaudit" / "index.duckdb"


def test_read_only_root_uses_the_cache(tmp_path, monkeypatch, make_image, scan_dir, snapshot):
    """Root ignores permissions, so a read-only folder is simulated through os.access."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    root = tmp_path / "ro data"
    make_image(root / "cat" / "a.png")
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **kw: False if Path(p) == root else real_access(p, mode, **kw)
    )
    before = snapshot(root)
    expected = store.default_index_path(root)
    assert expected.is_relative_to(cache / "dataaudit")
    assert expected.parent.name.startswith("ro data-")
    s = scan_dir(root)
    assert Path(s.index_path) == expected and expected.is_file()
    assert not (root / ".dataaudit").exists()
    assert snapshot(root) == before
    assert store.find_index(root) == expected
    monkeypatch.chdir(root)
    assert store.find_index(".") == expected  # the cache name comes from the resolved path
    assert store.find_index(expected) == expected


def test_existing_read_only_index_folder_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data"
    (root / ".dataaudit").mkdir(parents=True)
    local = root / ".dataaudit"
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: False if Path(p) == local else real_access(p, mode, **kw),
    )
    assert store.default_index_path(root).is_relative_to(tmp_path / "cache")


def test_find_index_errors(tmp_path):
    with pytest.raises(DataAuditError, match="does not exist"):
        store.find_index(tmp_path / "nope")
    with pytest.raises(DataAuditError, match="no index found"):
        store.find_index(tmp_path)


def test_index_is_readable_by_plain_duckdb_while_closed(tmp_path, make_image, scan_dir):
    make_image(tmp_path / "a.png")
    scan_dir(tmp_path)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(tmp_path / ".dataaudit" / "index.duckdb", copy)
    con = duckdb.connect(str(copy), read_only=True)
    assert con.execute("SELECT path, decode_status FROM images").fetchall() == [("a.png", "ok")]
    con.close()


# ------------------------------------------------------------------ migrations


def _age_index(db_path: Path, *sql: str, schema_version: int | None = None) -> None:
    """Make an index look as an older dataaudit left it."""
    con = duckdb.connect(str(db_path))
    for statement in sql:
        con.execute(statement)
    if schema_version is not None:
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(schema_version)])
    con.close()


def test_new_column_migrates_without_a_rescan(tmp_path, counted_reads, make_image, scan_dir, query):
    """An index from before a column existed gains it in place: no file is read again."""
    for i in range(3):
        make_image(tmp_path / f"{i}.png", color=(i * 60, 10, 10))
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    scan_dir(tmp_path)
    _age_index(
        db_path,
        "ALTER TABLE images DROP COLUMN sharpness",
        "DROP TABLE embedding_map",
        schema_version=store.SCHEMA_VERSION - 1,
    )
    with pytest.raises(DataAuditError, match="older than this dataaudit") as err:
        store.open_index(db_path, read_only=True)
    assert "upgrades the index in place" in err.value.hint
    counted_reads.clear()
    s = scan_dir(tmp_path)
    assert (s.unchanged, s.measured, counted_reads) == (3, 0, [])
    assert query(db_path, "SELECT count(*), count(sharpness) FROM images") == [(3, 0)]
    assert query(db_path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(store.SCHEMA_VERSION),)
    ]
    assert query(db_path, "SELECT count(*) FROM embedding_map") == [(0,)]


def test_newer_index_is_refused(tmp_path, make_image, scan_dir):
    make_image(tmp_path / "a.png")
    scan_dir(tmp_path)
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    _age_index(db_path, schema_version=store.SCHEMA_VERSION + 1)
    for read_only in (True, False):
        with pytest.raises(DataAuditError, match="newer than this dataaudit"):
            store.open_index(db_path, read_only=read_only)


def test_measure_upgrade_rereads_only_the_files_it_affects(
    tmp_path, counted_reads, make_image, scan_dir, query
):
    """Version 4 added edge_sharpness: only files with pixels are read again, not a corrupt
    one; version 2 changed every row."""
    make_image(tmp_path / "plain.png")
    make_image(tmp_path / "clear.png", mode="RGBA", color=(0, 0, 0, 0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    db_path = tmp_path / ".dataaudit" / "index.duckdb"
    scan_dir(tmp_path)
    assert query(db_path, "SELECT brightness_mean FROM images WHERE path = 'clear.png'") == [
        (255.0,)
    ]  # transparent pixels are white, as the embedder sees them
    _age_index(db_path, "UPDATE meta SET value = '3' WHERE key = 'measure_version'")
    counted_reads.clear()
    s = scan_dir(tmp_path)
    assert sorted(counted_reads) == ["clear.png", "plain.png"] and s.unchanged == 1
    _age_index(db_path, "UPDATE meta SET value = '1' WHERE key = 'measure_version'")
    counted_reads.clear()
    scan_dir(tmp_path)
    assert sorted(counted_reads) == ["broken.png", "clear.png", "plain.png"]


def test_workers_never_rerun_the_callers_script(tmp_path, monkeypatch, make_image, scan_dir):
    """A scan started from a script run by path (a Streamlit page, say) must not re-run that
    script in its workers: multiprocessing would, and here the script crashes if it does."""
    script = tmp_path / "page.py"
    script.write_text("raise SystemExit('the caller script ran inside a worker')\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    fake_main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    for k in range(3):
        make_image(tmp_path / "data" / f"{k}.png", color=(k * 60, 10, 10))
    summary = scan_dir(tmp_path / "data", tmp_path / "i.duckdb", workers=1)
    assert summary.status == "completed" and summary.images == 3
    assert fake_main.__file__ == str(script)  # restored

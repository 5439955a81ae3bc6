"""Discovery: which files are dataset content, and what split and label their folders say."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from conftest import ODD_NAMES

from dataaudit.discover import (
    describe_layout,
    load_labels,
    resolve_root,
    split_and_label,
    walk,
)
from dataaudit.errors import DataAuditError


def paths(root: Path) -> list[str]:
    return [e.rel_path for e in walk(root)]


def test_walk_yields_relative_posix_paths_in_stable_order(tmp_path, make_image):
    for rel in ["b/2.png", "a/1.png", "a/sub/3.png", "0.png"]:
        make_image(tmp_path / rel)
    assert paths(tmp_path) == ["0.png", "a/1.png", "a/sub/3.png", "b/2.png"]
    entry = next(walk(tmp_path))
    st = (tmp_path / "0.png").stat()
    assert (entry.size, entry.mtime_ns, entry.has_image_ext) == (st.st_size, st.st_mtime_ns, True)


def test_walk_keeps_odd_file_names(tmp_path, make_image):
    for name in ODD_NAMES:
        make_image(tmp_path / name)
    found = paths(tmp_path)
    assert sorted(found) == sorted(ODD_NAMES)
    assert all(e.has_image_ext for e in walk(tmp_path))  # .JPG counts as an image extension


def test_walk_skips_hidden_and_os_litter(tmp_path, make_image):
    make_image(tmp_path / "keep.jpg")
    for junk in [".DS_Store", "._keep.jpg", "Thumbs.db", "desktop.ini", ".hidden.png"]:
        (tmp_path / junk).write_bytes(b"\x00\x05\x16\x07junk")
    make_image(tmp_path / ".git" / "x.png")
    make_image(tmp_path / ".dataaudit" / "cached.png")
    make_image(tmp_path / "cat" / "._img.jpg")
    assert paths(tmp_path) == ["keep.jpg"]


def test_walk_marks_files_without_image_extension(tmp_path, make_image):
    make_image(tmp_path / "img.png")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "noext").write_bytes(b"x")
    flags = {e.rel_path: e.has_image_ext for e in walk(tmp_path)}
    assert flags == {"img.png": True, "notes.txt": False, "noext": False}


def test_directory_named_like_an_image_is_a_folder(tmp_path, make_image):
    make_image(tmp_path / "x.jpg" / "inner.png")
    assert paths(tmp_path) == ["x.jpg/inner.png"]


def test_empty_folders_yield_nothing(tmp_path, make_image):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog" / "deeper").mkdir(parents=True)
    assert paths(tmp_path) == []
    make_image(tmp_path / "dog" / "d.png")
    assert paths(tmp_path) == ["dog/d.png"]


def test_symlink_loop_is_entered_once(tmp_path, make_image):
    make_image(tmp_path / "cat" / "c.png")
    os.symlink(tmp_path, tmp_path / "cat" / "loop")
    os.symlink("..", tmp_path / "cat" / "up")
    os.symlink("self", tmp_path / "self")  # a link to itself
    assert paths(tmp_path) == ["cat/c.png"]


def test_symlink_outside_root_is_not_followed(tmp_path, make_image):
    root, outside = tmp_path / "root", tmp_path / "outside"
    make_image(root / "in.png")
    make_image(outside / "out.png")
    os.symlink(outside, root / "linked_dir")
    os.symlink(outside / "out.png", root / "linked_file.png")
    assert paths(root) == ["in.png"]


def test_symlink_inside_root_is_followed(tmp_path, make_image):
    make_image(tmp_path / "real" / "a.png")
    os.symlink(tmp_path / "real" / "a.png", tmp_path / "alias.png")
    assert paths(tmp_path) == ["alias.png", "real/a.png"]


def test_dangling_symlink_is_ignored(tmp_path, make_image):
    make_image(tmp_path / "a.png")
    os.symlink(tmp_path / "missing.png", tmp_path / "dangling.png")
    assert paths(tmp_path) == ["a.png"]


def test_walk_streams(tmp_path, make_image):
    make_image(tmp_path / "a.png")
    it = walk(tmp_path)
    assert iter(it) is it  # a generator, not a list


# ------------------------------------------------------------------ split and label


@pytest.mark.parametrize(
    ("rel", "expected"),
    [("train/cat/1.jpg", ("train", "cat")), ("Training/cat/1.jpg", ("train", "cat")),
     ("VALID/dog/1.jpg", ("val", "dog")), ("validation/dog/1.jpg", ("val", "dog")),
     ("dev/dog/1.jpg", ("val", "dog")), ("Testing/cow/1.jpg", ("test", "cow")),
     ("TEST/cow/x/1.jpg", ("test", "cow")), ("val/1.jpg", ("val", None)),
     ("cat/1.jpg", (None, "cat")), ("1.jpg", (None, None)),
     ("golden retriever/1.jpg", (None, "golden retriever")),
     ("cat/train/1.jpg", (None, "cat")), ("trainer/1.jpg", (None, "trainer"))],
)  # fmt: skip
def test_split_and_label(rel, expected):
    assert split_and_label(rel) == expected


@pytest.mark.parametrize(
    ("n_split", "n_label", "n", "name"),
    [(0, 0, 0, "empty"), (10, 10, 10, "split/label/image"), (0, 10, 10, "label/image"),
     (0, 0, 10, "flat (unlabelled)"), (10, 0, 10, "split/image (unlabelled)"),
     (5, 10, 10, "mixed")],
)  # fmt: skip
def test_describe_layout(n_split, n_label, n, name):
    assert describe_layout(n_split, n_label, n) == name


# ------------------------------------------------------------------ root and labels file


def test_resolve_root_errors(tmp_path):
    with pytest.raises(DataAuditError, match="does not exist"):
        resolve_root(tmp_path / "nope")
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DataAuditError, match="not a folder"):
        resolve_root(f)
    assert resolve_root(tmp_path) == tmp_path.resolve()


def test_load_labels_csv(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text(
        "path,label,split\n"
        "./a.jpg,cat,Training\n"
        "sub\\b.jpg,dog,VALID\n"
        "c.jpg,007,\n"
        "a.jpg,cow,test\n"  # a later row for the same path wins
    )
    df = load_labels(f).sort("path")
    assert df.columns == ["path", "label", "split"]
    assert df.rows() == [
        ("a.jpg", "cow", "test"),
        ("c.jpg", "007", None),
        ("sub/b.jpg", "dog", "val"),
    ]


def test_load_labels_parquet_without_split(tmp_path):
    f = tmp_path / "labels.parquet"
    pl.DataFrame({"path": ["a.jpg"], "label": [3], "extra": [1.0]}).write_parquet(f)
    assert load_labels(f).rows() == [("a.jpg", "3", None)]


def test_load_labels_missing_column(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("file,class\na.jpg,cat\n")
    with pytest.raises(DataAuditError, match=r"lacks column\(s\) label, path") as exc:
        load_labels(f)
    assert "file, class" in exc.value.hint


def test_load_labels_missing_or_broken_file(tmp_path):
    with pytest.raises(DataAuditError, match="labels file not found"):
        load_labels(tmp_path / "nope.csv")
    bad = tmp_path / "labels.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataAuditError, match="cannot read labels file"):
        load_labels(bad)

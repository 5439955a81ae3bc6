"""The shipped sample_data/ matches its truth file, and its builder reproduces it byte for byte."""

from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from dataaudit.detectors.registry import ISSUE_TYPES

ROOT = Path(__file__).resolve().parent.parent / "sample_data"
SOURCE = ROOT.parent.parent / "shared" / "datasets" / "signs"
# Every kind of issue a detector finds in image files (info-level flags excluded).
VOCABULARY = {issue for issue, (severity, _) in ISSUE_TYPES.items() if severity != "info"}
GENERATED = ["train", "test", "truth.csv", "README.md", "LICENSE"]


def truth() -> list[dict[str, str]]:
    with open(ROOT / "truth.csv", newline="") as f:
        return list(csv.DictReader(f))


def rows_of(issue: str) -> list[dict[str, str]]:
    return [r for r in truth() if r["issue"] == issue]


def note(row: dict[str, str]) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in row["note"].split(";") if kv)


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for name in GENERATED
        for p in ([root / name] if (root / name).is_file() else (root / name).rglob("*"))
        if p.is_file()
    }


def load_builder():
    spec = importlib.util.spec_from_file_location(
        "build_sample_data", ROOT / "build_sample_data.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_truth_covers_every_issue_with_a_few_files_each():
    rows = truth()
    counts = {issue: sum(r["issue"] == issue for r in rows) for issue in VOCABULARY}
    assert set(r["issue"] for r in rows) == VOCABULARY
    assert all(2 <= n <= 4 for n in counts.values()), counts
    assert len({r["path"] for r in rows}) == len(rows)  # one planted issue per file


def test_every_truth_path_and_group_exists():
    for r in truth():
        assert (ROOT / r["path"]).is_file(), r["path"]
        if r["issue"] in {"exact_duplicate", "near_duplicate", "leakage"}:
            assert (ROOT / r["group"]).is_file(), r["group"]
        else:
            assert r["group"] == ""


def test_layout_is_imagefolder_with_splits_and_about_250_images():
    images = [p for p in ROOT.glob("*/*/*") if p.suffix in {".jpg", ".png"}]
    assert {p.parent.parent.name for p in images} == {"train", "test"}
    assert {p.parent.name for p in images} == {str(d) for d in range(10)}
    assert 240 <= len(images) <= 280
    test_share = sum(p.parent.parent.name == "test" for p in images) / len(images)
    assert 0.15 <= test_share <= 0.25
    assert (ROOT / "train/4/.DS_Store").is_file()
    assert (ROOT / "train/0/notes.txt").is_file()


def test_corrupt_files_fail_to_decode():
    corrupt = rows_of("corrupt")
    assert {note(r)["subtype"] for r in corrupt} == {"truncated", "zero_byte", "random_bytes"}
    for r in corrupt:
        # UnidentifiedImageError and "image file is truncated" are both OSErrors
        with pytest.raises(OSError), Image.open(ROOT / r["path"]) as im:
            im.load()


def test_wrong_extension_files_hold_the_other_format():
    rows = rows_of("wrong_extension")
    assert {Path(r["path"]).suffix for r in rows} == {".jpg", ".png"}
    for r in rows:
        head = (ROOT / r["path"]).read_bytes()[:8]
        if r["path"].endswith(".jpg"):
            assert head.startswith(b"\x89PNG\r\n\x1a\n"), r["path"]
        else:
            assert head.startswith(b"\xff\xd8\xff"), r["path"]
        with Image.open(ROOT / r["path"]) as im:
            im.load()  # the image itself is fine


def test_exact_duplicates_and_byte_leaks_are_byte_identical():
    byte_copies = rows_of("exact_duplicate") + [
        r for r in rows_of("leakage") if note(r)["variant"] == "byte_copy"
    ]
    assert len(byte_copies) >= 3
    for r in byte_copies:
        assert (ROOT / r["path"]).read_bytes() == (ROOT / r["group"]).read_bytes()
        assert r["path"] != r["group"]


def test_duplicates_share_a_folder_and_leaks_cross_from_train_to_test_of_one_class():
    for r in rows_of("exact_duplicate") + rows_of("near_duplicate"):
        assert Path(r["path"]).parent == Path(r["group"]).parent
    for r in rows_of("leakage"):
        path, group = Path(r["path"]), Path(r["group"])
        assert path.parts[0] == "test" and group.parts[0] == "train"
        assert path.parts[1] == group.parts[1]


def test_label_errors_sit_outside_their_true_class():
    rows = rows_of("label_error")
    assert len(rows) == 3
    for r in rows:
        assert Path(r["path"]).parts[1] != note(r)["true_label"]


def test_odd_size_includes_a_tiny_and_the_upright_big_photo():
    sizes = {}
    for r in rows_of("odd_size"):
        with Image.open(ROOT / r["path"]) as im:
            sizes[im.size] = r["path"]
            assert im.getexif().get(0x0112) is None  # orientation applied, not just recorded
    assert (16, 16) in sizes
    assert sizes[(504, 504)] == "train/7/IMG_5874.jpg"


def test_builder_checks_hold_on_the_shipped_bytes():
    """The builder's verify() (thresholds, correlations, unexplained copies) on the real files."""
    b = load_builder()
    files = {
        p.relative_to(ROOT).as_posix(): p.read_bytes()
        for split in ("train", "test")
        for p in (ROOT / split).rglob("*")
        if p.is_file()
    }
    rows = []
    for r in truth():
        kv = note(r)
        also_ok = set(kv.pop("also_ok", "").split(",")) - {""}
        rows.append(b.Row(r["path"], r["issue"], r["group"], kv, also_ok))
    assert b.verify(files, rows) == []


def test_builder_checks_catch_false_claims():
    """verify() is not vacuous: a decodable 'corrupt' file and a stray byte copy are caught."""
    b = load_builder()
    photo = next((ROOT / "train/5").glob("IMG_*.jpg")).read_bytes()
    files = {"train/5/a.jpg": photo, "train/5/b.jpg": photo}
    problems = b.verify(files, [b.Row("train/5/a.jpg", "corrupt")])
    assert any("decodes but is marked corrupt" in p for p in problems)
    assert any("unexplained identical files" in p for p in problems)


def test_readme_lists_every_planted_file_and_credits_the_source():
    readme = (ROOT / "README.md").read_text()
    for r in truth():
        assert f"`{r['path']}`" in readme
    assert "Sign Language Digits Dataset" in readme
    assert "Apache License 2.0" in readme
    assert "arXiv:2011.08927" in readme
    assert "build_sample_data.py" in readme
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_total_size_is_under_5_mb():
    total = sum(
        p.stat().st_size
        for p in ROOT.rglob("*")
        if p.is_file() and ".dataaudit" not in p.relative_to(ROOT).parts  # a local index
    )
    assert total < 5_000_000
    assert max(p.stat().st_size for p in ROOT.rglob("*.jpg")) < 200_000  # no 3024 px originals


def test_truth_csv_parses_as_plain_csv():
    text = (ROOT / "truth.csv").read_text()
    header = next(csv.reader(io.StringIO(text)))
    assert header == ["path", "issue", "group", "note"]


@pytest.mark.skipif(not SOURCE.is_dir(), reason="source dataset ../shared/datasets/signs absent")
def test_rebuild_is_byte_identical(tmp_path: Path):
    script = ROOT / "build_sample_data.py"
    out = tmp_path / "sample"
    done = subprocess.run(
        [sys.executable, str(script), "--source", str(SOURCE), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rebuilt, shipped = files_under(out), files_under(ROOT)
    assert sorted(rebuilt) == sorted(shipped)
    assert [p for p in shipped if rebuilt[p] != shipped[p]] == []
    assert not (out / ".build-new").exists() and not (out / ".build-old").exists()

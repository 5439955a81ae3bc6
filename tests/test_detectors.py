"""Each detector on generated data: plant one defect, assert that it and only it is flagged."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from dataaudit.detectors.config import load_config
from dataaudit.detectors.runner import run_detectors
from dataaudit.scan.pipeline import ScanOptions, scan
from dataaudit.store.db import open_index

LABELS = ("cat", "dog")


def texture(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A unique, sharp, colourful, mid-brightness image."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(60, 200, size=(6, 6, 3)).astype(np.uint8)
    img = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0, 14, size=arr.shape)  # fine detail so nothing looks blurry
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    arr[(xx // 8 + yy // 8 + seed) % 5 == 0] *= 0.75  # a pattern that differs per seed
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base")
    seed = 0
    for split, n in (("train", 14), ("test", 5)):
        for label in LABELS:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                seed += 1
                texture(seed).save(folder / f"{label}_{split}_{i}.jpg", quality=92)
    return root


def audit(root: Path, *overrides: str) -> pl.DataFrame:
    """Scan in-process and run the detectors; return flagged rows with paths."""
    db = root.parent / f"{root.name}.duckdb"
    scan(root, db, ScanOptions(workers=0))
    con = open_index(db)
    try:
        cfg, _ = load_config(overrides=list(overrides))
        run_detectors(con, cfg)
        return con.sql(
            "SELECT i.path, s.issue, s.group_id, s.score, s.details FROM issues s "
            "JOIN images i USING (file_id) WHERE s.is_issue ORDER BY ALL"
        ).pl()
    finally:
        con.close()


@pytest.fixture
def dataset(base_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(base_dataset, root)
    return root


def flagged(rows: pl.DataFrame, issue: str) -> set[str]:
    return set(rows.filter(pl.col("issue") == issue)["path"].to_list())


def test_clean_base_dataset_has_no_issues(dataset: Path) -> None:
    rows = audit(dataset)
    assert rows.height == 0, rows


def _only(rows: pl.DataFrame, issue: str, paths: set[str], also: set[str] = frozenset()) -> None:
    assert flagged(rows, issue) == paths
    others = set(rows["issue"].unique().to_list()) - {issue} - set(also)
    assert not others, rows.filter(pl.col("issue").is_in(others))


def test_corrupt(dataset: Path) -> None:
    (dataset / "train/cat/trunc.jpg").write_bytes(
        (dataset / "train/cat/cat_train_0.jpg").read_bytes()[:900]
    )
    (dataset / "train/dog/empty.jpg").write_bytes(b"")
    rows = audit(dataset)
    _only(rows, "corrupt", {"train/cat/trunc.jpg", "train/dog/empty.jpg"})
    details = dict(rows.filter(pl.col("issue") == "corrupt").select("path", "details").iter_rows())
    assert details["train/dog/empty.jpg"].startswith("empty file")
    assert "truncated" in details["train/cat/trunc.jpg"]


def test_wrong_extension(dataset: Path) -> None:
    texture(999).save(dataset / "train/cat/png_inside.jpg", format="PNG")
    rows = audit(dataset)
    _only(rows, "wrong_extension", {"train/cat/png_inside.jpg"})


def test_exact_duplicate_by_bytes_and_by_pixels(dataset: Path) -> None:
    src = dataset / "train/cat/cat_train_1.jpg"
    shutil.copy(src, dataset / "train/cat/copy.jpg")
    # Same pixels, different bytes: the decoded JPEG saved losslessly as PNG... under .png
    Image.open(dataset / "train/dog/dog_train_2.jpg").save(dataset / "train/dog/same_pixels.png")
    rows = audit(dataset)
    _only(
        rows,
        "exact_duplicate",
        {"train/cat/cat_train_1.jpg", "train/cat/copy.jpg", "train/dog/dog_train_2.jpg",
         "train/dog/same_pixels.png"},
        also={"unusual_mode"},
    )  # fmt: skip
    groups = rows.filter(pl.col("issue") == "exact_duplicate").group_by("group_id").len()
    assert sorted(groups["len"].to_list()) == [2, 2]


def test_near_duplicate_recompressed_resized_brightened(dataset: Path) -> None:
    img = Image.open(dataset / "train/cat/cat_train_3.jpg")
    img.save(dataset / "train/cat/recompressed.jpg", quality=35)
    img2 = Image.open(dataset / "train/dog/dog_train_4.jpg")
    img2.resize((56, 56)).save(dataset / "train/dog/resized.jpg", quality=80)
    arr = np.asarray(Image.open(dataset / "train/dog/dog_train_5.jpg"), dtype=np.float32)
    Image.fromarray(np.clip(arr * 1.12, 0, 255).astype(np.uint8)).save(
        dataset / "train/dog/brighter.jpg", quality=90
    )
    rows = audit(dataset)
    expected = {
        "train/cat/cat_train_3.jpg", "train/cat/recompressed.jpg",
        "train/dog/dog_train_4.jpg", "train/dog/resized.jpg",
        "train/dog/dog_train_5.jpg", "train/dog/brighter.jpg",
    }  # fmt: skip
    _only(rows, "near_duplicate", expected)
    near = rows.filter(pl.col("issue") == "near_duplicate")
    assert near.group_by("group_id").len()["len"].sort().to_list() == [2, 2, 2]


def test_a_phash_search_over_budget_runs_at_a_lower_radius_and_says_so(dataset: Path) -> None:
    img = Image.open(dataset / "train/cat/cat_train_1.jpg")
    ImageEnhance.Contrast(img).enhance(1.6).save(dataset / "train/cat/contrast.jpg", quality=85)
    rows = audit(dataset, "duplicates.phash_max_cost=1e-12")  # no radius fits: 0
    assert flagged(rows, "near_duplicate") == set()  # the copy's pHash differs in 2 bits
    con = open_index(dataset.parent / f"{dataset.name}.duckdb")
    found = con.sql(
        "SELECT message, details FROM findings WHERE finding = 'phash_radius_lowered'"
    ).fetchall()
    con.close()
    assert len(found) == 1 and "radius 0, not 6" in found[0][0]
    assert flagged(audit(dataset), "near_duplicate") == {
        "train/cat/cat_train_1.jpg",
        "train/cat/contrast.jpg",
    }


def test_leakage_across_splits(dataset: Path) -> None:
    shutil.copy(dataset / "train/cat/cat_train_6.jpg", dataset / "test/cat/leaked.jpg")
    rows = audit(dataset)
    pair = {"train/cat/cat_train_6.jpg", "test/cat/leaked.jpg"}
    assert flagged(rows, "leakage") == pair
    assert flagged(rows, "exact_duplicate") == pair
    leak = rows.filter(pl.col("issue") == "leakage")
    assert "test" in leak["details"][0] and "train" in leak["details"][0]
    # The copy to keep is the training one (export's rule), though "test/" sorts first.
    con = open_index(dataset.parent / f"{dataset.name}.duckdb")
    reps = con.sql(
        "SELECT i.path FROM duplicate_groups g JOIN images i USING (file_id) "
        "WHERE g.is_representative"
    ).fetchall()
    con.close()
    assert reps == [("train/cat/cat_train_6.jpg",)]


def _save_array(arr: np.ndarray, path: Path) -> None:
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=92)


def test_dark(dataset: Path) -> None:
    _save_array(np.asarray(texture(501), dtype=np.float32) * 0.12, dataset / "train/cat/dark.jpg")
    rows = audit(dataset)
    _only(rows, "dark", {"train/cat/dark.jpg"}, also={"low_information"})


def test_light(dataset: Path) -> None:
    arr = 255 - (255 - np.asarray(texture(502), dtype=np.float32)) * 0.12
    _save_array(arr, dataset / "train/cat/light.jpg")
    rows = audit(dataset)
    _only(rows, "light", {"train/cat/light.jpg"}, also={"low_information"})


def test_blurry(dataset: Path) -> None:
    texture(503).filter(ImageFilter.GaussianBlur(2.5)).save(dataset / "train/dog/blurry.jpg")
    rows = audit(dataset)
    _only(rows, "blurry", {"train/dog/blurry.jpg"})


def test_low_information(dataset: Path) -> None:
    rng = np.random.default_rng(7)
    flat = np.full((64, 64, 3), (120, 140, 90), dtype=np.float32) + rng.normal(0, 2, (64, 64, 3))
    _save_array(flat, dataset / "train/dog/flat.jpg")
    rows = audit(dataset)
    _only(rows, "low_information", {"train/dog/flat.jpg"})


def test_grayscale_in_colour_dataset(dataset: Path) -> None:
    texture(504).convert("L").convert("RGB").save(dataset / "train/cat/gray.jpg", quality=92)
    rows = audit(dataset)
    _only(rows, "grayscale", {"train/cat/gray.jpg"})


def test_all_grayscale_dataset_flags_no_grayscale(dataset: Path) -> None:
    for p in dataset.rglob("*.jpg"):
        Image.open(p).convert("L").convert("RGB").save(p, quality=92)
    rows = audit(dataset)
    assert flagged(rows, "grayscale") == set()


def test_odd_size_and_aspect(dataset: Path) -> None:
    texture(505, (16, 16)).save(dataset / "train/cat/tiny.jpg")
    texture(506, (256, 256)).save(dataset / "train/cat/huge.jpg")
    texture(507, (128, 32)).save(dataset / "train/dog/strip.jpg")
    rows = audit(dataset)
    assert flagged(rows, "odd_size") == {"train/cat/tiny.jpg", "train/cat/huge.jpg"}
    assert flagged(rows, "odd_aspect_ratio") == {"train/dog/strip.jpg"}


def test_informational_flags(dataset: Path) -> None:
    cmyk = texture(508).convert("CMYK")
    cmyk.save(dataset / "train/cat/cmyk.jpg")
    img = texture(509)
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(dataset / "train/dog/rotated.jpg", exif=exif.tobytes())
    frames = [texture(510 + i) for i in range(3)]
    frames[0].save(dataset / "train/dog/anim.gif", save_all=True, append_images=frames[1:])
    buf = io.BytesIO()
    texture(520).save(buf, "JPEG")
    (dataset / "train/cat/trailing.jpg").write_bytes(buf.getvalue() + b"GARBAGE" * 10)
    rows = audit(dataset)
    assert "train/cat/cmyk.jpg" in flagged(rows, "unusual_mode")
    assert flagged(rows, "exif_rotated") == {"train/dog/rotated.jpg"}
    assert flagged(rows, "animated") == {"train/dog/anim.gif"}
    assert flagged(rows, "trailing_data") == {"train/cat/trailing.jpg"}


def test_balance_findings(dataset: Path) -> None:
    (dataset / "test/horse").mkdir()
    texture(600).save(dataset / "test/horse/only.jpg")
    db = dataset.parent / "bal.duckdb"
    scan(dataset, db, ScanOptions(workers=0))
    con = open_index(db)
    cfg, _ = load_config()
    result = run_detectors(con, cfg)
    kinds = {f.finding: f for f in result.findings}
    assert "missing_class" in kinds and "'horse'" in kinds["missing_class"].message
    assert "class_in_one_split" in kinds
    assert "singleton_class" in kinds
    con.close()


def test_spurious_size_signal(dataset: Path) -> None:
    for p in dataset.glob("*/dog/*.jpg"):
        Image.open(p).resize((80, 80)).save(p, quality=92)
    db = dataset.parent / "sp.duckdb"
    scan(dataset, db, ScanOptions(workers=0))
    con = open_index(db)
    cfg, _ = load_config()
    result = run_detectors(con, cfg)
    spurious = [f for f in result.findings if f.finding == "spurious_signal"]
    assert any(f.details["property"] == "area (px)" for f in spurious), result.findings
    con.close()


def test_threshold_change_recomputes_without_rescan(dataset: Path) -> None:
    _save_array(np.asarray(texture(701), dtype=np.float32) * 0.3, dataset / "train/cat/dim.jpg")
    default = audit(dataset)
    strict = audit(dataset, "quality.dark_max_mean=30", "quality.dark_always_mean=10")
    assert flagged(strict, "dark") <= flagged(default, "dark")

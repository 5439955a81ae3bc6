"""Embedding detectors end to end on generated data, with the real pretrained backbone,
and the promise that everything but the embedder works without torch."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from dataaudit.detectors.config import load_config
from dataaudit.detectors.runner import run_detectors
from dataaudit.scan.pipeline import ScanOptions, scan
from dataaudit.store.db import open_index


def stripes(seed: int) -> Image.Image:
    """Diagonal stripes over a random smooth colour field: one class of unique images."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(40, 220, (5, 5, 3), dtype=np.uint8)).resize(
        (96, 96), Image.Resampling.BICUBIC
    )
    yy, xx = np.mgrid[0:96, 0:96]
    period = int(rng.integers(8, 16))
    band = ((xx + yy * rng.uniform(0.3, 1.5)) // period) % 2
    arr = np.asarray(field, dtype=np.float32) * np.where(band[..., None] == 0, 1.0, 0.55)
    arr += rng.normal(0, 8, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def blobs(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (96, 96), tuple(int(v) for v in rng.integers(150, 255, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y, r = (int(v) for v in rng.integers(10, 86, 3) // (1, 1, 3))
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 120, 3))
        )
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (96, 96, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def foreign(seed: int) -> Image.Image:
    """A photo-like scene unlike both classes: sky gradient, sun and mountains."""
    rng = np.random.default_rng(seed)
    sky = np.linspace(30, 200, 96)[:, None, None] * np.array([0.4, 0.6, 1.0])
    arr = np.broadcast_to(sky, (96, 96, 3)).copy()
    img = Image.fromarray(arr.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse((60, 10, 80, 30), fill=(255, 220, 60))
    draw.polygon([(0, 96), (30, 40), (55, 96)], fill=(60, 80, 50))
    draw.polygon([(35, 96), (70, 50), (96, 96)], fill=(40, 60, 40))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 5, (96, 96, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    root = tmp_path_factory.mktemp("sem") / "data"
    for label, make in (("stripes", stripes), ("blobs", blobs)):
        (root / "train" / label).mkdir(parents=True)
        for i in range(14):
            make(100 * (label == "blobs") + i).save(root / "train" / label / f"{i}.jpg", quality=92)
    original = blobs(103)  # train/blobs/3.jpg
    w, h = original.size
    original.crop((8, 7, w - 6, h - 9)).save(root / "train/blobs/crop_of_3.jpg", quality=90)
    foreign(7).save(root / "train/blobs/scene.jpg", quality=92)
    blobs(555).save(root / "train/stripes/actually_blobs.jpg", quality=92)
    db = root.parent / "index.duckdb"
    from dataaudit.embed.stage import EmbedStage

    scan(root, db, ScanOptions(workers=0, embed=EmbedStage()))
    con = open_index(db)
    try:
        cfg, _ = load_config()
        run_detectors(con, cfg)
        return con.sql(
            "SELECT i.path, s.issue, s.score, s.is_issue, s.details FROM issues s "
            "JOIN images i USING (file_id)"
        ).pl()
    finally:
        con.close()


def test_planted_crop_is_a_near_duplicate(audited: pl.DataFrame) -> None:
    near = audited.filter((pl.col("issue") == "near_duplicate") & pl.col("is_issue"))
    assert {"train/blobs/crop_of_3.jpg", "train/blobs/3.jpg"} <= set(near["path"])


def test_foreign_image_is_the_top_outlier(audited: pl.DataFrame) -> None:
    ranked = audited.filter(pl.col("issue") == "outlier").sort("score", descending=True)
    assert ranked["path"][0] == "train/blobs/scene.jpg"


def test_wrong_label_is_suggested_back(audited: pl.DataFrame) -> None:
    row = audited.filter(
        (pl.col("issue") == "label_error") & (pl.col("path") == "train/stripes/actually_blobs.jpg")
    )
    assert row["is_issue"][0]
    assert "neighbours say blobs" in row["details"][0]


def test_unlabelled_folder_with_embeddings(tmp_path: Path) -> None:
    """No labels means no per-label neighbours: the detectors still run (a NaN spread once
    reached the SQL as a column name) and the scene among stripes is the top outlier."""
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(16):
        stripes(i).save(root / f"{i}.jpg", quality=92)
    foreign(3).save(root / "scene.jpg", quality=92)
    db = tmp_path / "index.duckdb"
    from dataaudit.embed.stage import EmbedStage

    scan(root, db, ScanOptions(workers=0, embed=EmbedStage()))
    con = open_index(db)
    try:
        assert con.sql("SELECT count(*) FROM knn WHERE scope = 'label'").fetchall() == [(0,)]
        cfg, _ = load_config()
        run_detectors(con, cfg)
        ranked = con.sql(
            "SELECT i.path FROM issues s JOIN images i USING (file_id) "
            "WHERE s.issue = 'outlier' ORDER BY s.score DESC"
        ).fetchall()
    finally:
        con.close()
    assert ranked[0] == ("scene.jpg",)


# torch belongs to embedding and training code only. Everything else, the torch-free parts of
# dataaudit.embed included (scan workers import spec; stage imports torch only when used),
# must import without it, or a --no-embed scan, the CLI and the app pay seconds and GBs.
TORCH_PACKAGES = ("dataaudit.embed.", "dataaudit.train.")
TORCH_FREE_EMBED = ("dataaudit.embed.spec", "dataaudit.embed.stage", "dataaudit.embed.analysis")


def light_modules() -> list[str]:
    import dataaudit

    names = [m.name for m in pkgutil.walk_packages(dataaudit.__path__, "dataaudit.")]
    names = [n for n in names if not n.endswith(".__main__")]  # importing it runs the CLI
    return [n for n in names if not n.startswith(TORCH_PACKAGES) or n in TORCH_FREE_EMBED]


def test_light_modules_do_not_import_torch() -> None:
    modules = light_modules()
    assert {"dataaudit.cli", "dataaudit.scan.pipeline", "dataaudit.scan.writer"} <= set(modules)
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit('importing ' + m + ' imported torch')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_scan_no_embed_works_without_torch(tmp_path: Path) -> None:
    root = tmp_path / "data" / "a"
    root.mkdir(parents=True)
    for i in range(3):
        stripes(i).save(root / f"{i}.jpg")
    code = (
        "import sys; sys.modules['torch'] = None  # any torch import now fails\n"
        "from dataaudit.cli import main\n"
        f"sys.exit(main(['scan', {str(tmp_path / 'data')!r}, '--no-embed', '--workers', '0', '-q']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "images indexed  3" in out.stdout

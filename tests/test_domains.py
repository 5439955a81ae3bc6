"""Detectors on datasets unlike hand photos: tiny grayscale digits, objects on one backdrop,
and a batch of foreign images (issue 13). Each test plants the failure class it guards."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import gaussian_filter

from dataaudit.detectors.base import DetectContext, dataset_findings
from dataaudit.detectors.config import DetectConfig, load_config
from dataaudit.detectors.label_votes import detect_label_errors
from dataaudit.detectors.runner import run_detectors
from dataaudit.detectors.semantic import detect_outliers
from dataaudit.scan.pipeline import ScanOptions, scan
from dataaudit.store.db import open_index


def audit(root: Path, *overrides: str) -> tuple[pl.DataFrame, list[str]]:
    """Scan (no embeddings) and detect; flagged rows with paths, and the finding names."""
    db = root.parent / f"{root.name}.duckdb"
    scan(root, db, ScanOptions(workers=0))
    con = open_index(db)
    try:
        cfg, _ = load_config(overrides=list(overrides))
        result = run_detectors(con, cfg)
        rows = con.sql(
            "SELECT i.path, s.issue FROM issues s JOIN images i USING (file_id) "
            "WHERE s.is_issue ORDER BY ALL"
        ).pl()
        return rows, [f.finding for f in result.findings]
    finally:
        con.close()


def flagged(rows: pl.DataFrame, issue: str) -> set[str]:
    return set(rows.filter(pl.col("issue") == issue)["path"].to_list())


def digit(rng: np.random.Generator) -> Image.Image:
    """A 28x28 light-on-black scribble: a few thick strokes, like a handwritten digit."""
    im = Image.new("L", (112, 112), 0)
    d = ImageDraw.Draw(im)
    pts = [tuple(int(v) for v in rng.integers(24, 88, 2)) for _ in range(int(rng.integers(3, 6)))]
    d.line(pts, fill=int(rng.integers(180, 256)), width=int(rng.integers(8, 16)), joint="curve")
    if rng.random() < 0.5:
        x, y = (int(v) for v in rng.integers(30, 60, 2))
        d.ellipse((x, y, x + 30, y + 36), outline=230, width=10)
    return im.resize((28, 28), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits") / "data"
    rng = np.random.default_rng(13)
    for i in range(120):
        folder = root / ("train" if i % 5 else "test") / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        digit(rng).save(folder / f"{i}.png")
    return root


def test_tiny_grayscale_digits_are_not_odd_dark_or_flat(digits: Path) -> None:
    Image.new("L", (28, 28), 0).save(digits / "train/0/black.png")  # unusable by any standard
    rows, findings = audit(digits)
    assert flagged(rows, "odd_size") == set()
    assert flagged(rows, "low_information") == {"train/0/black.png"}
    assert flagged(rows, "dark") == {"train/0/black.png"}
    assert flagged(rows, "grayscale") == set()
    # the size is said once, for the dataset
    assert "small_images" in findings


def test_a_type_too_common_to_flag_per_file_becomes_one_finding(digits: Path) -> None:
    # blurry at z = 0.5 would flag a quarter of the digits: said once, flags none
    rows, findings = audit(digits, "quality.blurry_z=0.5")
    assert flagged(rows, "blurry") == set() and "common_blurry" in findings
    rows, findings = audit(digits, "quality.blurry_z=0.5", "dataset.max_issue_share=1.0")
    assert len(flagged(rows, "blurry")) > 12 and "common_blurry" not in findings


def backdrop(size: tuple[int, int] = (96, 128)) -> Image.Image:
    """One fixed patterned backdrop (a striped bedspread) that fills most of every frame."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = np.stack([170 + 40 * np.sin(xx / 3.0) * np.sin(yy / 5.0), 150 + 30 * np.sin((xx + yy) / 6.0),
                  120 + 40 * np.cos(yy / 2.5)], -1)  # fmt: skip
    a += np.random.default_rng(0).normal(0, 3, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def on_backdrop(seed: int) -> Image.Image:
    """A different object (shape, colour, place) on the shared backdrop, ~12% of the frame."""
    rng = np.random.default_rng(seed)
    im = backdrop()
    d = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(20, 50, 2)), int(rng.integers(30, 80))
    x = int(rng.integers(15, 50))
    pts = [(x + int(dx), y + int(dy)) for dx, dy in rng.integers(0, 38, (6, 2))]
    d.polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def test_different_objects_on_one_backdrop_are_not_near_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for i in range(40):
        folder = root / "train" / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        on_backdrop(i).save(folder / f"{i}.jpg", quality=92)
    buf = io.BytesIO()
    on_backdrop(0).save(buf, "JPEG", quality=60)  # a real copy, recompressed
    (root / "train/b/copy_of_0.jpg").write_bytes(buf.getvalue())
    rows, _ = audit(root)
    assert flagged(rows, "near_duplicate") == {"train/b/0.jpg", "train/b/copy_of_0.jpg"}
    # without the content check the shared backdrop makes distinct objects "copies"
    loose, _ = audit(root, "duplicates.min_residual_correlation=-1")
    assert len(flagged(loose, "near_duplicate")) > 2


def knn_context(vectors: np.ndarray, labels: list[str], k: int = 10) -> DetectContext:
    """A detect context over an in-memory index holding the exact kNN of ``vectors``."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    rows = []
    for scope in ("all", "label"):
        s = sim.copy()
        if scope == "label":
            lab = np.array(labels)
            s[lab[:, None] != lab[None, :]] = -np.inf
        nb = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for i in range(len(vectors)):
            for r, j in enumerate(nb[i]):
                rows.append((i + 1, int(j) + 1, r + 1, float(s[i, j]), scope))
    con = duckdb.connect()
    con.execute("CREATE TABLE knn (file_id BIGINT, neighbor_id BIGINT, rank SMALLINT, "
                "similarity REAL, scope VARCHAR)")  # fmt: skip
    con.executemany("INSERT INTO knn VALUES (?, ?, ?, ?, ?)", rows)
    images = pl.DataFrame({"file_id": np.arange(1, len(vectors) + 1), "label": labels,
                           "path": [f"{lab}/{i}.jpg" for i, lab in enumerate(labels)]})  # fmt: skip
    return DetectContext(con, DetectConfig(), images)


def test_a_batch_of_foreign_images_spread_over_the_classes_is_flagged() -> None:
    rng = np.random.default_rng(7)
    dim, classes = 32, [str(c) for c in range(10)]
    centres = rng.normal(0, 1, (10, dim))
    normal = [centres[i % 10] + rng.normal(0, 0.35, dim) for i in range(979)]
    labels = [classes[i % 10] for i in range(979)]
    foreign_centre = rng.normal(0, 1, dim)
    batch = [foreign_centre + rng.normal(0, 0.35, dim) for _ in range(20)]  # one other domain
    stray = [rng.normal(0, 1, dim) * 3]  # and one image unlike anything
    vectors = np.array(normal + batch + stray)
    labels += [classes[i % 10] for i in range(20)] + ["3"]
    ctx = knn_context(vectors, labels)
    rows = detect_outliers(ctx).filter(pl.col("is_issue"))
    ids = set(rows["file_id"].to_list())
    batch_ids = set(range(980, 1000))  # file ids are positions + 1
    assert len(ids & batch_ids) >= 18
    assert 1000 in ids  # the single stray is still found
    assert len(ids - batch_ids - {1000}) <= 5
    groups = rows.filter(pl.col("file_id").is_in(list(batch_ids)))["group_id"].unique()
    assert groups.len() == 1 and groups[0] is not None  # one cluster id for the batch
    clusters = [f for f in dataset_findings(ctx) if f.finding == "outlier_cluster"]
    assert len(clusters) == 1 and clusters[0].details["size"] >= 18


def test_registry_refuses_a_detector_that_reads_what_runs_later(monkeypatch) -> None:
    from dataaudit.detectors import registry

    order = list(registry.DETECTORS)
    outliers = next(d for d in order if d.name == "outliers")
    order.remove(outliers)
    order.insert(0, outliers)  # outliers before quality, whose flags it reads
    monkeypatch.setattr(registry, "DETECTORS", tuple(order))
    with pytest.raises(RuntimeError, match="outliers reads"):
        registry._check_registry()


def test_shifted_and_cropped_copies_of_tiny_digits_are_near_duplicates(tmp_path: Path) -> None:
    """A 2-px shift and a 90% crop rescaled to 28 px are copies even when the embedding ranks
    them only 3rd, behind look-alike digits; distinct look-alikes are not copies."""
    root = tmp_path / "data"
    rng = np.random.default_rng(5)
    for i in range(60):
        folder = root / "train" / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        digit(rng).save(folder / f"{i}.png")
    original = Image.open(root / "train/0/0.png")
    shifted = Image.new("L", (28, 28), 0)
    shifted.paste(original, (2, -2))
    shifted.save(root / "train/0/shifted_0.png")
    cropped = Image.open(root / "train/1/1.png").crop((1, 2, 26, 27))
    cropped.resize((28, 28), Image.Resampling.BICUBIC).save(root / "train/1/cropped_1.png")
    db = tmp_path / "data.duckdb"
    scan(root, db, ScanOptions(workers=0))
    con = open_index(db)
    try:
        plant_pixel_knn(con, copies={"train/0/shifted_0.png": "train/0/0.png",
                                     "train/1/cropped_1.png": "train/1/1.png"})  # fmt: skip

        def near(*overrides: str) -> set[str]:
            cfg, _ = load_config(overrides=list(overrides))
            run_detectors(con, cfg)
            rows = con.sql(
                "SELECT i.path FROM issues s JOIN images i USING (file_id) "
                "WHERE s.is_issue AND s.issue = 'near_duplicate'"
            ).pl()
            return set(rows["path"].to_list())

        copies = {
            "train/0/0.png",
            "train/0/shifted_0.png",
            "train/1/1.png",
            "train/1/cropped_1.png",
        }
        assert near() == copies
        # checking only each image's nearest neighbour (as before) misses both copies
        assert near("duplicates.align_ranks=1") & copies == set()
        # a pair budget keeps the nearest ranks and says what it left unchecked
        assert near("duplicates.align_max_pairs=60") & copies == set()
        (message,) = con.sql(
            "SELECT message FROM findings WHERE finding = 'aligned_check_limited'"
        ).fetchall()[0]
        assert "checked for 60 of 183" in message and "up to rank 2" in message  # copies: 3
    finally:
        con.close()


def plant_pixel_knn(con: duckdb.DuckDBPyConnection, copies: dict[str, str], k: int = 10) -> None:
    """A kNN table from pixel cosine similarity (a stand-in embedding), with each copy's
    original moved to rank 3 behind two look-alikes, as the embedding ranks tiny copies."""
    from dataaudit.detectors.align import small_gray

    rows = con.execute(
        "SELECT i.file_id, i.path, t.jpeg, i.label FROM images i JOIN thumbnails t "
        "USING (file_id) ORDER BY i.file_id"
    ).fetchall()
    ids = np.array([r[0] for r in rows])
    index = {r[1]: n for n, r in enumerate(rows)}
    vec = np.stack([small_gray(r[2]).ravel() for r in rows])
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    sim = vec @ vec.T
    np.fill_diagonal(sim, -np.inf)
    order = [list(np.argsort(-sim[i], kind="stable")[:k]) for i in range(len(rows))]
    for copy, orig in copies.items():
        for x, y in ((index[copy], index[orig]), (index[orig], index[copy])):
            others = [j for j in order[x] if j != y]
            order[x] = [*others[:2], y, *others[2 : k - 1]]
    # tiny look-alikes all embed alike (0.8-1.0); the order is what matters here
    top = np.sort(sim, axis=1)[:, ::-1][:, :k]
    knn = [(int(ids[i]), int(ids[j]), r + 1, 0.8 + 0.2 * float(top[i, r]), "all")
           for i in range(len(rows)) for r, j in enumerate(order[i])]  # fmt: skip
    knn += [(int(ids[i]), int(ids[j]), r + 1, 0.8 + 0.2 * float(top[i, r]), "label")
            for i in range(len(rows))
            for r, j in enumerate(x for x in order[i] if rows[x][3] == rows[i][3])]  # fmt: skip
    con.execute("DELETE FROM knn")
    con.executemany("INSERT INTO knn VALUES (?, ?, ?, ?, ?)", knn)


def test_aligned_content_tells_a_crop_from_another_object_on_the_backdrop() -> None:
    from dataaudit.detectors.align import (
        aligned_content_correlation,
        aligned_correlation,
        background_of,
    )

    def grey(im: Image.Image) -> np.ndarray:
        return np.asarray(im.convert("L"), dtype=np.float32)

    frames = [grey(on_backdrop(i)) for i in range(12)]
    background = background_of(frames[2:], frames[0].shape)
    crop = grey(on_backdrop(0).crop((6, 8, 90, 120)))  # 88% of the frame, not resized
    other = frames[1]
    # the whole frames line up about as well either way (the backdrop dominates) ...
    assert aligned_correlation(frames[0], other) > 0.9
    # ... what differs from the backdrop does not
    assert aligned_content_correlation(frames[0], crop, background) > 0.95
    assert aligned_content_correlation(frames[0], other, background) < 0.5


def with_embeddings(ctx: DetectContext, vectors: np.ndarray) -> DetectContext:
    """The same context with the vectors stored as the index's embeddings."""
    ctx.con.execute("CREATE TABLE embeddings (file_id BIGINT, vector FLOAT[])")
    ctx.con.executemany(
        "INSERT INTO embeddings VALUES (?, ?)",
        [(i + 1, v.astype(np.float32).tolist()) for i, v in enumerate(vectors)],
    )
    return ctx


def nuisance_dataset(seed: int, n: int = 600, classes: int = 6, noise: float = 1.0):
    """Vectors whose class lives in 4 of 48 dimensions while a shared backdrop (one of three)
    and per-image noise fill the rest, as on look-alike data: an image's nearest neighbours
    share its backdrop, not its class. 12 labels are wrong. -> vectors, labels, wrong ids."""
    rng = np.random.default_rng(seed)
    dim, cdims = 48, 4
    centres = np.zeros((classes, dim))
    centres[:, :cdims] = rng.normal(0, 1.0, (classes, cdims))
    backdrops = np.zeros((3, dim))
    backdrops[:, cdims:] = rng.normal(0, 3.0, (3, dim - cdims))
    y = np.arange(n) % classes
    scale = np.r_[np.full(cdims, 0.2), np.ones(dim - cdims)]
    vectors = centres[y] + backdrops[rng.integers(0, 3, n)] + rng.normal(0, noise, (n, dim)) * scale
    labels = [str(c) for c in y]
    wrong = rng.choice(n, 12, replace=False)
    for i in wrong:
        labels[i] = str((y[i] + 1 + rng.integers(0, classes - 1)) % classes)
    return vectors, labels, {int(i) + 1 for i in wrong}


@pytest.mark.parametrize("seed", [1, 2])
def test_neighbours_outvoted_by_a_shared_backdrop_need_the_probe_to_agree(seed: int) -> None:
    vectors, labels, wrong = nuisance_dataset(seed)
    ctx = with_embeddings(knn_context(vectors, labels), vectors)
    ctx.config.semantic.label_probe = False
    alone = set(detect_label_errors(ctx).filter(pl.col("is_issue"))["file_id"].to_list())
    assert len(alone - wrong) >= 30  # the neighbour vote alone: 5 % of correct labels doubted
    ctx.config.semantic.label_probe = True
    rows = detect_label_errors(ctx)
    both = set(rows.filter(pl.col("is_issue"))["file_id"].to_list())
    assert len(both - wrong) <= 6  # the probe separates the classes: <= 1 %
    assert both <= alone  # the probe only vetoes
    probe = ctx.stats["label_probe"]
    assert probe["fitted"] == 600 and probe["classes"] == 6 and probe["accuracy"] > 0.8
    flagged = rows.filter(pl.col("is_issue"))["details"].to_list()
    assert all("a linear probe on the embeddings says" in d for d in flagged)


def test_the_probe_keeps_wrong_labels_the_neighbours_find() -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 1.0, (6, 32))
    y = np.arange(600) % 6
    vectors = centres[y] + rng.normal(0, 0.35, (600, 32))
    labels = [str(c) for c in y]
    wrong = rng.choice(600, 12, replace=False)
    for i in wrong:
        labels[i] = str((y[i] + 1 + rng.integers(0, 5)) % 6)
    ctx = with_embeddings(knn_context(vectors, labels), vectors)
    flagged = set(detect_label_errors(ctx).filter(pl.col("is_issue"))["file_id"].to_list())
    wrong_ids = {int(i) + 1 for i in wrong}
    assert len(flagged & wrong_ids) >= 10 and flagged <= wrong_ids


def product_shot(seed: int) -> Image.Image:
    """An object with sharp edges on a backdrop of its own texture: sine stripes of some
    period, or soft colour noise of some grain (like a rug); 96x128 px."""
    rng = np.random.default_rng(seed)
    h, w = 128, 96
    xx = np.mgrid[0:h, 0:w][1].astype(np.float32)
    if seed % 2:
        a = np.repeat((150 + 40 * np.sin(xx / rng.uniform(2.0, 6.0)))[..., None], 3, -1)
    else:
        grain = rng.uniform(0.6, 2.5)
        noise = [gaussian_filter(rng.normal(0, 1, (h, w)), grain) for _ in range(3)]
        a = 150 + 30 * np.stack(noise, -1) / (0.28 / grain)
    im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")
    x, y = int(rng.integers(10, 40)), int(rng.integers(10, 60))
    pts = [(x + int(dx), y + int(dy)) for dx, dy in rng.integers(0, 50, (6, 2))]
    ImageDraw.Draw(im).polygon(pts, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def test_blur_on_a_soft_textured_backdrop_is_found(tmp_path: Path) -> None:
    root = tmp_path / "data"
    blurred = set()
    for i in range(80):
        folder = root / "train" / str(i % 4)
        folder.mkdir(parents=True, exist_ok=True)
        im = product_shot(i)
        if i % 20 == 4:  # 4 shots on the soft backdrop, blurred by 1.2 px
            im = im.filter(ImageFilter.GaussianBlur(1.2))
            blurred.add(f"train/{i % 4}/{i}.jpg")
        im.save(folder / f"{i}.jpg", quality=92)
    rows, _ = audit(root)
    assert flagged(rows, "blurry") == blurred
    # the fine/coarse detail ratio alone varies with the texture more than blur moves it
    ratio_only, _ = audit(root, "quality.blurry_max_edge=0")
    assert flagged(ratio_only, "blurry") == set()


def test_upscaled_odd_size_digits_are_odd_not_blurry(digits: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(digits, root)
    rng = np.random.default_rng(5)
    for i in range(3):  # thumbnails upscaled 4x: soft at their own pixel grid
        digit(rng).resize((112, 112), Image.Resampling.BICUBIC).save(root / f"train/0/big{i}.png")
    for i in range(3):
        digit(rng).filter(ImageFilter.GaussianBlur(1.5)).save(root / f"train/1/blur{i}.png")
    rows, _ = audit(root)
    assert flagged(rows, "odd_size") == {f"train/0/big{i}.png" for i in range(3)}
    assert flagged(rows, "blurry") == {f"train/1/blur{i}.png" for i in range(3)}

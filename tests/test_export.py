"""`dataaudit export` end to end: real scans of generated folders, the real CLI and the API."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import ODD_NAMES, REPO, _subprocess_env
from PIL import Image

import dataaudit as da
from dataaudit.errors import DataAuditError
from dataaudit.export.write import file_hash
from dataaudit.store.decisions import Decisions

SIGNS = REPO.parent / "shared" / "bench" / "signs_planted"


def _photo(seed: int, size: int = 48, fmt: str = "PNG", **save) -> bytes:
    """A textured image (smooth blobs plus noise), distinct per seed, informative enough for
    perceptual hashing."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((size, size), Image.BICUBIC)
    arr = np.asarray(im).astype(np.int16) + rng.integers(-12, 12, (size, size, 3))
    buf = io.BytesIO()
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(buf, fmt, **save)
    return buf.getvalue()


def _put(root: Path, rel: str, data: bytes) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)


def _dataset(root: Path) -> None:
    """train/test x cat/dog with one corrupt file, one exact copy, one leak, odd names."""
    seed = 0
    for split, n in (("train", 8), ("test", 3)):
        for label in ("cat", "dog"):
            for i in range(n):
                seed += 1
                _put(root, f"{split}/{label}/{label}{i}.png", _photo(seed))
    for i, name in enumerate(ODD_NAMES):
        _put(root, f"train/cat/{name}", _photo(100 + i, fmt="PNG"))
    _put(root, "train/cat/broken.png", _photo(999)[:150])  # truncated
    shutil.copy(root / "train/dog/dog0.png", root / "train/dog/dog0 copy.png")  # exact copy
    shutil.copy(root / "train/cat/cat1.png", root / "test/cat/leaked.png")  # leak into test


def _checksums(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".dataaudit"]
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = file_hash(p)
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _dataset(root)
    da.scan(root, embed=False)
    return root


def _tree(out: Path) -> dict[str, str]:
    return {k: v for k, v in _checksums(out).items() if k != "summary.json"}


def test_default_export_cli_equals_api_and_source_is_untouched(data, tmp_path, cli):
    before = _checksums(data)
    rc, stdout, err = cli("export", data, "--out", tmp_path / "cli")
    assert rc == 0, err
    res = da.export(da.open_index(data), tmp_path / "api")
    assert _checksums(data) == before
    assert _tree(tmp_path / "cli") == _tree(tmp_path / "api")
    s_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert s_cli["dropped_by_rule"] == res.summary["dropped_by_rule"]
    assert s_cli["dropped_by_rule"] == {"corrupt": 1, "duplicate": 1, "leakage": 1}
    assert "corrupt" in stdout and "leakage" in stdout

    out = tmp_path / "api"
    manifest = pl.read_csv(out / "manifest.csv")
    assert manifest.height == res.summary["files_after"] == res.summary["files_before"] - 3
    assert pl.read_parquet(out / "manifest.parquet").equals(manifest)
    for row in manifest.iter_rows(named=True):
        assert file_hash(out / row["path"]) == row["content_hash"]
        assert row["path"] == f"{row['split']}/{row['label']}/{row['path'].split('/')[-1]}"
    assert "test/cat/leaked.png" not in manifest["source_path"].to_list()
    assert "train/cat/cat1.png" in manifest["source_path"].to_list()
    dest_of = dict(zip(manifest["source_path"], manifest["path"], strict=True))
    for name in ODD_NAMES:  # every awkward name made the round trip, bytes intact
        dest = dest_of[f"train/cat/{name}"]
        assert dest == f"train/cat/{name.rsplit('/', 1)[-1]}"  # a/b.jpg: subfolders flattened
        assert (out / dest).read_bytes() == (data / "train/cat" / name).read_bytes()
    changes = pl.read_csv(out / "changes.csv")
    # identical copies tie on every criterion; the first path wins ("dog0 copy" < "dog0.")
    assert set(changes["path"].to_list()) == {
        "train/cat/broken.png", "test/cat/leaked.png", "train/dog/dog0.png",
    }  # fmt: skip
    meta = pl.read_csv(out / "train" / "metadata.csv")  # Hugging Face imagefolder
    assert set(meta.columns) == {"file_name", "label"}
    assert all((out / "train" / f).is_file() for f in meta["file_name"].to_list())
    # the export, scanned again, is clean of what the rules removed
    again = da.scan(out, embed=False)
    found = set(again.issues()["issue"].to_list())
    assert not found & {"corrupt", "exact_duplicate", "leakage"}


def test_reviewer_decisions_are_honoured(data, tmp_path, cli):
    idx = da.open_index(data)
    rows = idx.images(columns=["file_id", "path"])
    ids = dict(zip(rows["path"].to_list(), rows["file_id"].to_list(), strict=True))
    dec = Decisions.for_index(idx)
    dec.record([ids["train/cat/cat2.png"]], ["train/cat/cat2.png"], "drop", reason="blurry")
    dec.record([ids["train/dog/dog3.png"]], ["train/dog/dog3.png"], "relabel", new_label="cat")
    dec.record([ids["train/dog/dog4.png"]], ["train/dog/dog4.png"], "drop")
    dec.record([ids["train/dog/dog4.png"]], ["train/dog/dog4.png"], "keep")  # undone
    rc, _, err = cli("export", data, "--out", tmp_path / "out")
    assert rc == 0, err
    out = tmp_path / "out"
    assert not (out / "train/cat/cat2.png").exists()
    assert (out / "train/cat/dog3.png").read_bytes() == (data / "train/dog/dog3.png").read_bytes()
    assert (out / "train/dog/dog4.png").exists()
    changes = {r["path"]: r for r in pl.read_csv(out / "changes.csv").iter_rows(named=True)}
    assert changes["train/cat/cat2.png"]["rule"] == "reviewer"
    assert changes["train/dog/dog3.png"]["action"] == "relabel"
    assert changes["train/dog/dog3.png"]["dest"] == "train/cat/dog3.png"
    rc, _, err = cli("export", data, "--out", out, "--force", "--ignore-decisions")
    assert rc == 0, err
    assert (out / "train/cat/cat2.png").exists() and (out / "train/dog/dog3.png").exists()


def test_dry_run_and_refusals(data, tmp_path, cli):
    out = tmp_path / "out"
    rc, stdout, _ = cli("export", data, "--out", out, "--dry-run")
    assert rc == 0 and "dry run" in stdout and "corrupt" in stdout
    assert not out.exists()
    res = da.export(data, out, dry_run=True)  # a folder is opened like da.open_index
    assert not res.written and res.summary["dropped_by_rule"]["corrupt"] == 1
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("x")
    rc, stdout, _ = cli("export", data, "--out", out, "--dry-run")
    assert rc == 0 and "would stop here" in stdout and "not empty" in stdout
    rc, _, err = cli("export", data, "--out", out)
    assert rc == 2 and "not empty" in err and err.count("\n") == 1
    rc, _, err = cli("export", data, "--out", data / "clean")
    assert rc == 2 and "overlaps" in err
    rc, _, err = cli("export", data, "--out", tmp_path / "o2", "--drop", "leakage")
    assert rc == 2 and "own rule" in err
    rc, _, err = cli("export", data, "--out", tmp_path / "o2", "--resplit", "train=0.7")
    assert rc == 2 and "sum to" in err
    assert (out / "mine.txt").read_text() == "x" and not (tmp_path / "o2").exists()


def test_resplit_grouped_by_labels_file_column(tmp_path, cli):
    root = tmp_path / "flat"
    rows = []
    for i in range(120):
        name = f"img{i:03d}.png"
        _put(root, name, _photo(i))
        rows.append((name, "a" if i % 3 else "b", f"patient{i % 17}"))
    labels = tmp_path / "labels.csv"
    pl.DataFrame(rows, schema=["path", "label", "patient"], orient="row").write_csv(labels)
    da.scan(root, embed=False, labels=labels)
    out = tmp_path / "out"
    rc, stdout, err = cli("export", root, "--out", out, "--resplit", "train=0.5,test=0.5",
                          "--group-by", "patient", "--labels", labels, "--seed", "3")  # fmt: skip
    assert rc == 0, err
    assert "re-split" in stdout
    m = pl.read_csv(out / "manifest.csv").join(
        pl.read_csv(labels).select(pl.col("path").alias("source_path"), "patient"),
        on="source_path",
    )
    assert m.height == 120
    assert m.group_by("patient").agg(pl.col("split").n_unique())["split"].max() == 1
    assert set(m["split"].to_list()) == {"train", "test"}
    # without --labels, the labels file the scan used is read again
    rc, _, err = cli("export", root, "--out", tmp_path / "o3", "--resplit", "train=0.5,test=0.5",
                     "--group-by", "patient", "--seed", "3")  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "o3" / "manifest.csv").read_bytes() == (out / "manifest.csv").read_bytes()
    rc, _, err = cli("export", root, "--out", tmp_path / "o2", "--resplit", "train=0.5,test=0.5",
                     "--group-by", "ward", "--labels", labels)  # fmt: skip
    assert rc == 2 and "no such column" in err


KILL_EXPORT = """
import os, signal, sys
import dataaudit as da
def kill(done, total):
    if done >= 10:
        os.kill(os.getpid(), signal.SIGKILL)
da.export(da.open_index(sys.argv[1]), sys.argv[2], progress=kill)
"""


def test_killed_export_leaves_no_destination_and_rerun_completes(data, tmp_path, cli):
    for i in range(100):  # enough files that the kill lands midway
        _put(data, f"train/dog/more{i}.png", _photo(5000 + i))
    da.scan(data, embed=False)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", KILL_EXPORT, str(data), str(out)],
                          env=_subprocess_env(), cwd=REPO, timeout=120)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    rc, _, err = cli("export", data, "--out", out)
    assert rc == 0, err
    manifest = pl.read_csv(out / "manifest.csv")
    images = [p for p in out.rglob("*") if p.is_file() and p.parent != out and p.suffix != ".csv"]
    assert manifest.height == len(images) == len(_checksums(data)) - 3  # 3 dropped
    assert all((out / p).is_file() for p in manifest["path"].to_list())
    assert not list(tmp_path.glob(".out.*"))


def test_export_needs_the_images(data, tmp_path):
    idx = da.open_index(data)
    shutil.move(data, tmp_path / "moved")
    with pytest.raises(DataAuditError):
        da.export(idx, tmp_path / "out")


@pytest.mark.slow
def test_signs_planted_export_is_clean_when_scanned_again(tmp_path):
    """Default rules on the planted-issue benchmark; scanned without embeddings (with them a
    scan takes minutes here), so crop-type near copies are out of reach of both scans."""
    before = _checksums(SIGNS)
    idx = da.scan(SIGNS, tmp_path / "signs.duckdb", embed=False)
    out = tmp_path / "clean"
    res = da.export(idx, out)
    assert _checksums(SIGNS) == before
    assert res.summary["dropped_by_rule"]["corrupt"] == 60
    assert res.summary["leaking_groups_before"] > 0 and res.summary["leaking_groups_after"] == 0
    again = da.scan(out, tmp_path / "clean.duckdb", embed=False)
    counts = again.issues().group_by("issue").len()
    found = dict(counts.iter_rows())
    assert found.get("corrupt", 0) == 0
    assert found.get("exact_duplicate", 0) == 0
    assert found.get("leakage", 0) == 0
    # a grouped re-split keeping every copy: no linked pair is separated, fractions hold
    rules = da.ExportRules(dedupe=False, leakage="ignore")
    res = da.export(idx, tmp_path / "x", rules=rules, resplit="train=0.8,val=0.1,test=0.1",
                    dry_run=True)  # fmt: skip
    files = res.plan.files.select("file_id", "split")
    groups = idx.duplicate_groups().select("file_id", "group_id").join(files, on="file_id")
    assert groups.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1
    for split, want in {"train": 0.8, "val": 0.1, "test": 0.1}.items():
        assert abs(res.summary["achieved_fractions"][split] - want) <= 0.02
    # the planted pairs themselves: every pair the scan linked lands on one side
    truth = pl.read_csv(SIGNS.parent / "signs_planted_truth.csv").filter(
        pl.col("issue").is_in(["exact_duplicate", "near_duplicate", "leakage"])
    )
    where = res.plan.files.select("path", "split").join(
        idx.duplicate_groups().select("path", "group_id"), on="path", how="left"
    )
    pairs = truth.join(where, on="path").join(
        where.rename({"path": "group", "split": "split_b", "group_id": "group_b"}), on="group"
    )
    linked = pairs.filter(pl.col("group_id") == pl.col("group_b"))
    assert linked.height >= 120  # of 180 planted pairs; crops need embeddings to be linked
    assert (linked["split"] == linked["split_b"]).all()

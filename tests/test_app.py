"""The Streamlit app, page by page, with ``streamlit.testing.v1.AppTest`` on real indexes.

The dataset is generated with Pillow (3 labels, train/test, a dark image, a byte copy
across splits, a corrupt file) and scanned by the real CLI, once with embeddings and once
without. Assertions are on what a person sees: counts, grid order, a filter's effect, a
threshold's effect, a decision read back in a new session, a refused write.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageFilter
from streamlit.testing.v1 import AppTest

from dataaudit.testing import textured_image

REPO = Path(__file__).resolve().parent.parent
APP = REPO / "app" / "streamlit_app.py"
LABELS = ["ant", "bee", "cat"]
COLOURS = {"ant": (200, 60, 40), "bee": (230, 200, 40), "cat": (60, 90, 200)}
PAGES = ["overview.py", "browse.py", "issues.py", "duplicates.py", "map.py", "labels.py",
         "human.py", "per_class.py", "review.py", "sql.py"]  # fmt: skip


def make_dataset(root: Path) -> None:
    """6 train + 2 test images per label (noise + blur so sharpness varies), a dark image,
    a byte copy of a train image in test (leakage) and an undecodable file."""
    rng = np.random.default_rng(7)
    for label in LABELS:
        for split, n in (("train", 6), ("test", 2)):
            for i in range(n):
                base = np.array(COLOURS[label], np.float32)
                arr = base + rng.normal(0, 40, (48, 48, 3))
                im = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
                im = im.filter(ImageFilter.GaussianBlur(radius=i * 0.6))
                p = root / split / label / f"{label}_{split}_{i}.png"
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p)
    textured_image(7, "circle", size=(48, 48), brightness=0.08).save(root / "train/ant/dark.png")
    shutil.copy(root / "train" / "bee" / "bee_train_0.png", root / "test" / "bee" / "copy.png")
    (root / "train" / "cat" / "broken.jpg").write_bytes(random.Random(1).randbytes(900))


def scan(root: Path, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "dataaudit", "scan", str(root), "-q", "--workers", "0", *extra],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("appdata") / "data"
    make_dataset(root)
    scan(root)
    return root


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same dataset scanned without embeddings."""
    root = tmp_path_factory.mktemp("appplain") / "data"
    make_dataset(root)
    scan(root, "--no-embed")
    return root


def index_file(root: Path) -> Path:
    return root / ".dataaudit" / "index.duckdb"


def q(root: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(index_file(root)), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def app(root: Path, monkeypatch: pytest.MonkeyPatch, page: str | None = None) -> AppTest:
    """A fresh session of the app on ``root`` (as `dataaudit app` starts it), on ``page``."""
    monkeypatch.setenv("DATAAUDIT_APP_PATH", str(root))
    monkeypatch.setenv("DATAAUDIT_APP_DB", str(index_file(root)))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Every markdown, caption, info and error text on the page, joined."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [i.value for i in at.info] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def image_captions(element) -> list[str]:  # noqa: ANN001 - an AppTest image element
    return [i.caption for i in element.proto.imgs]


def grid_names(at: AppTest) -> list[str]:
    """File names in grid order, from the captions under the thumbnails."""
    out = []
    for c in at.caption:
        first = str(c.value).split("\n")[0].strip()
        if first.startswith("**") and first.endswith("**"):
            out.append(first.strip("*"))
    return out


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_content(dataset, monkeypatch, page):
    at = app(dataset, monkeypatch, page)
    n = q(dataset, "SELECT count(*) FROM images")[0][0]
    body = texts(at)
    if page == "overview.py":
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Images"] == str(n)
        assert metrics["Unreadable"] == "1"
        assert metrics["Labels"] == "3"
    elif page in ("browse.py", "review.py"):
        assert f"**{n} images** match" in body
    elif page == "issues.py":
        assert "flagged" in body
        flagged = {r[0] for r in q(dataset, "SELECT DISTINCT issue FROM issues WHERE is_issue")}
        assert {"low_information", "corrupt", "leakage"} <= flagged
    elif page == "duplicates.py":
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Cross-split pairs (leakage)"] == "1"
        assert "copy.png" in body and "bee_train_0.png" in body
    elif page == "map.py":
        assert "Colour by" in [s.label for s in at.segmented_control]
        assert "flagged" in body
    elif page == "labels.py":
        n_ant = q(dataset, "SELECT count(*) FROM images WHERE label = 'ant'")[0][0]
        assert f"**{n_ant} images** labelled `ant`" in body
    elif page == "human.py":
        assert "Start" in [b.label for b in at.button]
    elif page == "per_class.py":
        captions = [c for im in at.get("image") for c in image_captions(im)]
        n_ant = q(dataset, "SELECT count(*) FROM images WHERE label = 'ant' AND NOT is_corrupt")
        assert f"ant: mean of {n_ant[0][0]}" in captions
        assert "cat: std" in captions
    elif page == "sql.py":
        assert "Run" in [b.label for b in at.button]


def test_browse_sort_by_sharpness_orders_the_grid(dataset, monkeypatch):
    at = app(dataset, monkeypatch, "browse.py")
    at.selectbox(key="browse_sort").set_value("sharpness").run()
    at.toggle(key="browse_desc").set_value(True).run()
    assert not at.exception
    expected = [
        Path(p).name
        for (p,) in q(dataset, "SELECT path FROM images ORDER BY sharpness DESC NULLS LAST, path")
    ]
    assert grid_names(at) == expected[: len(grid_names(at))]
    assert len(grid_names(at)) >= 20
    shown = [str(c.value).split("sharpness=")[1].split()[0] for c in at.caption
             if "sharpness=" in str(c.value)]  # fmt: skip
    values = [float(v) for v in shown if v and v != "·"]  # the unreadable file has none: last
    assert len(values) >= 20 and values == sorted(values, reverse=True)


def test_browse_filter_one_labels_test_images(dataset, monkeypatch):
    at = app(dataset, monkeypatch, "browse.py")
    at.multiselect(key="browse_splits").set_value(["test"]).run()
    at.multiselect(key="browse_labels").set_value(["cat"]).run()
    assert "**2 images** match" in texts(at)
    assert sorted(grid_names(at)) == ["cat_test_0.png", "cat_test_1.png"]


def test_browse_where_error_is_inline(dataset, monkeypatch):
    at = app(dataset, monkeypatch, "browse.py")
    at.text_input(key="browse_where").input("no_such_column > 1").run()
    assert not at.exception
    assert at.error and "no_such_column" in at.error[0].value
    at.text_input(key="browse_where").input("width = 48 AND label = 'ant'").run()
    n = q(dataset, "SELECT count(*) FROM images WHERE width = 48 AND label = 'ant'")[0][0]
    assert f"**{n} images** match" in texts(at)


def test_browse_range_filter(dataset, monkeypatch):
    at = app(dataset, monkeypatch, "browse.py")
    at.multiselect(key="browse_range_cols").set_value(["brightness_mean"]).run()
    lo, hi = at.slider(key="browse_range_brightness_mean").value
    at.slider(key="browse_range_brightness_mean").set_value((40.0, hi)).run()
    assert not at.exception
    n = q(dataset, "SELECT count(*) FROM images WHERE brightness_mean >= 40")[0][0]
    total = q(dataset, "SELECT count(*) FROM images")[0][0]
    assert 0 < n < total  # the dark image and the unreadable file fall out
    assert f"**{n} images** match" in texts(at)
    assert "dark.png" not in grid_names(at)


def test_open_image_shows_neighbours_and_fields(dataset, monkeypatch):
    at = app(dataset, monkeypatch, "browse.py")
    opens = [b for b in at.button if b.label == "open"]
    opens[0].click().run()
    assert not at.exception
    body = texts(at)
    assert "Nearest neighbours" in body
    first = grid_names(at)[0]
    assert first in body  # the dialog names the file it shows


def test_threshold_change_updates_the_flagged_set_in_memory(dataset, monkeypatch):
    sql = "SELECT count(DISTINCT file_id) FROM issues WHERE issue = 'low_information' AND is_issue"
    before = q(dataset, sql)[0][0]
    assert before >= 1
    size = index_file(dataset).stat().st_size
    at = app(dataset, monkeypatch, "issues.py")
    at.selectbox(key="issues_type").set_value("low_information").run()
    at.number_input(key="thr_quality_low_info_max_contrast").set_value(0.0)
    at.number_input(key="thr_quality_flat_contrast").set_value(0.0)
    at.button(key="FormSubmitter:thresholds-Recompute").click().run()
    assert not at.exception, [e.message for e in at.exception]
    body = texts(at)
    assert (
        f"**0 flagged** `low_information` (stored: {before}; **+0 newly flagged, "
        f"−{before} no longer flagged**)"
    ) in body
    # computed in memory: the index is unchanged
    assert q(dataset, sql)[0][0] == before
    assert index_file(dataset).stat().st_size == size


def test_decision_persists_across_sessions(dataset, monkeypatch):
    log = index_file(dataset).parent / "decisions.jsonl"
    log.unlink(missing_ok=True)
    at = app(dataset, monkeypatch, "browse.py")
    at.multiselect(key="browse_labels").set_value(["ant"]).run()
    target = grid_names(at)[0]
    [b for b in at.button if b.label == "open"][0].click().run()
    fid = at.session_state["selected"]
    prefix = f"dlg_{fid}"
    at.segmented_control(key=f"{prefix}_action").set_value("relabel").run()
    at.selectbox(key=f"{prefix}_label").set_value("bee").run()
    at.text_input(key=f"{prefix}_reason").input("looks like a bee").run()
    at.button(key=f"{prefix}_save").click().run()
    assert not at.exception
    assert log.is_file()

    again = app(dataset, monkeypatch, "review.py")  # a new session, as after a restart
    assert "Decisions (1)" in [t.label for t in again.tabs]
    frames = [df.value for df in again.dataframe]
    current = next(f for f in frames if "action" in f.columns and "new_label" in f.columns)
    row = current[current["file_id"] == fid].iloc[0]
    assert (row["action"], row["new_label"], row["reason"]) == (
        "relabel",
        "bee",
        "looks like a bee",
    )
    assert Path(row["path"]).name == target
    # every page shows it: the grid caption carries the decision
    browse = app(dataset, monkeypatch, "browse.py")
    browse.multiselect(key="browse_labels").set_value(["ant"]).run()
    assert "decision: relabel → bee" in texts(browse)


def test_review_marks_a_selection_for_dropping(dataset, monkeypatch):
    log = index_file(dataset).parent / "decisions.jsonl"
    log.unlink(missing_ok=True)
    at = app(dataset, monkeypatch, "review.py")
    at.multiselect(key="review_labels").set_value(["cat"]).run()
    at.multiselect(key="review_splits").set_value(["test"]).run()
    at.radio(key="review_scope").set_value(at.radio(key="review_scope").options[1]).run()
    at.segmented_control(key="review_action").set_value("drop").run()
    at.button(key="review_save").click().run()
    assert not at.exception
    from dataaudit.store.decisions import Decisions

    current = Decisions(log).current()
    assert sorted(Path(p).name for p in current["path"].to_list()) == [
        "cat_test_0.png",
        "cat_test_1.png",
    ]
    assert set(current["action"].to_list()) == {"drop"}


def test_sql_console_refuses_writes(dataset, monkeypatch):
    n = q(dataset, "SELECT count(*) FROM images")[0][0]
    at = app(dataset, monkeypatch, "sql.py")
    at.text_area(key="sql_query").input("DELETE FROM images").run()
    at.button(key="sql_run").click().run()
    assert not at.exception
    assert at.error, "a write must be refused with a message"
    assert q(dataset, "SELECT count(*) FROM images")[0][0] == n
    at.text_area(key="sql_query").input("SELECT label, count(*) AS n FROM images GROUP BY 1").run()
    at.button(key="sql_run").click().run()
    result = next(df.value for df in at.dataframe if "n" in df.value.columns)
    assert sorted(result["n"].tolist()) == sorted(
        r[0] for r in q(dataset, "SELECT count(*) FROM images GROUP BY label")
    )


def test_human_baseline_stores_answers(dataset, monkeypatch):
    from dataaudit.store.human_labels import HumanLabels

    store = HumanLabels(index_file(dataset).parent / "human_labels.jsonl")
    store.path.unlink(missing_ok=True)
    at = app(dataset, monkeypatch, "human.py")
    at.number_input(key="hb_n").set_value(5).run()
    at.button(key="hb_start").click().run()
    for i in range(5):
        assert f"Image {i + 1} of 5" in str(at.get("progress")[0].proto.text)
        assert not any(lab in texts(at) for lab in ("label=", "ant_train"))  # no label shown
        at.button(key=f"hb_ans_{i}_ant").click().run()
    assert not at.exception
    answers = store.read()
    assert answers.height == 5
    assert set(answers["human_label"].to_list()) == {"ant"}
    expected = answers.filter(pl.col("dataset_label") == "ant").height / 5
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Agreement with the dataset"] == f"{expected:.0%}"


def test_pages_work_without_embeddings(plain, monkeypatch):
    for page in PAGES:
        at = app(plain, monkeypatch, page)
        assert not at.exception, (page, [e.message for e in at.exception])
    at = app(plain, monkeypatch, "map.py")
    assert "no embeddings" in texts(at)


def test_app_keeps_working_while_another_program_holds_the_index(plain, monkeypatch):
    """A process holding the write lock without a snapshot (a notebook, a foreign writer):
    a warm page keeps its last state and says so; a cold one says the index is busy."""
    at = app(plain, monkeypatch, "browse.py")
    n = q(plain, "SELECT count(*) FROM images")[0][0]
    (index_file(plain).parent / "index.snapshot.duckdb").unlink(missing_ok=True)  # none here
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True);"
         " time.sleep(60)", str(index_file(plain))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert f"**{n} images** match" in texts(at)
        assert "Another program holds the index" in texts(at)
        monkeypatch.setenv("DATAAUDIT_APP_PATH", str(plain))
        cold = AppTest.from_file(str(APP), default_timeout=60).run()
        assert not cold.exception
        assert "is using" in texts(cold) or "holds the index" in texts(cold)
    finally:
        holder.kill()
        holder.wait()
    fresh = app(plain, monkeypatch, "browse.py")
    assert f"**{n} images** match" in texts(fresh)


def test_app_and_a_scan_of_the_same_folder_both_keep_working(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_dataset(root)
    scan(root, "--no-embed")
    n = q(root, "SELECT count(*) FROM images")[0][0]
    at = app(root, monkeypatch, "browse.py")
    assert f"**{n} images** match" in texts(at)
    rng = np.random.default_rng(3)
    extra = 1500
    for i in range(extra):  # enough new files that the re-scan writes for a few seconds
        arr = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
        p = root / "train" / "bee" / f"new_{i:04d}.png"
        Image.fromarray(arr).save(p)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataaudit", "scan", str(root), "-q", "--no-embed",
         "--workers", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    import dataaudit as da

    idx = da.open_index(root)
    seen_running = 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        state = idx.state()
        if state["writing"] or state["last_run_id"] == 0:  # progress reported, or file locked
            at.run()  # the open session, mid-scan
            assert not at.exception, [e.message for e in at.exception]
            shown = texts(at)  # the last completed state (or the new one, if it just finished)
            assert f"**{n} images** match" in shown or f"**{n + extra:,} images** match" in shown
            other = app(root, monkeypatch, "overview.py")  # a new session, mid-scan
            assert not other.exception
            seen_running += 1
            if seen_running >= 2:
                break
        time.sleep(0.2)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err  # the app's readers never stopped the scan
    assert seen_running >= 1, "the scan finished before the app could be checked during it"
    after = app(root, monkeypatch, "browse.py")
    assert f"**{n + extra:,} images** match" in texts(after)


def test_launcher_says_which_command_to_run_without_an_index(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "dataaudit", "app", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"run `dataaudit scan {tmp_path}` first" in proc.stderr
    assert not (tmp_path / ".dataaudit").exists()  # nothing written


def test_mispredictions_and_their_dynamics_once_training_stored_them(plain, monkeypatch):
    import dataaudit as da

    idx = da.open_index(plain)
    fid, path = q(plain, "SELECT file_id, path FROM images WHERE path LIKE '%ant_test_0%'")[0]
    with idx.writer() as con:  # what the training module stores (schema from schema.sql)
        run = con.execute("SELECT max(run_id) + 1 FROM runs").fetchone()[0]
        con.execute(
            "INSERT INTO runs (run_id, kind, status, started_at) VALUES (?, 'train', "
            "'completed', now())",
            [run],
        )
        con.execute(
            "INSERT INTO predictions (run_id, model, file_id, split, label, predicted, loss, "
            "margin) VALUES (?, 'linear', ?, 'test', 'ant', 'bee', 3.2, -0.7)",
            [run, fid],
        )
        for epoch, p in enumerate([0.6, 0.3, 0.1]):
            con.execute(
                "INSERT INTO prediction_dynamics VALUES (?, 'linear', ?, ?, 'bee', ?)",
                [run, epoch, fid, p],
            )
    at = app(plain, monkeypatch, "labels.py")
    body = texts(at)
    assert "**1 mispredicted images** (highest loss first, from `predictions`)" in body
    assert Path(path).name in grid_names(at)
    assert "Prediction dynamics" in [h.value for h in at.subheader]
    dyn = next(df.value for df in at.dataframe if "p_label" in df.value.columns)
    assert [round(v, 1) for v in dyn["p_label"].tolist()] == [0.6, 0.3, 0.1]

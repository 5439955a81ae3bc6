"""The Python API end to end on generated datasets: scan, open, filter, sort, detect."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

import dataaudit as da
from dataaudit.testing import build_index, make_dataset


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("api") / "data"
    planted = make_dataset(root)
    idx = build_index(root)
    return planted, idx


def test_scan_returns_an_index_with_every_file(planted):
    p, idx = planted
    assert isinstance(idx, da.Index)
    assert idx.count() == p.total
    assert idx.last_scan.images == p.total
    assert idx.root.resolve() == p.root.resolve()
    reopened = da.open_index(p.root)
    assert reopened.db_path == idx.db_path
    assert da.open_index(idx.db_path).count() == p.total


def test_planted_problems_are_found(planted):
    p, idx = planted
    flagged = idx.issues()
    by_issue = {k: set(v) for k, v in flagged.group_by("issue").agg("path").iter_rows()}
    assert set(p.corrupt) == by_issue["corrupt"]
    assert set(p.dark) <= by_issue["dark"]
    assert {b for _, b in p.leakage} <= by_issue["leakage"]
    assert set(p.odd_size) <= by_issue.get("odd_size", set()) | by_issue.get(
        "odd_aspect_ratio", set()
    )
    assert idx.issue_counts()["corrupt"] == 2


def test_filters_split_label_issue_range_and_sort(planted):
    p, idx = planted
    test_squares = idx.images(da.Filters(splits=["test"], labels=["square"]))
    assert set(test_squares["path"]) == {x for x in p.by_label["square"] if x.startswith("test/")}
    assert idx.count(da.Filters(issues=["corrupt"])) == 2
    wide = idx.images(da.Filters(ranges={"aspect_ratio": (2.0, None)}), columns=["path"])
    assert wide["path"].to_list() == p.odd_size
    by_bright = idx.images(da.Filters(sort="brightness_mean", descending=False), limit=3)
    assert by_bright["path"][0] in p.dark
    values = idx.images(da.Filters(sort="brightness_mean", descending=True))["brightness_mean"]
    finite = values.drop_nulls().to_list()
    assert finite == sorted(finite, reverse=True)
    page2 = idx.images(da.Filters(sort="path"), limit=5, offset=5)["path"].to_list()
    assert page2 == sorted(idx.images()["path"].to_list())[5:10]
    assert idx.count(da.Filters(where="width < 30 OR height < 30")) == 1


def test_unknown_columns_and_writes_are_refused(planted):
    _, idx = planted
    with pytest.raises(da.DataAuditError, match="unknown column"):
        idx.images(da.Filters(sort="path; DROP TABLE images"))
    with pytest.raises(da.DataAuditError, match="unknown column"):
        idx.histogram("nope")
    with pytest.raises(da.DataAuditError, match="read-only"):
        idx.sql("DELETE FROM images")
    with pytest.raises(da.DataAuditError, match="one statement"):
        idx.sql("SELECT 1; DROP TABLE images")
    with pytest.raises(da.DataAuditError):
        idx.images(da.Filters(where="1=1); DROP TABLE images; --"))
    with pytest.raises(da.DataAuditError, match="disabled"):
        idx.sql("SELECT * FROM read_csv('/etc/hostname')")
    with pytest.raises(da.DataAuditError, match="query failed"):
        idx.images(da.Filters(where="no_such_column > 1"))
    assert idx.count() > 0  # nothing was dropped


def test_image_record_thumbnails_and_histogram(planted):
    p, idx = planted
    dark_id = idx.images(da.Filters(path_contains="dark.png"))["file_id"][0]
    record = idx.image(dark_id)
    assert record["path"] == p.dark[0]
    assert "dark" in record["issues"]
    assert any(r["issue"] == "dark" and "grey" in r["details"] for r in record["issue_rows"])
    thumbs = idx.thumbnails([dark_id])
    assert thumbs[dark_id][:2] == b"\xff\xd8"  # a JPEG
    hist = idx.histogram("brightness_mean", bins=8)
    assert hist.height == 8
    assert hist["count"].sum() == idx.count(da.Filters(where="brightness_mean IS NOT NULL"))
    assert hist["lo"][0] == pytest.approx(idx.images()["brightness_mean"].min())


def test_duplicates_and_leakage_frames(planted):
    p, idx = planted
    groups = idx.duplicate_groups()
    src, copy = p.exact_duplicate[0]
    group = groups.filter(pl.col("path").is_in([src, copy]))["group_id"].unique()
    assert group.len() == 1
    assert groups.filter(pl.col("group_id") == group[0])["is_representative"].sum() == 1
    leaks = idx.leakage()
    assert set(leaks["split_pair"]) == {"test<->train"}
    a, b = p.leakage[0]
    assert {a, b} in [{x, y} for x, y in leaks.select("path_a", "path_b").iter_rows()]


def test_detect_in_memory_writes_nothing(planted):
    _, idx = planted
    runs_before = idx.runs().height
    again = da.detect(idx, da.load_config(), write=False)
    assert again.run_id == 0
    assert idx.runs().height == runs_before
    assert again.counts() == idx.issue_counts()  # same config, same answer, nothing stored


def test_detect_write_records_a_run(tmp_path):
    make_dataset(tmp_path / "d", per_label=3)
    idx = build_index(tmp_path / "d", detect=False)
    assert idx.issue_counts() == {}
    result = da.detect(idx)
    assert result.run_id > 0
    assert idx.issue_counts() == result.counts()
    assert idx.runs()["kind"].to_list()[-1] == "detect"


def test_embeddings_neighbours_and_map_read_as_arrays(tmp_path):
    make_dataset(tmp_path / "d", per_label=3, plant=False)
    idx = build_index(tmp_path / "d", detect=False)
    ids = idx.images(columns=["file_id"])["file_id"].to_list()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    with idx.writer() as con:
        con.register("v", pl.DataFrame({"file_id": ids, "vector": vectors.tolist()}).to_arrow())
        con.execute("INSERT INTO embeddings SELECT file_id, vector::FLOAT[] FROM v")
        con.execute("INSERT INTO knn SELECT ?, ?, 1, 0.9, 'all'", [ids[0], ids[1]])
        con.execute("INSERT INTO embedding_map SELECT file_id, 1.0, 2.0 FROM v")
    emb = idx.embeddings()
    assert emb.matrix.dtype == np.float32 and emb.matrix.shape == (len(ids), 8)
    order = np.argsort(ids)
    assert np.allclose(emb.matrix, vectors[order])
    assert emb.file_ids.tolist() == sorted(ids)
    only = idx.embeddings(da.Filters(labels=["square"]))
    assert set(only.labels) == {"square"}
    assert idx.neighbors(ids[0])["file_id"].to_list() == [ids[1]]
    assert idx.embedding_map().height == len(ids)


def test_decisions_latest_wins_and_survive_reopen(planted, tmp_path):
    _, idx = planted
    dec = da.Decisions(tmp_path / "decisions.jsonl")
    rows = idx.images(limit=3)
    ids, paths = rows["file_id"].to_list(), rows["path"].to_list()
    dec.record(ids[:2], paths[:2], "drop", reason="blurry")
    dec.record(ids[2:], paths[2:], "relabel", new_label="square", who="tester")
    dec.record(ids[:1], paths[:1], "keep")
    with pytest.raises(da.DataAuditError):
        dec.record(ids[:1], paths[:1], "relabel")
    with open(dec.path, "a") as f:
        f.write('{"file_id": 1, "acti')  # a torn last line from a crash
    current = da.Decisions(dec.path).current()
    by_path = {r["path"]: r for r in current.to_dicts()}
    assert by_path[paths[0]]["action"] == "keep"
    assert by_path[paths[1]]["action"] == "drop"
    assert by_path[paths[2]]["new_label"] == "square"
    assert by_path[paths[2]]["who"] == "tester"
    assert da.Decisions(dec.path).history().height == 4


def test_open_index_of_unscanned_folder_says_what_to_run(tmp_path):
    with pytest.raises(da.DataAuditError, match="dataaudit scan"):
        da.open_index(tmp_path)


def test_the_index_stays_a_plain_duckdb_file(planted):
    _, idx = planted
    con = duckdb.connect(str(idx.db_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == idx.count()
    finally:
        con.close()

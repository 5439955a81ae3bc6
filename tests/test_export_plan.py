"""Export planning as pure functions over frames: rules, grouped re-split, collision naming."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataaudit.errors import DataAuditError
from dataaudit.export.naming import assign_destinations, folder_name
from dataaudit.export.plan import ExportRules, build_plan, representatives, suggested_labels
from dataaudit.export.resplit import grouped_split, parse_fractions, split_report, units_from


def _images(rows: list[tuple]) -> pl.DataFrame:
    """rows: (file_id, path, split, label, width, height[, is_corrupt])."""
    full = [(*r, False) if len(r) == 6 else r for r in rows]
    return pl.DataFrame(
        [
            (fid, path, split, label, w, h, 1000 + fid, f"h{fid}", bad,
             "truncated" if bad else "ok", "cut short" if bad else None)
            for fid, path, split, label, w, h, bad in full
        ],
        schema={"file_id": pl.Int64, "path": pl.String, "split": pl.String, "label": pl.String,
                "width": pl.Int32, "height": pl.Int32, "bytes": pl.Int64,
                "content_hash": pl.String, "is_corrupt": pl.Boolean,
                "decode_status": pl.String, "error_message": pl.String},
        orient="row",
    )  # fmt: skip


def _issues(rows: list[tuple] = ()) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema={"file_id": pl.Int64, "issue": pl.String, "score": pl.Float64, "details": pl.String},
        orient="row",
    )


def _groups(rows: list[tuple] = ()) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows), schema={"file_id": pl.Int64, "group_id": pl.Int64}, orient="row"
    )


def _decisions(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema={"file_id": pl.Int64, "action": pl.String, "new_label": pl.String,
                "reason": pl.String},
        orient="row",
    )  # fmt: skip


IMAGES = _images(
    [
        (1, "train/cat/a.jpg", "train", "cat", 64, 64),
        (2, "train/cat/b.jpg", "train", "cat", 64, 64, True),  # corrupt
        (3, "train/cat/c.jpg", "train", "cat", 32, 32),  # small copy of 4
        (4, "train/cat/d.jpg", "train", "cat", 64, 64),
        (5, "test/cat/e.jpg", "test", "cat", 128, 128),  # leaked copy of 6 (bigger)
        (6, "train/dog/f.jpg", "train", "dog", 64, 64),
        (7, "train/dog/g.jpg", "train", "dog", 64, 64),  # dark
        (8, "test/dog/h.jpg", "test", "dog", 64, 64),  # label error, suggested cat
    ]
)
ISSUES = _issues(
    [
        (2, "corrupt", 1.0, "truncated"),
        (7, "dark", 0.9, "much darker"),
        (8, "label_error", 0.95,
         "labelled dog but its neighbours say cat (5% of neighbours agree with dog)"),
        (4, "blurry", 0.4, "soft"),
    ]
)  # fmt: skip
GROUPS = _groups([(3, 3), (4, 3), (5, 5), (6, 5)])


def _kept(plan) -> set[int]:
    return set(plan.files["file_id"].to_list())


def test_default_rules_drop_corrupt_duplicates_and_eval_side_of_leakage():
    plan = build_plan(IMAGES, ISSUES, GROUPS, None, ExportRules())
    assert _kept(plan) == {1, 4, 6, 7, 8}
    by = {r["file_id"]: r for r in plan.changes.to_dicts()}
    assert by[2]["rule"] == "corrupt" and "cut short" in by[2]["reason"]
    assert by[5]["rule"] == "leakage" and "train/dog/f.jpg" in by[5]["reason"]
    # 4 (64 px, blurry) beats 3 (32 px): resolution comes before the issue count
    assert by[3]["rule"] == "duplicate" and "train/cat/d.jpg" in by[3]["reason"]
    assert plan.dropped_by_rule() == {"corrupt": 1, "duplicate": 1, "leakage": 1}


def test_representative_rule_resolution_then_fewest_issues_then_train_first():
    files = IMAGES.with_columns(pl.col("split").alias("orig_split"))
    ranked = representatives(files, GROUPS, ISSUES)
    rep = dict(ranked.filter("is_representative").select("group_id", "file_id").iter_rows())
    assert rep == {3: 4, 5: 5}  # 4: more pixels than 3 despite its blur; 5: 128 px beats 64
    # equal pixels: fewer issues wins, then the training split
    # (bytes grow with the id, so the test file is the largest file)
    imgs = _images([(1, "train/x/a.jpg", "train", "x", 8, 8), (2, "train/x/b.jpg", "train", "x", 8, 8),
                    (3, "test/x/c.jpg", "test", "x", 8, 8)])  # fmt: skip
    g = _groups([(1, 1), (2, 1), (3, 1)])
    r = representatives(imgs, g, _issues())
    assert r.filter("is_representative")["file_id"].to_list() == [2]  # train first, then bytes
    r = representatives(imgs, g, _issues([(2, "dark", 0.9, "")]))
    assert r.filter("is_representative")["file_id"].to_list() == [1]  # fewest issues


def test_leakage_keep_eval_and_ignore():
    plan = build_plan(IMAGES, ISSUES, GROUPS, None, ExportRules(leakage="keep-eval"))
    assert 5 in _kept(plan) and 6 not in _kept(plan)
    assert dict(plan.changes.select("file_id", "rule").iter_rows())[6] == "leakage"
    plan = build_plan(IMAGES, ISSUES, GROUPS, None, ExportRules(leakage="ignore", dedupe=False))
    assert {5, 6} <= _kept(plan)
    with pytest.raises(DataAuditError, match="leakage"):
        ExportRules(leakage="sometimes")


def test_quality_drops_and_reviewer_decisions():
    dec = _decisions([(1, "drop", None, "watermark"), (7, "keep", None, "fine"),
                      (6, "relabel", "wolf", "it is a wolf")])  # fmt: skip
    plan = build_plan(IMAGES, ISSUES, GROUPS, dec, ExportRules(drop=("dark", "blurry")))
    kept = _kept(plan)
    assert 1 not in kept  # reviewer drop
    assert 7 in kept  # dark, but a reviewer said keep
    assert 4 not in kept  # blurry: dropped, so 3 becomes its group's representative
    assert 3 in kept
    labels = dict(plan.files.select("file_id", "label").iter_rows())
    assert labels[6] == "wolf"
    rows = {r["file_id"]: r for r in plan.changes.to_dicts()}
    assert rows[1]["rule"] == "reviewer" and "watermark" in rows[1]["reason"]
    assert rows[6]["action"] == "relabel" and rows[6]["new_label"] == "wolf"
    assert rows[4]["rule"] == "blurry"
    # ignoring decisions: the drop and relabel are gone, the dark file is dropped
    plan = build_plan(IMAGES, ISSUES, GROUPS, dec, ExportRules(drop=("dark",), use_decisions=False))
    assert 1 in _kept(plan) and 7 not in _kept(plan)
    assert dict(plan.files.select("file_id", "label").iter_rows())[6] == "dog"


def test_reviewer_keep_makes_the_representative_even_across_splits():
    dec = _decisions([(3, "keep", None, ""), (5, "keep", None, "not a copy"),
                      (2, "keep", None, "")])  # fmt: skip
    plan = build_plan(IMAGES, ISSUES, GROUPS, dec, ExportRules())
    kept = _kept(plan)
    assert 3 in kept and 4 not in kept  # 3 kept by a reviewer: its group's representative
    # the test copy a reviewer kept survives the leakage rule and becomes the one copy kept
    assert 5 in kept and 6 not in kept
    assert plan.changes.filter(pl.col("file_id") == 6)["rule"].to_list() == ["duplicate"]
    assert 2 not in kept  # corrupt is dropped whatever a reviewer said


def test_relabel_above_applies_suggested_labels_over_threshold_only():
    plan = build_plan(IMAGES, ISSUES, GROUPS, None, ExportRules(relabel_above=0.9))
    assert dict(plan.files.select("file_id", "label").iter_rows())[8] == "cat"
    row = plan.changes.filter(pl.col("file_id") == 8).to_dicts()[0]
    assert (row["rule"], row["label"], row["new_label"]) == ("suggested_label", "dog", "cat")
    plan = build_plan(IMAGES, ISSUES, GROUPS, None, ExportRules(relabel_above=0.99))
    assert dict(plan.files.select("file_id", "label").iter_rows())[8] == "dog"


def test_suggested_label_parsing_survives_odd_labels():
    details = "labelled a (b) but its neighbours say c d (10% of neighbours agree with a (b))"
    s = suggested_labels(_issues([(1, "label_error", 0.9, details), (2, "label_error", 0.9, "?")]))
    assert s.to_dicts() == [{"file_id": 1, "score": 0.9, "suggested": "c d"}]


def test_structural_issue_in_drop_is_refused():
    with pytest.raises(DataAuditError, match="own rule"):
        ExportRules(drop=("leakage",))


# ---------------------------------------------------------------- re-split


def test_parse_fractions():
    assert parse_fractions("train=0.8, val=0.1,test=0.1") == {"train": 0.8, "val": 0.1, "test": 0.1}
    for bad in ("train=0.8", "train=0.5,train=0.5", "train=x,test=1", "train", "a/b=1"):
        with pytest.raises(DataAuditError):
            parse_fractions(bad)


def test_grouped_split_keeps_units_together_and_hits_fractions():
    rng = np.random.default_rng(1)
    n = 3000
    ids = list(range(n))
    labels = [f"c{i}" for i in rng.integers(0, 7, n)]
    pairs = pl.DataFrame({"file_id": ids[:600], "key": [i // 2 for i in range(600)]})  # 300 pairs
    patients = pl.DataFrame({"file_id": ids[600:1500], "key": [f"p{i % 90}" for i in range(900)]})
    units = units_from(ids, [pairs, patients])
    fr = {"train": 0.8, "val": 0.1, "test": 0.1}
    splits = grouped_split(ids, labels, units, fr, seed=3)
    by_unit: dict[int, set[str]] = {}
    for fid, s in zip(ids, splits, strict=True):
        by_unit.setdefault(units[fid], set()).add(s)
    assert all(len(s) == 1 for s in by_unit.values())
    assert len(by_unit) == 300 + 90 + 1500
    achieved, per_class = split_report(splits, labels, fr)
    for row in achieved.to_dicts():
        assert abs(row["achieved"] - row["requested"]) <= 0.02, row
    assert per_class.height == 7 and set(per_class.columns) == {"label", "train", "val", "test"}
    assert splits == grouped_split(ids, labels, units, fr, seed=3)  # deterministic
    assert splits != grouped_split(ids, labels, units, fr, seed=4)


def test_grouped_split_stratifies_rare_classes():
    ids = list(range(1000))
    labels = ["rare" if i < 50 else "common" for i in ids]
    splits = grouped_split(ids, labels, {}, {"train": 0.8, "test": 0.2}, seed=0)
    rare_test = sum(1 for i in range(50) if splits[i] == "test")
    assert rare_test == 10


# ---------------------------------------------------------------- naming


def test_collisions_are_renamed_deterministically_and_recorded():
    files = pl.DataFrame(
        {
            "file_id": [1, 2, 3, 4],
            "path": ["train/cat/x.jpg", "train/dog/x.jpg", "test/cat/X.JPG", "train/cat/y.jpg"],
            "split": ["train", "train", "train", "train"],
            "label": ["cat", "cat", "cat", None],
        }
    )
    out, ren = assign_destinations(files)
    dest = dict(out.select("file_id", "dest").iter_rows())
    # test/cat/X.JPG sorts first and keeps its name; the others get a hash of their path
    assert dest[3] == "train/cat/X.JPG"
    assert dest[1].startswith("train/cat/x.") and dest[1] != "train/cat/x.jpg"
    assert dest[2].startswith("train/cat/x.") and dest[2] not in (dest[1], "train/cat/x.jpg")
    assert dest[4] == "train/_unlabelled/y.jpg"
    assert set(ren["file_id"].to_list()) == {1, 2}
    assert all("X.JPG" in r for r in ren["reason"].to_list())
    again, _ = assign_destinations(files.reverse())
    assert dict(again.select("file_id", "dest").iter_rows()) == dest


def test_folder_names_are_safe():
    assert folder_name("a/b", "_") == "a_b"
    assert folder_name("..", "_") == "_.."
    assert folder_name(None, "_unlabelled") == "_unlabelled"
    assert len(folder_name("é" * 300, "_").encode()) <= 255


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 15)), min_size=1, max_size=80),
    st.integers(0, 5),
)
def test_grouped_split_property_units_never_straddle(rows, seed):
    """Any labels and any grouping: every file gets a requested split, units stay whole."""
    ids = list(range(len(rows)))
    labels = [f"l{lab}" for lab, _ in rows]
    keys = pl.DataFrame({"file_id": ids, "key": [g for _, g in rows]})
    units = units_from(ids, [keys])
    splits = grouped_split(ids, labels, units, {"a": 0.6, "b": 0.3, "c": 0.1}, seed=seed)
    assert set(splits) <= {"a", "b", "c"} and len(splits) == len(ids)
    seen: dict[int, str] = {}
    for fid, s in zip(ids, splits, strict=True):
        assert seen.setdefault(units[fid], s) == s

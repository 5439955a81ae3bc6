"""The human-baseline answer log: append, read back, latest answer wins, agreement interval."""

from __future__ import annotations

import polars as pl
import pytest

from dataaudit.store.human_labels import HumanLabels, agreement


def test_answers_round_trip_and_latest_wins(tmp_path):
    log = HumanLabels.for_index(tmp_path / "index.duckdb")
    assert log.path == tmp_path / "human_labels.jsonl"
    assert log.read().height == 0
    log.record(1, "a.png", "cat", "cat", "s1", who="ann")
    log.record(2, "b.png", "cat", "dog", "s1", who="ann")
    log.record(2, "b.png", "cat", "cat", "s1", who="ann")  # corrected
    log.record(3, "c.png", "dog", None, "s1", who="ann")  # can't tell
    with open(log.path, "a") as f:
        f.write('{"file_id": 4, "path": "d.pn')  # a torn last line from a crash
    assert log.read().height == 4
    latest = log.latest().sort("file_id")
    assert latest["human_label"].to_list() == ["cat", "cat", None]
    a = agreement(latest)
    assert (a["answered"], a["scored"], a["agree"], a["share"]) == (3, 2, 2, 1.0)


def test_agreement_wilson_interval():
    answers = pl.DataFrame({"dataset_label": ["a"] * 20, "human_label": ["a"] * 16 + ["b"] * 4})
    a = agreement(answers)
    assert a["share"] == pytest.approx(0.8)
    assert a["low"] == pytest.approx(0.584, abs=1e-3)  # Wilson 95 % for 16 / 20
    assert a["high"] == pytest.approx(0.919, abs=1e-3)
    assert agreement(answers.head(0))["share"] is None

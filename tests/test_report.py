"""The shipped sample through the real CLI: scan, report, issues, detect, --fail-on."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, run_cli) -> Path:  # noqa: ANN001
    """A scanned copy of sample_data (the repository copy is never written)."""
    root = tmp_path_factory.mktemp("sample") / "sample_data"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns(".dataaudit"))
    rc, out, err = run_cli("scan", root, "-q")
    assert rc == 0, err
    assert "images indexed  261" in out
    assert "Detectors ran" in out
    return root


def truth_rows() -> list[dict[str, str]]:
    with open(SAMPLE / "truth.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_issues_csv_contains_every_planted_issue(sample: Path, run_cli) -> None:  # noqa: ANN001
    rc, out, _ = run_cli("issues", sample)
    assert rc == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["path", "issue", "group", "score"]
    found = {(r["path"], r["issue"]) for r in rows}
    missing = [
        (t["path"], t["issue"]) for t in truth_rows() if (t["path"], t["issue"]) not in found
    ]
    assert not missing
    groups = {r["path"]: r["group"] for r in rows if r["issue"] == "exact_duplicate"}
    assert groups["test/3/IMG_5034.jpg"] == groups["test/3/IMG_5034_copy.jpg"] != ""


def test_report_formats(sample: Path, run_cli) -> None:  # noqa: ANN001
    rc, out, _ = run_cli("report", sample, "--format", "json")
    assert rc == 0
    data = json.loads(out)
    by_issue = {s["issue"]: s for s in data["issues"]}
    planted = {t["issue"] for t in truth_rows()}
    assert planted <= set(by_issue)
    assert data["duplicates"]["leakage_pairs_by_split_pair"]["test<->train"] >= 2
    assert by_issue["corrupt"]["files"] == 3
    rc, md, _ = run_cli("report", sample, "--format", "markdown")
    assert rc == 0 and "| `leakage` | error |" in md
    rc, text, _ = run_cli("report", sample)
    assert rc == 0 and "scene_landscape.jpg" in text


def test_fail_on_gates_a_pipeline(sample: Path, run_cli) -> None:  # noqa: ANN001
    rc, _, err = run_cli("report", sample, "--format", "json", "--fail-on", "leakage,corrupt")
    assert rc == 1 and "leakage" in err
    rc, _, _ = run_cli("report", sample, "--format", "json", "--fail-on", "decompression_bomb")
    assert rc == 0
    rc, _, err = run_cli("report", sample, "--fail-on", "not_a_type")
    assert rc == 2 and err.count("\n") == 1 and "unknown issue type" in err


def test_detect_with_new_threshold_and_paths_format(sample: Path, run_cli) -> None:  # noqa: ANN001
    rc, out, _ = run_cli("issues", sample, "--type", "dark", "--format", "paths")
    assert rc == 0 and len(out.split()) == 2
    rc, _, _ = run_cli("detect", sample, "--set", "quality.dark_always_mean=35")
    assert rc == 0
    rc, out, _ = run_cli("issues", sample, "--type", "dark", "--format", "paths")
    assert set(out.split()) == {"train/0/IMG_4423.jpg", "train/3/IMG_4362.jpg"}
    rc, _, err = run_cli("detect", sample, "--set", "quality.nope=1")
    assert rc == 2 and "unknown setting quality.nope" in err

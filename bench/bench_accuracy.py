"""Detector accuracy on the signs_planted benchmark: dataaudit against CleanVision, in one run.

Run:  python bench/bench_accuracy.py
      python bench/bench_accuracy.py --bench digits   # a bench from build_benches.py
      python bench/bench_accuracy.py --skip-cleanvision --no-embed --keep /tmp/acc

What it does, all from the repo root, never writing into the (read-only) data folders:

1. ``dataaudit scan DATA --db TMP --no-detect`` then ``dataaudit detect``, both timed as
   subprocesses; ``dataaudit issues --format csv`` gives the findings, which the benchmark's
   own ``score.py`` scores three ways: every issue, near_duplicate/leakage without the cropped
   copies (``--ignore-note crop_frac``) and the cropped copies alone (``--only-note crop_frac``).
2. cleanlab (``pip install cleanlab``; skipped with a message if that fails) as the model-based
   baseline for label_error: our index's embeddings and folder labels, read-only, out-of-fold
   ``predict_proba`` of a logistic regression (5 stratified folds, fixed seed), then
   ``cleanlab.filter.find_label_issues``; flagged files and a ranking of every image by
   1 - self-confidence are scored by the same ``score.py``, and the step is timed.
3. CleanVision (``pip install cleanvision``) on the same folder, in a subprocess of this script,
   its nine issue columns mapped to our vocabulary and scored by the same ``score.py``.
   CleanVision 0.3.x stops at the first file Pillow cannot open, so when the plain run fails
   the error is recorded and it is re-run on the files Pillow can decode (that pre-filter is
   timed separately); it has no corrupt check of its own either way.
4. A side-by-side table per issue type with the targets and PASS/MISS, cleanlab's label_error
   row under ours.
5. The false-alarm check: both tools on the untouched photos (``../shared/datasets/signs``),
   flagged files per issue type. Its three 3024 px photos are real odd-size issues.
6. Wall times, and everything (plus example false positives/negatives of ours per issue type,
   to tune detectors with) in ``bench/results/accuracy.json``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dataaudit.detectors.registry import ISSUE_TYPES

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
BENCH = SHARED / "bench"
DEFAULT_DATA = BENCH / "signs_planted"
DEFAULT_TRUTH = BENCH / "signs_planted_truth.csv"
DEFAULT_MANIFEST = BENCH / "signs_planted_manifest.csv"
DEFAULT_CLEAN = SHARED / "datasets" / "signs"
SCORE_PY = BENCH / "score.py"
RESULTS = HERE / "results" / "accuracy.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The cleanlab baseline for label_error: fixed, untuned model and folds.
CLEANLAB_C = 1.0
CLEANLAB_FOLDS = 5
CLEANLAB_SEED = 0
CLEANLAB_ROW = "label_error (cleanlab LR OOF)"

# CleanVision column stem -> our issue name.
CV_ISSUES = {
    "dark": "dark",
    "light": "light",
    "blurry": "blurry",
    "low_information": "low_information",
    "grayscale": "grayscale",
    "odd_size": "odd_size",
    "odd_aspect_ratio": "odd_aspect_ratio",
    "exact_duplicates": "exact_duplicate",
    "near_duplicates": "near_duplicate",
}
# Every issue type a detector finds in image files, in the registry's order (info flags out).
ISSUE_ORDER = [issue for issue, (severity, _) in ISSUE_TYPES.items() if severity != "info"]
DUP_VIEWS = ("near_duplicate", "leakage")
# Targets from the issue: (text, check on a score.py issue summary). near_duplicate and leakage
# are judged on the view without cropped copies.
F1_TARGETS = {
    "exact_duplicate": 0.99,
    "dark": 0.9,
    "light": 0.9,
    "grayscale": 0.9,
    "odd_size": 0.9,
    "odd_aspect_ratio": 0.9,
    "low_information": 0.9,
    "blurry": 0.8,
}


# ------------------------------------------------------------------------------ running things
def run(cmd: list[str], stdout_file: Path | None = None) -> tuple[float, str]:
    """Run cmd from the repo root; exit with its output if it fails. Returns (seconds, stdout)."""
    t0 = time.perf_counter()
    if stdout_file is not None:
        with open(stdout_file, "w") as out:
            proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.PIPE, text=True)
        stdout = ""
    else:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        stdout = proc.stdout
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"\nfailed with exit code {proc.returncode}: {shlex.join(cmd)}")
        print((stdout + proc.stderr)[-3000:])
        sys.exit(1)
    return seconds, stdout


def scan_supports(flag: str) -> bool:
    """Whether `dataaudit scan --help` lists flag (options are still being added)."""
    _, out = run(["dataaudit", "scan", "--help"])
    return flag in out


def run_ours(data: Path, work: Path, name: str, no_embed: bool) -> dict[str, Any]:
    """Scan (no detect), detect, export issues CSV; return the CSV path and timings."""
    db = work / f"{name}.duckdb"
    if db.exists():
        db.unlink()
    scan = ["dataaudit", "scan", str(data), "--db", str(db), "--no-detect", "-q"]
    if no_embed:
        scan.append("--no-embed")
    print(f"  $ {shlex.join(scan)}", flush=True)
    t_scan, _ = run(scan)
    detect = ["dataaudit", "detect", str(data), "--db", str(db)]
    print(f"  $ {shlex.join(detect)}", flush=True)
    t_detect, _ = run(detect)
    findings = work / f"{name}_ours.csv"
    run(["dataaudit", "issues", str(data), "--db", str(db), "--format", "csv"], findings)
    return {
        "db": str(db),
        "findings": str(findings),
        "scan_s": t_scan,
        "detect_s": t_detect,
        "pair_layers": pair_layers(db),
    }


def pair_layers(db: Path) -> dict[str, int] | None:
    """Duplicate pairs per layer (bytes, phash, embedding) in the index, to see which layer a
    false positive came from; None if the index has no such table (the schema may change)."""
    try:
        import duckdb

        with duckdb.connect(str(db), read_only=True) as con:
            rows = con.execute("SELECT layer, count(*) FROM duplicate_pairs GROUP BY 1 ORDER BY 1")
            return dict(rows.fetchall())
    except Exception:  # noqa: BLE001 - diagnostics only
        return None


def score(truth: Path, findings: Path, out_json: Path, extra: list[str]) -> tuple[dict, str]:
    """Score findings with the benchmark's score.py; return (summary, printed table)."""
    cmd = [sys.executable, str(SCORE_PY), str(truth), str(findings), "--json", str(out_json)]
    _, table = run(cmd + extra)
    return json.loads(out_json.read_text()), table


def score_views(truth: Path, findings: Path, work: Path, tag: str) -> dict[str, Any]:
    """The three views of one findings file: all issues, dups without crops, crops only."""
    views = {
        "all": [],
        "no_crop": ["--issues", ",".join(DUP_VIEWS), "--ignore-note", "crop_frac"],
        "crop_only": ["--issues", ",".join(DUP_VIEWS), "--only-note", "crop_frac"],
    }
    out = {}
    for view, extra in views.items():
        summary, table = score(truth, findings, work / f"{tag}_{view}.json", extra)
        out[view] = {"summary": summary, "table": table}
    return out


# ------------------------------------------------------------------------------ CleanVision
def cleanvision_worker(data: Path, out_csv: Path, out_json: Path) -> None:
    """Run CleanVision on data (in its own process) and write findings CSV + info JSON."""
    from cleanvision import Imagelab
    from PIL import Image

    info: dict[str, Any] = {"version": None, "plain_run_error": None, "prefilter_s": 0.0}
    import cleanvision

    info["version"] = getattr(cleanvision, "__version__", "?")
    t0 = time.perf_counter()
    try:
        lab = Imagelab(data_path=str(data))
        lab.find_issues(verbose=False)
    except Exception as e:  # noqa: BLE001 - a crash is a result here
        info["plain_run_error"] = f"{type(e).__name__}: {e}"
        info["plain_run_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        ok, skipped = [], []
        for d, _, files in os.walk(data):
            for f in sorted(files):
                if not f.lower().endswith(IMAGE_SUFFIXES):
                    continue
                p = os.path.join(d, f)
                try:
                    with Image.open(p) as im:
                        im.load()
                    ok.append(p)
                except Exception:  # noqa: BLE001 - anything Pillow cannot decode is skipped
                    skipped.append(os.path.relpath(p, data))
        info["prefilter_s"] = time.perf_counter() - t1
        info["skipped_files"] = len(skipped)
        t0 = time.perf_counter()
        lab = Imagelab(filepaths=sorted(ok))
        lab.find_issues(verbose=False)
    info["find_issues_s"] = time.perf_counter() - t0
    issues = lab.issues
    info["files_checked"] = len(issues)

    def rel(p: str) -> str:
        return os.path.relpath(p, data).replace(os.sep, "/")

    group_of: dict[str, dict[str, str]] = {"exact_duplicates": {}, "near_duplicates": {}}
    for kind in group_of:
        for i, members in enumerate(lab.info.get(kind, {}).get("sets", [])):
            for m in members:
                group_of[kind][str(m)] = f"cv_{kind}_{i}"
    with open(out_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "issue", "group", "score"])
        for stem, ours in CV_ISSUES.items():
            flag, sc = f"is_{stem}_issue", f"{stem}_score"
            if flag not in issues.columns:
                continue
            for path, row in issues[issues[flag]].iterrows():
                group = group_of.get(stem, {}).get(str(path), "")
                value = row.get(sc)
                w.writerow([rel(str(path)), ours, group, f"{1 - float(value):.6f}"])
    out_json.write_text(json.dumps(info, indent=2))


def run_cleanvision(data: Path, work: Path, name: str) -> dict[str, Any]:
    """Run the CleanVision worker as a subprocess; never fatal."""
    out_csv, out_json = work / f"{name}_cleanvision.csv", work / f"{name}_cleanvision.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cleanvision-worker"]
    cmd += [str(data), str(out_csv), str(out_json)]
    print(f"  $ {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out_json.exists():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        return {"ok": False, "error": " | ".join(tail), "wall_s": seconds}
    return {
        "ok": True,
        "findings": str(out_csv),
        "wall_s": seconds,
        **json.loads(out_json.read_text()),
    }


def ensure_installed(module: str, package: str) -> str | None:
    """Import module, installing package with pip if needed; return an error text or None."""
    if importlib.util.find_spec(module) is not None:
        return None
    print(f"  installing {package} with pip ...", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", package],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"pip install {package} failed: {last}"
    importlib.invalidate_caches()
    if importlib.util.find_spec(module) is None:
        return f"pip install {package} succeeded but {module} still cannot be imported"
    return None


# ------------------------------------------------------------------------------ cleanlab
def load_embeddings(db: Path) -> tuple[list[str], list[str], Any]:
    """(paths, folder labels, float32 matrix) of every embedded, labelled image in the index,
    read through a read-only connection after our scan, ordered by path."""
    import duckdb
    import numpy as np

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT i.path, i.label, e.vector FROM embeddings e JOIN images i USING (file_id) "
            "WHERE i.label IS NOT NULL ORDER BY i.path"
        ).fetchall()
    paths = [r[0] for r in rows]
    labels = [r[1] for r in rows]
    matrix = np.array([r[2] for r in rows], dtype=np.float32)
    return paths, labels, matrix


def run_cleanlab(db: Path, work: Path, truth: Path, name: str) -> dict[str, Any]:
    """Cleanlab's standard recipe on our embeddings: out-of-fold probabilities from a logistic
    regression, then find_label_issues. It needs a trained model, ours (a kNN vote) does not,
    so this is the model-based baseline for label_error. Writes the flagged files as a findings
    CSV (score = 1 - self-confidence) and a CSV ranking every image, and scores both."""
    import cleanlab
    import numpy as np
    import sklearn
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t0 = time.perf_counter()
    paths, labels, x = load_embeddings(db)
    if len(paths) < 10 * CLEANLAB_FOLDS:
        return {"ok": False, "error": f"only {len(paths)} embedded, labelled images in {db}"}
    classes = sorted(set(labels))
    y = np.array([classes.index(lab) for lab in labels])
    t1 = time.perf_counter()
    model = LogisticRegression(max_iter=1000, C=CLEANLAB_C)
    folds = StratifiedKFold(CLEANLAB_FOLDS, shuffle=True, random_state=CLEANLAB_SEED)
    pred_probs = cross_val_predict(model, x, y, cv=folds, method="predict_proba")
    t2 = time.perf_counter()
    ranked = find_label_issues(y, pred_probs, return_indices_ranked_by="self_confidence")
    t3 = time.perf_counter()

    self_conf = pred_probs[np.arange(len(y)), y]
    flagged = set(int(i) for i in ranked)
    findings = work / f"{name}_cleanlab.csv"
    ranking = work / f"{name}_cleanlab_ranked.csv"
    with open(findings, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "issue", "group", "score"])
        for i in ranked:
            w.writerow([paths[i], "label_error", "", f"{1 - self_conf[i]:.6f}"])
    with open(ranking, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "issue", "group", "score", "label", "predicted", "flagged"])
        for i in np.argsort(self_conf, kind="stable"):
            predicted = classes[int(pred_probs[i].argmax())]
            row = [paths[i], "label_error", "", f"{1 - self_conf[i]:.6f}", labels[i], predicted]
            w.writerow(row + [int(i) in flagged])
    only = ["--issues", "label_error"]
    flagged_summary, _ = score(truth, findings, work / f"{name}_cleanlab.json", only)
    ranked_summary, _ = score(truth, ranking, work / f"{name}_cleanlab_ranked.json", only)
    return {
        "ok": True,
        "version": getattr(cleanlab, "__version__", "?"),
        "sklearn_version": sklearn.__version__,
        "model": f"LogisticRegression(max_iter=1000, C={CLEANLAB_C})",
        "folds": f"StratifiedKFold({CLEANLAB_FOLDS}, shuffle=True, random_state={CLEANLAB_SEED})",
        "images": len(paths),
        "classes": len(classes),
        "oof_accuracy": float((pred_probs.argmax(axis=1) == y).mean()),
        "flagged": len(ranked),
        "findings": str(findings),
        "ranking": str(ranking),
        "label_error": flagged_summary["issues"].get("label_error"),
        "label_error_all_ranked": ranked_summary["issues"].get("label_error"),
        "load_s": t1 - t0,
        "oof_s": t2 - t1,
        "find_s": t3 - t2,
        "wall_s": t3 - t0,
    }


# ------------------------------------------------------------------------------ analysis
def load_score_module():
    """Import the benchmark's score.py so that examples use its exact positive/excused sets."""
    spec = importlib.util.spec_from_file_location("bench_score", SCORE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def error_examples(truth: Path, manifest: Path, findings: Path, n: int = 6) -> dict[str, Any]:
    """Per issue: our false positives (what each file really is) and false negatives (which
    variant was missed), counted by kind, with a few example paths to tune detectors with."""
    sp = load_score_module()
    truth_rows = read_rows(truth)
    pos, exc, _, known = sp.load_truth(truth_rows)
    flagged, _, _ = sp.load_findings(read_rows(findings), "", set(sp.ISSUES) | known, False)
    notes: dict[tuple[str, str], str] = {}
    for r in truth_rows:
        notes[(r["path"], r["issue"])] = r["note"]
        if r["group"]:  # the partner of a copy: describe it by its copy
            notes.setdefault((r["group"], r["issue"]), f"partner of {r['path']}: {r['note']}")
    planted = {r["path"]: r["planted"] or "untouched" for r in read_rows(manifest)}

    def kind(note: str) -> str:
        partner = note.startswith("partner of")
        body = note.split(": ", 1)[1] if partner else note
        kv = dict(x.split("=", 1) for x in body.split(";") if "=" in x)
        k = kv.get("variant") or kv.get("subtype") or kv.get("flip")
        k = k or kv.get("source", "-").split(":")[0]
        return ("partner of " + k) if partner else k

    out = {}
    for iss in ISSUE_ORDER:
        P, F = pos.get(iss, set()), flagged.get(iss, {})
        excused = exc.get(iss, set()) - P
        fp = sorted(set(F) - P - excused, key=lambda p: (-(F[p] or 0), p))
        # copies first (their note says what was done), partners after
        fn = sorted(P - set(F), key=lambda p: (notes.get((p, iss), "").startswith("partner"), p))
        if not fp and not fn:
            continue
        out[iss] = {
            "fp_count": len(fp),
            "fn_count": len(fn),
            "fp_by_kind": dict(Counter(planted.get(p, "?") for p in fp).most_common()),
            "fn_by_kind": dict(Counter(kind(notes.get((p, iss), "")) for p in fn).most_common()),
            "fp": [{"path": p, "score": F[p], "really": planted.get(p, "?")} for p in fp[:n]],
            "fn": [{"path": p, "truth": notes.get((p, iss), "")} for p in fn[:n]],
        }
    return out


def flag_counts(findings: Path) -> dict[str, int]:
    """Distinct flagged files per issue type."""
    files: dict[str, set[str]] = {}
    for r in read_rows(findings):
        files.setdefault(r["issue"], set()).add(r["path"])
    return {k: len(v) for k, v in files.items()}


def image_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (width, height) of every image file, read from headers."""
    from PIL import Image

    sizes = {}
    for d, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(IMAGE_SUFFIXES):
                p = os.path.join(d, f)
                with Image.open(p) as im:
                    sizes[os.path.relpath(p, folder).replace(os.sep, "/")] = im.size
    return sizes


# ------------------------------------------------------------------------------ printing
def fmt(x: float | None) -> str:
    return "    -" if x is None else f"{x:5.3f}"


def fmt_counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")" if counts else ""


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def target_check(iss: str, s: dict | None) -> tuple[str, bool | None]:
    """The issue's target for one type, and whether the summary meets it."""
    if s is None:
        return "", None
    p, r, f = s["precision"], s["recall"], s["f1"]
    if iss in ("corrupt", "wrong_extension"):
        return "P=R=1.0", p == 1.0 and r == 1.0
    if iss in DUP_VIEWS:
        return "R>=0.9 at P>=0.9", (p or 0) >= 0.9 and (r or 0) >= 0.9
    if iss in F1_TARGETS:
        return f"F1>={F1_TARGETS[iss]}", (f or 0) >= F1_TARGETS[iss]
    return "", None


def side_by_side(ours: dict, cv: dict | None, cl: dict | None = None) -> tuple[list[dict], str]:
    """Rows per issue (and per duplicate view) with targets and the comparison to CleanVision;
    cl (a run_cleanlab result) adds cleanlab's label_error row under ours."""
    rows = []
    metrics = ("precision", "recall", "f1", "ap", "recall_at_2n")

    def get(views: dict | None, view: str, iss: str) -> dict | None:
        if views is None:
            return None
        return views[view]["summary"]["issues"].get(iss)

    for iss in ISSUE_ORDER:
        labels = [(iss, "all")]
        if iss in DUP_VIEWS:
            labels = [
                (iss, "all"),
                (iss + " no-crop", "no_crop"),
                (iss + " crop-only", "crop_only"),
            ]
        for label, view in labels:
            o, c = get(ours, view, iss), get(cv, view, iss)
            judged = view == "no_crop" or (iss not in DUP_VIEWS)
            target, ok = target_check(iss, o) if judged else ("(reported)", None)
            covers = cv is not None and iss in CV_ISSUES.values()
            vs_cv = None
            if covers and view == "all":
                vs_cv = (o["f1"] or 0) >= ((c or {}).get("f1") or 0) if o else False
            rows.append(
                {
                    "issue": label,
                    "tool": "dataaudit",
                    "target": target,
                    "ours": {k: (o or {}).get(k) for k in metrics},
                    "cleanvision": {k: (c or {}).get(k) for k in ("precision", "recall", "f1")}
                    if covers
                    else None,
                    "target_met": ok,
                    "ours_ge_cleanvision": vs_cv,
                }
            )
            if iss == "label_error" and cl and cl.get("ok"):
                s = cl["label_error"] or {}
                rows.append(
                    {
                        "issue": CLEANLAB_ROW,
                        "tool": "cleanlab",
                        "target": "(baseline)",
                        "ours": {k: s.get(k) for k in metrics},
                        "cleanvision": None,
                        "target_met": None,
                        "ours_ge_cleanvision": None,
                    }
                )
    head = (
        f"{'issue':30s} {'target':17s} | {'P':>5s} {'R':>5s} {'F1':>5s} {'AP':>5s} {'R@2n':>5s} "
        f"| {'CV P':>5s} {'R':>5s} {'F1':>5s} | {'target':6s} {'>=CV':5s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        o, c = r["ours"], r["cleanvision"] or {}
        lines.append(
            f"{r['issue']:30s} {r['target']:17s} | {fmt(o['precision'])} {fmt(o['recall'])} "
            f"{fmt(o['f1'])} {fmt(o['ap'])} {fmt(o['recall_at_2n'])} | "
            f"{fmt(c.get('precision'))} {fmt(c.get('recall'))} {fmt(c.get('f1'))} | "
            f"{verdict(r['target_met']):6s} {verdict(r['ours_ge_cleanvision']):5s}"
        )
    return rows, "\n".join(lines)


def cleanlab_summary(cl: dict, ours: dict | None) -> str:
    """Lines under the table: how cleanlab was run, its full ranking and the F1 comparison."""
    s, r = cl["label_error"] or {}, cl["label_error_all_ranked"] or {}
    o = ours or {}
    lines = [
        f"cleanlab {cl['version']} (scikit-learn {cl['sklearn_version']}): "
        f"find_label_issues on out-of-fold predict_proba of {cl['model']}, {cl['folds']}, "
        f"{cl['images']:,} embedded images, {cl['classes']} classes; OOF accuracy "
        f"{cl['oof_accuracy']:.3f}; {cl['flagged']} flagged ({s.get('tp')} TP, {s.get('fp')} FP)",
        f"cleanlab ranking of all {cl['images']:,} images by 1 - self-confidence: AP "
        f"{fmt(r.get('ap')).strip()}, R@n {fmt(r.get('recall_at_n')).strip()}, R@2n "
        f"{fmt(r.get('recall_at_2n')).strip()} (n = {r.get('positives')})",
        f"label_error F1: dataaudit {fmt(o.get('f1')).strip()} vs cleanlab "
        f"{fmt(s.get('f1')).strip()}: ours >= cleanlab {verdict((o.get('f1') or 0) >= (s.get('f1') or 0))}",
    ]
    return "\n".join(lines)


def false_alarm_table(n_files: int, ours: dict[str, int], cv: dict[str, int] | None, sizes) -> str:
    odd = sum(1 for wh in sizes.values() if wh != (100, 100))
    head = f"{'issue':18s} {'ours files':>10s} {'rate':>7s} | {'CV files':>8s} {'rate':>7s}"
    lines = [head, "-" * len(head)]
    extra = sorted((set(ours) | set(cv or {})) - set(ISSUE_ORDER))
    for iss in ISSUE_ORDER + extra:
        if iss not in ours and (cv is None or iss not in cv):
            continue
        o = ours.get(iss, 0)
        c = "-" if cv is None else str(cv.get(iss, 0))
        cr = "-" if cv is None else f"{cv.get(iss, 0) / n_files:7.2%}"
        note = f"  ({odd} real: the large photos in 7/)" if iss == "odd_size" else ""
        lines.append(f"{iss:18s} {o:10d} {o / n_files:7.2%} | {c:>8s} {cr:>7s}{note}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ main
def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--cleanvision-worker":
        cleanvision_worker(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bench",
        help="a bench built by build_benches.py (digits, backdrop, "
        "signs32, signs_clustered): sets --data, --truth and --manifest",
    )
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="planted benchmark folder")
    ap.add_argument("--truth", type=Path, default=DEFAULT_TRUTH)
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--clean", type=Path, default=DEFAULT_CLEAN, help="untouched photos")
    ap.add_argument("--skip-cleanvision", action="store_true")
    ap.add_argument("--skip-cleanlab", action="store_true", help="no cleanlab label_error baseline")
    ap.add_argument("--no-embed", action="store_true", help="pass --no-embed to dataaudit scan")
    ap.add_argument("--keep", type=Path, help="keep indexes and CSVs in this folder")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    if a.bench:
        built = HERE / ".data"
        a.data, a.truth = built / a.bench, built / f"{a.bench}_truth.csv"
        a.manifest = built / f"{a.bench}_manifest.csv"
        if a.out == RESULTS:
            a.out = RESULTS.with_name(f"accuracy_{a.bench}.json")
    data, clean = a.data.resolve(), a.clean.resolve()
    for p in (data, a.truth, a.manifest, clean, SCORE_PY):
        if not p.exists():
            sys.exit(f"bench_accuracy.py: {p} does not exist")
    if a.keep:
        a.keep.mkdir(parents=True, exist_ok=True)
        work = a.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="dataaudit-accuracy-"))
    no_embed = a.no_embed
    if no_embed and not scan_supports("--no-embed"):
        print("note: this dataaudit scan has no --no-embed option; scanning without it")
        no_embed = False
    result: dict[str, Any] = {"data": str(data), "clean": str(clean), "no_embed": no_embed}
    try:
        print(f"[1/5] dataaudit on {data}", flush=True)
        ours_run = run_ours(data, work, "planted", no_embed)
        ours = score_views(a.truth, Path(ours_run["findings"]), work, "ours")
        n_planted = sum(
            1 for _, _, fs in os.walk(data) for f in fs if f.lower().endswith(IMAGE_SUFFIXES)
        )
        result["ours"] = {
            "times": {k: v for k, v in ours_run.items() if k.endswith("_s")},
            "scores": {k: v["summary"] for k, v in ours.items()},
            "errors": error_examples(a.truth, a.manifest, Path(ours_run["findings"])),
        }

        noembed = None
        if not no_embed and scan_supports("--no-embed"):
            print("  timing and scoring the same scan without embeddings too", flush=True)
            ne_run = run_ours(data, work, "planted_noembed", True)
            ne_score, _ = score(a.truth, Path(ne_run["findings"]), work / "noembed_all.json", [])
            noembed = {
                "times": {k: v for k, v in ne_run.items() if k.endswith("_s")},
                "pair_layers": ne_run["pair_layers"],
                "f1": {k: v["f1"] for k, v in ne_score["issues"].items()},
            }
        result["ours"]["pair_layers"] = ours_run["pair_layers"]
        result["ours_no_embed"] = noembed

        cl = None
        if a.skip_cleanlab:
            print("[2/5] cleanlab skipped (--skip-cleanlab)")
        elif no_embed:
            print("[2/5] cleanlab skipped: it needs the embeddings that --no-embed leaves out")
        else:
            print("[2/5] cleanlab label_error baseline on our embeddings", flush=True)
            err = ensure_installed("cleanlab", "cleanlab")
            if err:
                cl = {"ok": False, "error": err}
            else:
                try:
                    cl = run_cleanlab(Path(ours_run["db"]), work, a.truth, "planted")
                except Exception as e:  # noqa: BLE001 - a baseline failure must not end the run
                    cl = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            if not cl["ok"]:
                print(f"  cleanlab skipped: {cl['error']}")
        result["cleanlab"] = cl

        cv = cv_run = cv_clean = None
        if a.skip_cleanvision:
            print("[3/5] CleanVision skipped (--skip-cleanvision)")
        else:
            print("[3/5] CleanVision on the same folder", flush=True)
            err = ensure_installed("cleanvision", "cleanvision")
            cv_run = {"ok": False, "error": err} if err else run_cleanvision(data, work, "planted")
            if cv_run["ok"]:
                cv = score_views(a.truth, Path(cv_run["findings"]), work, "cv")
            else:
                print(f"  CleanVision did not run: {cv_run['error']}")
            result["cleanvision"] = {
                "run": cv_run,
                "scores": {k: v["summary"] for k, v in cv.items()} if cv else None,
            }

        print("[4/5] false alarms on the untouched photos", flush=True)
        sizes = image_sizes(clean)
        clean_run = run_ours(clean, work, "clean", no_embed)
        clean_ours = flag_counts(Path(clean_run["findings"]))
        clean_cv = None
        if cv_run and cv_run["ok"]:
            cv_clean = run_cleanvision(clean, work, "clean")
            if cv_clean["ok"]:
                clean_cv = flag_counts(Path(cv_clean["findings"]))
            else:
                print(f"  CleanVision failed on the clean photos: {cv_clean['error']}")
        clean_flagged = {}
        for r in read_rows(Path(clean_run["findings"])):
            clean_flagged.setdefault(r["issue"], []).append(r["path"])
        result["false_alarms"] = {
            "files": len(sizes),
            "really_odd_size": sorted(p for p, wh in sizes.items() if wh != (100, 100)),
            "ours": clean_ours,
            "ours_times": {k: v for k, v in clean_run.items() if k.endswith("_s")},
            "ours_pair_layers": clean_run["pair_layers"],
            "ours_examples": {k: sorted(set(v))[:10] for k, v in clean_flagged.items()},
            "cleanvision": clean_cv,
            "cleanvision_run": cv_clean,
        }

        print("[5/5] results\n")
        print("=== dataaudit, score.py, all issues ===")
        print(ours["all"]["table"])
        print("=== dataaudit, near_duplicate/leakage without cropped copies ===")
        print(ours["no_crop"]["table"])
        print("=== dataaudit, cropped copies only ===")
        print(ours["crop_only"]["table"])
        if cv:
            print(f"=== CleanVision {cv_run.get('version')}, score.py, all issues ===")
            print(cv["all"]["table"])
            print("=== CleanVision, near_duplicate without cropped copies ===")
            print(cv["no_crop"]["table"])
            print("=== CleanVision, cropped copies only ===")
            print(cv["crop_only"]["table"])
        if cv_run and cv_run.get("plain_run_error"):
            print(
                f"note: CleanVision on the folder as given crashed "
                f"({cv_run['plain_run_error'][:160]}); it was re-run on the "
                f"{cv_run['files_checked']} files Pillow can decode "
                f"({cv_run['skipped_files']} skipped)."
            )
        rows, table = side_by_side(ours, cv, cl)
        result["side_by_side"] = rows
        print(
            "\n=== side by side (P/R/F1 per issue; AP and R@2n rank the flagged files by score; "
            "left block: dataaudit, or the tool the row names) ==="
        )
        print(table)
        if cl and cl["ok"]:
            print(
                cleanlab_summary(cl, result["ours"]["scores"]["all"]["issues"].get("label_error"))
            )
        judged = [r for r in rows if r["target_met"] is not None]
        compared = [r for r in rows if r["ours_ge_cleanvision"] is not None]
        worse = [r["issue"] for r in compared if not r["ours_ge_cleanvision"]]
        print(
            f"targets met: {sum(r['target_met'] for r in judged)}/{len(judged)}; "
            + (
                f"ours >= CleanVision (F1) on {len(compared) - len(worse)}/{len(compared)} shared "
                f"types: {verdict(not worse)}"
                + (f" (worse on: {', '.join(worse)})" if worse else "")
                if compared
                else "no CleanVision comparison"
            )
        )
        result["verdict"] = {
            "targets_met": sum(r["target_met"] for r in judged),
            "targets": len(judged),
            "ours_ge_cleanvision": not worse if compared else None,
            "worse_than_cleanvision": worse,
        }

        print(f"\n=== false alarms on {len(sizes):,} untouched photos ({clean}) ===")
        print(false_alarm_table(len(sizes), clean_ours, clean_cv, sizes))
        print(f"duplicate pairs by layer: {clean_run['pair_layers']}")
        for iss, paths in sorted(result["false_alarms"]["ours_examples"].items()):
            print(f"  ours {iss}: {', '.join(paths[:6])}{' ...' if len(paths) > 6 else ''}")

        print("\n=== wall times (seconds, end to end incl. interpreter start-up) ===")
        t = result["ours"]["times"]
        ours_total = t["scan_s"] + t["detect_s"]
        print(
            f"dataaudit  planted ({n_planted:,} files): scan {t['scan_s']:.1f} + detect "
            f"{t['detect_s']:.1f} = {ours_total:.1f} s ({1000 * ours_total / n_planted:.1f} ms/file)"
            f"{' [no embeddings]' if no_embed else ''}"
        )
        if noembed:
            nt = noembed["times"]
            ne_total = nt["scan_s"] + nt["detect_s"]
            print(
                f"dataaudit  planted --no-embed: scan {nt['scan_s']:.1f} + detect "
                f"{nt['detect_s']:.1f} = {ne_total:.1f} s ({1000 * ne_total / n_planted:.1f} ms/file)"
            )
        ct = result["false_alarms"]["ours_times"]
        print(
            f"dataaudit  clean ({len(sizes):,} files): scan {ct['scan_s']:.1f} + detect "
            f"{ct['detect_s']:.1f} s"
        )
        if cv_run and cv_run.get("ok"):
            cv_total = cv_run["wall_s"]
            print(
                f"CleanVision planted: {cv_total:.1f} s wall (find_issues {cv_run['find_issues_s']:.1f}"
                f", Pillow pre-filter {cv_run['prefilter_s']:.1f}"
                + (
                    f", crashed first run {cv_run['plain_run_s']:.1f}"
                    if "plain_run_s" in cv_run
                    else ""
                )
                + f") ({1000 * cv_total / n_planted:.1f} ms/file)"
            )
            ratios = f"CleanVision/dataaudit: {cv_total / ours_total:.2f}x"
            if noembed:
                ratios += f", CleanVision/dataaudit --no-embed: {cv_total / ne_total:.2f}x"
            print(ratios + " (>1 means dataaudit is faster)")
        if cv_clean and cv_clean.get("ok"):
            print(f"CleanVision clean: {cv_clean['wall_s']:.1f} s wall")
        if cl and cl["ok"]:
            print(
                f"cleanlab   planted ({cl['images']:,} embedded images, in this process): load "
                f"{cl['load_s']:.1f} + 5-fold LR {cl['oof_s']:.1f} + find_label_issues "
                f"{cl['find_s']:.1f} = {cl['wall_s']:.1f} s (on top of our scan, which made the "
                f"embeddings; our label_error is part of detect {t['detect_s']:.1f} s)"
            )

        print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        result["loadavg_end"] = os.getloadavg()
        print(f"duplicate pairs by layer (planted): {ours_run['pair_layers']}")
        if noembed:
            changed = {
                k: (result["ours"]["scores"]["all"]["issues"].get(k, {}).get("f1"), v)
                for k, v in noembed["f1"].items()
            }
            changed = {k: ab for k, ab in changed.items() if ab[0] != ab[1]}
            print(
                "F1 that changes without embeddings: "
                + ", ".join(
                    f"{k} {fmt(a).strip()}->{fmt(b).strip()}" for k, (a, b) in changed.items()
                )
            )
        print("\n=== dataaudit errors per issue type (FP: what the file really is) ===")
        for iss, e in result["ours"]["errors"].items():
            print(
                f"{iss}: {e['fp_count']} FP {fmt_counts(e.get('fp_by_kind', {}))}; "
                f"{e['fn_count']} FN {fmt_counts(e.get('fn_by_kind', {}))}"
            )
            for x in e["fp"]:
                sc = "-" if x["score"] is None else f"{x['score']:.3f}"
                print(f"    FP {x['path']}  score={sc}  really={x['really']}")
            for x in e["fn"]:
                print(f"    FN {x['path']}  {x['truth'][:110]}")
        write_json_atomic(a.out, result)
        print(f"\nwrote {a.out}")
    finally:
        if a.keep:
            print(f"kept indexes and CSVs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

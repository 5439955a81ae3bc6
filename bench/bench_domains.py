"""Detector accuracy on the four domain benches (built by ``build_benches.py``), in one run.

    python bench/build_benches.py                       # once: bench/.data/{digits,...}
    python bench/bench_domains.py                       # all benches, with and without embeddings
    python bench/bench_domains.py --bench digits --cleanvision --label after
    python bench/bench_domains.py --keep /tmp/idx --reuse   # detectors changed: detect only

For each bench: ``dataaudit scan --no-detect`` + ``dataaudit detect`` (default settings) with
embeddings and again with ``--no-embed`` (the hash-only figures), ``dataaudit issues --format
csv`` scored by ``../shared/bench/score.py``, and three figures score.py does not give:

* outlier recall per kind of planted outlier: ``batch`` (a clustered contamination of 1-2%
  foreign images) and ``single`` (strays), each against the target R >= 0.8;
* false alarms: the share of *untouched* files (named in no truth row, as path or partner)
  flagged, per issue type, against the target <= 1%;
* the share of the whole bench each type flags, against the target <= 5%.

``--cleanvision`` runs CleanVision on the same folder (through ``bench_accuracy.py``).
Results go to ``bench/results/domains_<label>.json`` and a markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_accuracy as ba  # noqa: E402 - the shared runner and scorer helpers

DATA = HERE / ".data"
BENCHES = ("digits", "backdrop", "signs32", "signs_clustered")
TYPES = ("corrupt", "wrong_extension", "exact_duplicate", "near_duplicate", "leakage", "dark",
         "light", "blurry", "low_information", "grayscale", "odd_size", "odd_aspect_ratio",
         "outlier", "label_error")  # fmt: skip


def bench_paths(name: str) -> tuple[Path, Path, Path]:
    paths = DATA / name, DATA / f"{name}_truth.csv", DATA / f"{name}_manifest.csv"
    for p in paths:
        if not p.exists():
            sys.exit(f"bench_domains.py: {p} is missing; run python bench/build_benches.py")
    return paths


def extra_figures(truth: Path, manifest: Path, findings: Path) -> dict[str, Any]:
    """Outlier recall by cluster kind, false-alarm rate on untouched files, share flagged."""
    truth_rows = ba.read_rows(truth)
    files = [r["path"] for r in ba.read_rows(manifest)]
    named = {r["path"] for r in truth_rows} | {r["group"] for r in truth_rows if r["group"]}
    untouched = set(files) - named
    flagged: dict[str, set[str]] = {}
    for r in ba.read_rows(findings):
        flagged.setdefault(r["issue"], set()).add(r["path"])
    out_kind: dict[str, dict[str, float]] = {}
    for kind in ("batch", "single"):
        planted = {r["path"] for r in truth_rows
                   if r["issue"] == "outlier" and f"cluster={kind}" in r["note"]}  # fmt: skip
        if not planted:  # the shared signs outliers carry no cluster tag: they are strays
            planted = {r["path"] for r in truth_rows
                       if r["issue"] == "outlier" and "cluster=" not in r["note"]} if kind == "single" else set()  # fmt: skip
        if planted:
            found = planted & flagged.get("outlier", set())
            out_kind[kind] = {
                "n": len(planted),
                "found": len(found),
                "recall": len(found) / len(planted),
            }
    return {
        "files": len(files),
        "untouched": len(untouched),
        "outlier_by_kind": out_kind,
        "false_alarm_rate": {
            t: len(flagged.get(t, set()) & untouched) / max(1, len(untouched)) for t in TYPES
        },  # fmt: skip
        "flag_share": {t: len(flagged.get(t, set())) / max(1, len(files)) for t in TYPES},
    }


def detect_again(data: Path, work: Path, tag: str) -> dict[str, Any]:
    """Re-run only ``dataaudit detect`` on a kept index (the scan does not depend on the
    detectors), and export its issues."""
    db = work / f"{tag}.duckdb"
    t_detect, _ = ba.run(["dataaudit", "detect", str(data), "--db", str(db)])
    findings = work / f"{tag}_ours.csv"
    ba.run(["dataaudit", "issues", str(data), "--db", str(db), "--format", "csv"], findings)
    return {"db": str(db), "findings": str(findings), "detect_s": t_detect,
            "pair_layers": ba.pair_layers(db)}  # fmt: skip


def run_bench(
    name: str, work: Path, no_embed: bool, cleanvision: bool, reuse: bool = False
) -> dict[str, Any]:
    data, truth, manifest = bench_paths(name)
    tag = f"{name}{'_noembed' if no_embed else ''}"
    if reuse and (work / f"{tag}.duckdb").exists():
        run = detect_again(data, work, tag)
    else:
        run = ba.run_ours(data, work, tag, no_embed)
    summary, _ = ba.score(truth, Path(run["findings"]), work / f"{tag}.json", [])
    res = {"scores": summary["issues"], "times": {k: v for k, v in run.items() if k.endswith("_s")},
           "pair_layers": run["pair_layers"], **extra_figures(truth, manifest, Path(run["findings"])),
           "errors": ba.error_examples(truth, manifest, Path(run["findings"]))}  # fmt: skip
    if cleanvision:
        err = ba.ensure_installed("cleanvision", "cleanvision")
        cv = {"ok": False, "error": err} if err else ba.run_cleanvision(data, work, tag)
        if cv["ok"]:
            cv_sum, _ = ba.score(truth, Path(cv["findings"]), work / f"{tag}_cv.json", [])
            res["cleanvision"] = {"scores": cv_sum["issues"], "wall_s": cv["wall_s"],
                                  **extra_figures(truth, manifest, Path(cv["findings"]))}  # fmt: skip
        else:
            res["cleanvision"] = {"error": cv.get("error")}
    return res


def f3(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(name: str, res: dict[str, Any], hashonly: dict[str, Any] | None) -> str:
    cv = res.get("cleanvision", {}).get("scores")
    lines = [f"### {name} ({res['files']} files, {res['untouched']} untouched)", "",
             "| type | P | R | F1 | hash-only F1 | false alarms | share flagged | CleanVision P / R / F1 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for t in TYPES:
        s = res["scores"].get(t)
        if s is None or not s.get("positives"):
            continue
        h = (hashonly or {}).get("scores", {}).get(t) or {}
        c = (cv or {}).get(t)
        cvs = f"{f3(c['precision'])} / {f3(c['recall'])} / {f3(c['f1'])}" if c else "-"
        lines.append(f"| {t} | {f3(s['precision'])} | {f3(s['recall'])} | {f3(s['f1'])} | {f3(h.get('f1'))} "
                     f"| {res['false_alarm_rate'][t]:.1%} | {res['flag_share'][t]:.1%} | {cvs} |")  # fmt: skip
    for kind, o in res["outlier_by_kind"].items():
        lines.append(
            f"| outlier ({kind}) | | {f3(o['recall'])} ({o['found']}/{o['n']}) | | | | | |"
        )
    worst = max(res["flag_share"].items(), key=lambda kv: kv[1])
    fa = max(res["false_alarm_rate"].items(), key=lambda kv: kv[1])
    lines.append(f"\nlargest share flagged: {worst[0]} {worst[1]:.1%}; largest false-alarm rate: "
                 f"{fa[0]} {fa[1]:.1%}")  # fmt: skip
    return "\n".join(lines)


def prf(s: dict | None) -> str:
    if not s or not s.get("positives"):
        return "-"
    return f"{f3(s['precision'])} / {f3(s['recall'])} / {f3(s['f1'])}"


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Markdown: per bench and type, P / R / F1 before and after (with embeddings), the
    hash-only F1 after, false alarms on untouched files before -> after, CleanVision."""
    out = []
    for name, a in after.items():
        b = before.get(name, {})
        ae, be = a["embed"], (b.get("embed") or {})
        cv = (be.get("cleanvision") or ae.get("cleanvision") or {}).get("scores") or {}
        out += [f"#### {name} ({ae['files']:,} files, {ae['untouched']:,} untouched)", "",
                "| type | before P / R / F1 | after P / R / F1 | after hash-only F1 | false alarms before -> after | CleanVision P / R / F1 |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for t in TYPES:
            s = ae["scores"].get(t)
            if not s or not s.get("positives"):
                continue
            h = ((a.get("hash_only") or {}).get("scores") or {}).get(t) or {}
            fa_b = (be.get("false_alarm_rate") or {}).get(t)
            fa = (
                f"{fa_b:.1%} -> {ae['false_alarm_rate'][t]:.1%}"
                if fa_b is not None
                else f"{ae['false_alarm_rate'][t]:.1%}"
            )
            out.append(f"| {t} | {prf((be.get('scores') or {}).get(t))} | {prf(s)} | {f3(h.get('f1'))} "
                       f"| {fa} | {prf(cv.get(t))} |")  # fmt: skip
        for kind, o in ae["outlier_by_kind"].items():
            ob = (be.get("outlier_by_kind") or {}).get(kind, {})
            out.append(f"| outlier, {kind} (recall) | {f3(ob.get('recall'))} | {f3(o['recall'])} "
                       f"({o['found']}/{o['n']}) | | | |")  # fmt: skip
        top = max(ae["flag_share"].items(), key=lambda kv: kv[1])
        out += [
            "",
            f"Largest share of the bench flagged by one type after: {top[0]} {top[1]:.1%}.",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--bench", choices=BENCHES, action="append", help="only this bench (repeatable)"
    )
    ap.add_argument("--no-hash-only", action="store_true", help="skip the --no-embed run")
    ap.add_argument("--cleanvision", action="store_true", help="run CleanVision beside ours")
    ap.add_argument("--label", default="now", help="name of the results file")
    ap.add_argument("--keep", type=Path, help="keep indexes and CSVs in this folder")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="with --keep: re-run only detect on indexes kept there by an earlier run",
    )
    ap.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("BEFORE", "AFTER"),
        help="print a before/after markdown table from two results files and exit",
    )
    a = ap.parse_args()
    if a.compare:
        print(compare(*(json.loads(p.read_text()) for p in a.compare)))
        return
    work = a.keep or Path(tempfile.mkdtemp(prefix="dataaudit-domains-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in a.bench or BENCHES:
        print(f"== {name}", flush=True)
        res = run_bench(name, work, False, a.cleanvision, a.reuse)
        hashonly = None if a.no_hash_only else run_bench(name, work, True, False, a.reuse)
        results[name] = {"embed": res, "hash_only": hashonly}
        print(table(name, res, hashonly), flush=True)
    out = HERE / "results" / f"domains_{a.label}.json"
    ba.write_json_atomic(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

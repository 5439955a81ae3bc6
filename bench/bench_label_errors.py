"""Label-error precision/recall on signs_planted: the neighbour vote alone vs merged with
confident learning on a linear classifier's out-of-fold predictions (`dataaudit train`).

    python bench/bench_label_errors.py                 # scans into a temp folder first
    python bench/bench_label_errors.py --db /tmp/signs/index.duckdb   # reuse a scan (copied)

Both signals are scored by ../shared/bench/score.py against the truth file; the script
prints both lines and the F1 ratio. The index given is copied, never modified.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dataaudit as da  # noqa: E402
from dataaudit.train.config import TrainConfig  # noqa: E402
from dataaudit.train.run import train  # noqa: E402

BENCH = REPO.parent / "shared" / "bench"


def findings(idx, out: Path) -> Path:
    rows = idx.issues("label_error")
    rows.select("path", "issue", "score").write_csv(out)
    return out


def score(csv: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "score.py"), str(BENCH / "signs_planted_truth.csv"),
         str(csv), "--issues", "label_error", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(proc.stdout)
    return data["issues"]["label_error"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, help="an existing index of signs_planted (copied)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench_label_errors_"))
    db = work / "index.duckdb"
    if args.db:
        shutil.copy(args.db, db)
    else:
        da.scan(BENCH / "signs_planted", db)
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE IF EXISTS model_label_issues")  # the neighbour vote alone first
    con.close()
    idx = da.open_index(db)
    da.detect(idx)
    neighbour = score(findings(idx, work / "neighbour.csv"))
    start = time.perf_counter()
    result = train(idx, TrainConfig(models=("linear",), sanity=False, seed=args.seed))
    seconds = time.perf_counter() - start
    combined = score(findings(idx, work / "combined.csv"))
    print(f"linear baseline: {result.table.row(0, named=True)}; trained in {seconds:.1f} s")
    print(f"model-only label issues (cleanlab find_label_issues): {result.label_issues}")
    for name, s in (("neighbour vote", neighbour), ("combined", combined)):
        print(
            f"{name:<15} "
            + json.dumps(
                {k: s.get(k) for k in ("tp", "fp", "fn", "precision", "recall", "f1", "ap")}
            )
        )
    print(f"F1 combined / neighbour = {combined['f1'] / max(neighbour['f1'], 1e-9):.2f}")
    print(f"work files in {work}")


if __name__ == "__main__":
    main()

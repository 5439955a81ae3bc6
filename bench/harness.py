"""What every benchmark script ends with: a warning when other work loaded the machine, and
the raw results saved as JSON under bench/results/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def warn_if_loaded(load_before: float, cores: int) -> float:
    """Print a warning when the 1-minute load average passed half the cores during the run
    (wall times are then inflated); returns the highest load seen."""
    load = max(load_before, os.getloadavg()[0])
    if load > cores / 2:
        print(f"\nWARNING: load average {load:.1f} on {cores} cores: other work competed; "
              "wall times are inflated, CPU seconds less so.")  # fmt: skip
    return load


def save_results(name: str, results: Any) -> Path:
    """Write ``results`` to bench/results/<name>-<time>.json and say where."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nraw results: {path}")
    return path

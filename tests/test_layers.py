"""The layers stay honest: the app, training and export read the index only through the
API and query layer, and nothing outside embedding and training code imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO, _subprocess_env

API_ONLY = [REPO / "app", REPO / "dataaudit" / "train", REPO / "dataaudit" / "export"]
FORBIDDEN_IN_API_ONLY = {"duckdb", "dataaudit.store.db", "dataaudit.queries.index"}
TORCH_ALLOWED = [REPO / "dataaudit" / "embed", REPO / "dataaudit" / "train"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _python_files(folders: list[Path]) -> list[Path]:
    return [p for folder in folders if folder.is_dir() for p in sorted(folder.rglob("*.py"))]


def test_app_train_and_export_read_only_through_the_api():
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN_IN_API_ONLY)
        for p in _python_files(API_ONLY)
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_torch_is_imported_only_by_embedding_and_training_code():
    allowed = set(_python_files(TORCH_ALLOWED))
    offenders = [
        str(p.relative_to(REPO))
        for p in _python_files([REPO / "dataaudit", REPO / "app"])
        if p not in allowed and any(n.split(".")[0] in ("torch", "torchvision", "timm")
                                    for n in _imports(p))
    ]  # fmt: skip
    assert not offenders


def test_light_modules_load_without_torch():
    code = (
        "import sys\n"
        "import dataaudit as da, dataaudit.api, dataaudit.index, dataaudit.report, "
        "dataaudit.cli, dataaudit.detectors.registry, dataaudit.testing\n"
        "da.Filters\n"
        "sys.exit(1 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_subprocess_env(), cwd=REPO)
    assert proc.returncode == 0, "torch was imported by a light module"

"""README.md's Python examples run as written (on a copy of the shipped sample)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, _subprocess_env


def _python_blocks(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
def test_python_api_example_runs_as_written(tmp_path):
    blocks = _python_blocks("Python API")
    assert blocks, "README has no Python API example"
    shutil.copytree(REPO / "sample_data", tmp_path / "sample_data",
                    ignore=shutil.ignore_patterns(".dataaudit"))  # fmt: skip
    for code in blocks:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=_subprocess_env(),
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "near_duplicate" in proc.stdout or "corrupt" in proc.stdout

"""Start the Streamlit review app on an index: find the app's files, pick a port, exec Streamlit.

The pages live in the top-level ``app/`` folder of a checkout; a wheel ships the same folder
as ``dataaudit/_app`` (hatch ``force-include``), so both layouts are looked up at run time.
The app reads the index only (decisions go to their own file), so it can run beside a scan.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import dataaudit
from dataaudit.errors import DataAuditError

ENV_PATH = "DATAAUDIT_APP_PATH"  # read by app/widgets.py
ENV_DB = "DATAAUDIT_APP_DB"


def app_script() -> Path:
    """``streamlit_app.py`` inside an installed wheel, else in the checkout's ``app/``."""
    pkg = Path(dataaudit.__file__).resolve().parent
    for candidate in (pkg / "_app" / "streamlit_app.py", pkg.parent / "app" / "streamlit_app.py"):
        if candidate.is_file():
            return candidate
    raise DataAuditError(
        "the app's files are missing from this installation",
        "reinstall dataaudit (pip install dataaudit) or run from a checkout",
    )


def free_port(host: str, start: int = 8501, tries: int = 50) -> int:
    """The first port from ``start`` that nothing listens on."""
    for port in range(start, start + tries):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host if host not in ("localhost", "") else "127.0.0.1", port))
            except OSError:
                continue
            return port
    raise DataAuditError(f"no free port in {start}..{start + tries - 1}", "pass --port")


def streamlit_argv(script: Path, host: str, port: int) -> list[str]:
    """The Streamlit command line: headless (we print the URL), no telemetry, no file watcher."""
    return [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
    ]  # fmt: skip


def launch(path: Path, db: Path | None, host: str, port: int | None) -> None:
    """Check the index exists, print the URL, and replace this process with Streamlit."""
    from dataaudit.store.db import find_index

    index_file = Path(db) if db else find_index(path)
    if not index_file.is_file():
        raise DataAuditError(f"no index at {index_file}", f"run `dataaudit scan {path}` first")
    script = app_script()
    port = port or free_port(host)
    env = dict(os.environ)
    env[ENV_PATH] = str(Path(path).resolve())
    env[ENV_DB] = str(index_file.resolve())
    print(
        f"dataaudit app on {index_file}\n  URL: http://{host}:{port}  (Ctrl-C to stop)", flush=True
    )
    os.execve(sys.executable, streamlit_argv(script, host, port), env)

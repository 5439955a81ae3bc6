"""End to end: `dataaudit app` on an index of sample_data as a real server, every page opened
in headless Chromium (Debian's ``chromium`` driven by Playwright's Python client).

Needs ``apt-get install chromium chromium-driver`` and ``pip install playwright`` (the dev
extra); ``.ci/run`` installs both. Screenshots of every page go to ``tests/artifacts/``
(git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "screens"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
# url path -> text that must be on the page
PAGES = {
    "": "Split × label",
    "browse": "images match",
    "issues": "flagged",
    "duplicates": "Duplicate groups",
    "map": "Outliers",
    "labels": "labelled",
    "human": "without their labels",
    "per_class": "One image at several sizes",
    "review": "images match",
    "sql": "Schema",
}
GRID_PAGES = {"browse", "issues", "duplicates", "map", "labels", "per_class"}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(page, text: str = "", timeout_ms: int = 120_000) -> None:  # noqa: ANN001
    """Until ``text`` shows, Streamlit has finished running the script and images loaded."""
    page.wait_for_selector("h1", timeout=timeout_ms)
    if text:
        page.wait_for_function(
            "t => (document.querySelector('[data-testid=stMain]') || {}).innerText?.includes(t)",
            arg=text,
            timeout=timeout_ms,
        )
    time.sleep(0.5)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=stApp]')"
        "?.getAttribute('data-test-script-state') === 'notRunning'"
        " && !document.querySelector('[data-testid=stSkeleton]')"
        " && Array.from(document.images).every(i => i.complete)",
        timeout=timeout_ms,
    )
    time.sleep(0.3)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    chromium = shutil.which("chromium")
    assert chromium, "needs Debian's chromium: apt-get install -y chromium chromium-driver"
    root = tmp_path_factory.mktemp("e2e") / "sample_data"
    shutil.copytree(REPO / "sample_data", root, ignore=shutil.ignore_patterns(".dataaudit"))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    scan = subprocess.run(
        [sys.executable, "-m", "dataaudit", "scan", str(root), "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert scan.returncode == 0, scan.stderr
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataaudit", "app", str(root), "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    try:
        assert f"URL: {url}" in proc.stdout.readline() + proc.stdout.readline()
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "app did not start"
                time.sleep(0.3)
        yield url, root, chromium
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=server[2], args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_every_page_in_a_real_browser(server, browser):
    url, _, _ = server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    for path, text in PAGES.items():
        page.goto(f"{url}/{path}")
        _wait_ready(page, text)
        page.screenshot(path=str(ARTIFACTS / f"{path or 'overview'}.png"))
        assert page.locator("[data-testid=stException]").count() == 0, path
        assert text in page.inner_text("[data-testid=stMain]"), path
        if path in GRID_PAGES:
            assert page.locator("[data-testid=stMain] img").count() > 0, path
    page.close()


def test_open_an_image_and_its_neighbours(server, browser):
    url, _, _ = server
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(f"{url}/browse")
    _wait_ready(page, "images match")
    page.locator("[data-testid=stButton] button").filter(has_text="open").first.click()
    dialog = page.locator("[role=dialog]")
    dialog.wait_for(timeout=120_000)
    _wait_ready(page)
    dialog.get_by_text("Nearest neighbours").wait_for(timeout=60_000)
    body = dialog.inner_text()
    assert "Nearest neighbours" in body and "full size" in body
    assert dialog.locator("img").count() >= 5  # the image and its neighbours
    page.screenshot(path=str(ARTIFACTS / "browse_open_image.png"))
    assert page.locator("[data-testid=stException]").count() == 0
    page.close()

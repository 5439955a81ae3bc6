"""Issue 8, items 9-15 and 17: each fault forced through the real CLI, each refused cleanly.

A CI gate that cannot pass by accident (9-13), untrusted bytes and names (14, 15) and a
labels file that matches nothing (17). Datasets are a few 32x32 images; most tests call the
CLI in-process (``cli``); those about signals, limits and the entry point use ``run_cli``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from PIL import Image

from dataaudit.detectors.config import RANGES, DetectConfig, load_config
from dataaudit.errors import DataAuditError, DataAuditWarning
from dataaudit.scan.decode import decode
from dataaudit.store.db import fallback_index_dir

FAST = ("--no-detect", "--no-embed", "--workers", "0", "-q")
SCAN = ("--no-embed", "--workers", "0", "-q")  # with the detectors


def one_error_line(rc: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("dataaudit: error: ")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], err
    return errors[0]


@pytest.fixture
def data(tmp_path, make_image) -> Path:
    """Four bright images in two splits, and one empty (corrupt) file."""
    root = tmp_path / "data"
    for i in range(2):
        make_image(root / "train" / "cat" / f"{i}.png", color=(200, 180 + i * 20, 170))
        make_image(root / "test" / "dog" / f"{i}.png", color=(180 + i * 20, 200, 190))
    (root / "train" / "cat" / "broken.png").write_bytes(b"")
    return root


# ------------------------------------------------------------ 9: a gate that never ran


def test_fail_on_refuses_when_the_detectors_never_ran(data, cli):
    assert cli("scan", data, *FAST)[0] == 0
    rc, out, err = cli("report", data, "--fail-on", "corrupt")
    one_error_line(rc, err, "--fail-on needs detector results", "never ran", "dataaudit detect")
    assert out == ""
    rc, out, _ = cli("report", data, "--format", "json")  # without a gate: shown, marked stale
    assert rc == 0 and json.loads(out)["detect_current"] is False


def test_fail_on_refuses_results_older_than_the_last_scan(data, cli, make_image):
    assert cli("scan", data, *SCAN)[0] == 0
    assert cli("report", data, "--fail-on", "corrupt")[0] == 1  # current results: the gate works
    (data / "train" / "cat" / "broken.png").unlink()
    assert cli("scan", data, *FAST)[0] == 0  # the corrupt file is gone, results are stale
    rc, _, err = cli("report", data, "--fail-on", "corrupt")
    one_error_line(rc, err, "older than the last scan")
    rc, out, _ = cli("report", data)
    assert rc == 0 and "Stale results" in out
    assert cli("detect", data)[0] == 0
    rc, _, err = cli("report", data, "--fail-on", "corrupt")
    assert rc == 0, err


def test_fail_on_refuses_after_a_failed_detect_run(data, cli, query):
    assert cli("scan", data, *SCAN)[0] == 0
    db = data / ".dataaudit" / "index.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "INSERT INTO runs (run_id, kind, status, started_at) "
        "SELECT max(run_id) + 1, 'detect', 'failed', now() FROM runs"
    )
    con.close()
    rc, _, err = cli("report", data, "--fail-on", "corrupt")
    one_error_line(rc, err, "is failed")


# ---------------------------------------- 10: two indexes (the folder became read-only)


def test_readers_take_the_newest_of_two_indexes_and_say_so(data, cli, make_image):
    local = data / ".dataaudit" / "index.duckdb"
    cache = fallback_index_dir(data) / "index.duckdb"
    assert cli("scan", data, *SCAN)[0] == 0  # the folder was writable: 5 files
    make_image(data / "train" / "cat" / "new.png", color=(10, 10, 10))
    # As a scan of the now read-only folder does (root ignores chmod, so name the cache).
    assert cli("scan", data, "--db", cache, *SCAN)[0] == 0
    os.utime(local, ns=(1, 1))  # the old index, whatever the clock resolution
    rc, out, err = cli("report", data, "--format", "json")
    assert rc == 0, err
    assert json.loads(out)["totals"]["images"] == 6  # the cache copy, with new.png
    assert f"using the newer {cache}" in err and str(local) in err
    rc, out, _ = cli("issues", data, "--format", "csv")
    assert "train/cat/broken.png" in out
    rc, out, err = cli("detect", data)
    assert rc == 0 and str(cache) in err
    import dataaudit as da

    with pytest.warns(DataAuditWarning, match="two indexes exist"):
        assert da.open_index(data).db_path == cache.resolve()
    os.utime(cache, ns=(1, 1))
    for suffix in (".wal",):
        Path(f"{cache}{suffix}").unlink(missing_ok=True)
    rc, out, _ = cli("report", data, "--format", "json")
    assert json.loads(out)["totals"]["images"] == 5  # now the folder's copy is the newer


# ------------------------------------------------ 11: commands that read never create


@pytest.mark.parametrize("command", ["detect", "report", "issues"])
def test_a_mistyped_db_is_an_error_and_nothing_is_created(data, cli, command):
    assert cli("scan", data, *FAST)[0] == 0
    typo = data.parent / "idnex.duckdb"
    rc, out, err = cli(command, data, "--db", typo)
    one_error_line(rc, err, "no index at", str(typo))
    assert not typo.exists() and out == ""


def test_an_empty_or_never_scanned_index_is_refused(data, cli, tmp_path):
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()  # a valid DuckDB file with no table
    one_error_line(*cli("detect", data, "--db", empty)[::2], "empty database")
    unfilled = tmp_path / "unfilled.duckdb"
    from dataaudit.store import db

    db.open_index(unfilled).close()  # what `detect --db TYPO` used to leave behind
    one_error_line(*cli("report", data, "--db", unfilled)[::2], "holds no scan yet")


# ------------------------------------------------------- 12: config inside the data


def test_config_inside_the_data_is_opt_in_and_announced(data, cli, tmp_path):
    (data / "dataaudit.toml").write_text(
        "[quality]\ndark_max_mean = 250.0\ndark_always_mean = 250.0\n"
    )
    rc, out, err = cli("scan", data, *SCAN)
    assert rc == 0, err
    assert "not applying config file(s) inside the audited data" in err
    assert str(data / "dataaudit.toml") in err and "--config-from-data" in err
    assert "settings: built-in defaults" in out and " dark " not in out
    rc, out, err = cli("detect", data, "--config-from-data")
    assert rc == 0, err
    assert "applying detector settings from inside the audited data" in err
    assert "(inside the audited data)" in out
    rc, out, _ = cli("issues", data, "--type", "dark", "--format", "paths")
    assert len(out.split()) == 4  # the file's threshold made every image "dark"
    rc, out, _ = cli("report", data, "--format", "json")
    cfg = json.loads(out)["config"]
    assert cfg["from_data"] == [f"{data / 'dataaudit.toml'} (inside the audited data)"]
    rc, out, _ = cli("report", data)
    assert "WARNING: detector settings came from inside the audited data" in out
    rc, out, _ = cli("report", data, "--format", "markdown")
    assert "came from inside the audited data" in out


def test_pyproject_inside_the_data_is_opt_in(data, cli):
    (data / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.dataaudit.duplicates]\nmin_correlation = 0.1\n'
    )
    assert cli("scan", data, *FAST)[0] == 0
    rc, out, err = cli("detect", data)
    assert rc == 0 and "not applying" in err and "pyproject.toml" in err
    with pytest.warns(DataAuditWarning, match="applying detector settings from inside"):
        cfg, sources = load_config(data, from_data=True)
    assert cfg.duplicates.min_correlation == 0.1 and "pyproject.toml" in sources[0]
    with pytest.warns(DataAuditWarning, match="not applying .*pyproject.toml"):
        cfg, sources = load_config(data)
    assert cfg.duplicates.min_correlation == DetectConfig().duplicates.min_correlation
    assert sources == []


@pytest.mark.parametrize(
    ("override", "needle"),
    [("quality.z=nan", "finite"), ("quality.z=inf", "finite"), ("quality.z=-1", "out of range"),
     ("duplicates.min_correlation=2.0", "out of range"), ("duplicates.phash_radius=2.5", "int"),
     ("duplicates.phash_radius=65", "out of range"), ("duplicates.use_pixel_hash=maybe", "bool"),
     ("quality.dark_always_mean=100", "must not exceed"), ("spurious.min_auc=0.2", "out of range"),
     ("update.x=1", "unknown config section [update]"), ("to_dict.x=1", "unknown config section")],
)  # fmt: skip
def test_every_value_is_checked(override, needle):
    with pytest.raises(DataAuditError, match=None) as info:
        load_config(overrides=[override])
    assert needle in str(info.value)


def test_toml_values_are_checked_too(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("[quality]\nz = nan\n")  # TOML has a nan literal
    with pytest.raises(DataAuditError, match="finite"):
        load_config(config_file=cfg_file)
    cfg_file.write_text("[balance]\nmin_class_count = true\n")
    with pytest.raises(DataAuditError, match="must be int"):
        load_config(config_file=cfg_file)


def test_every_setting_has_a_range_holding_its_default():
    """Range-check every value: a new threshold must come with its allowed range."""
    for section, values in DetectConfig().to_dict().items():
        for key, default in values.items():
            if isinstance(default, bool):
                continue
            name = f"{section}.{key}"
            assert name in RANGES, f"{name} has no range in detectors/config.py RANGES"
            low, high = RANGES[name]
            assert low <= default <= high, f"the default of {name} is out of its range"
    names = {f"{s}.{k}" for s, values in DetectConfig().to_dict().items() for k in values}
    assert not set(RANGES) - names, "RANGES names settings that no longer exist"


# ------------------------------------------------------ 13: names with line breaks


def test_paths_format_never_splits_a_name(tmp_path, make_image, cli):
    root = tmp_path / "data"
    make_image(root / "keep_me.png")
    make_image(root / "also_fine.png", color=(30, 200, 30))
    (root / "evil.jpg\nkeep_me.png").write_bytes(b"<html>not an image</html>")
    assert cli("scan", root, *SCAN)[0] == 0
    rc, out, err = cli("issues", root, "--type", "corrupt", "--format", "paths")
    one_error_line(rc, err, "line break", "paths0")
    assert out == ""  # nothing a `| xargs rm` could act on
    rc, out, err = cli("issues", root, "--type", "corrupt", "--format", "csv")
    assert [r["path"] for r in csv.DictReader(io.StringIO(out))] == ["evil.jpg\nkeep_me.png"]


def test_paths0_is_nul_separated(tmp_path, make_image, run_cli):
    root = tmp_path / "data"
    make_image(root / "keep_me.png")
    (root / "evil.jpg\nkeep_me.png").write_bytes(b"<html>not an image</html>")
    (root / "plain.jpg").write_bytes(b"")
    assert run_cli("scan", root, *SCAN)[0] == 0
    proc = subprocess.run(
        [sys.executable, "-m", "dataaudit", "issues", str(root), "-t", "corrupt", "-f", "paths0"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith(b"\0")
    assert sorted(proc.stdout.split(b"\0")[:-1]) == [b"evil.jpg\nkeep_me.png", b"plain.jpg"]


# ------------------------------------------------- 14: an explicit list of formats


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (16, 16), (90, 30, 60)).save(buf, fmt)
    return buf.getvalue()


def test_eps_never_reaches_its_plugin(monkeypatch):
    """An EPS file named .jpg must not be opened by the EPS plugin (which runs Ghostscript)."""
    opened = []
    factory, accept = Image.OPEN["EPS"]
    monkeypatch.setitem(
        Image.OPEN, "EPS", (lambda *a, **k: opened.append(1) or factory(*a, **k), accept)
    )
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    for data in (eps, _encoded("EPS")):
        d = decode(data)
        assert (d.status, d.format, d.error_class) == ("unsupported", "EPS", "DisallowedFormat")
    assert opened == []


@pytest.mark.parametrize("fmt", ["PCX", "SGI", "EPS"])
def test_unlisted_formats_named_jpg_are_flagged(tmp_path, make_image, cli, fmt):
    root = tmp_path / "data"
    make_image(root / "ok.jpg")
    (root / "sneaky.jpg").write_bytes(_encoded(fmt))
    assert cli("scan", root, *SCAN)[0] == 0
    rc, out, _ = cli("issues", root)
    found = {(r["path"], r["issue"]) for r in csv.DictReader(io.StringIO(out))}
    assert ("sneaky.jpg", "wrong_extension") in found
    assert ("sneaky.jpg", "unsupported_format") in found
    integrity = {"corrupt", "wrong_extension", "unsupported_format"}
    assert not any(p == "ok.jpg" and issue in integrity for p, issue in found)


# ------------------------------------------- 15: one line and exit 2, never a traceback


def test_non_utf8_config_is_one_line(data, cli, tmp_path):
    (data / "dataaudit.toml").write_bytes(b'[quality]\nz = "\xff\xfe"\n')
    assert cli("scan", data, *FAST)[0] == 0
    one_error_line(*cli("detect", data, "--config-from-data")[::2], "not UTF-8")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("[quality]\n# r\xe9glages\nz = 3.0\n".encode("latin-1"))
    one_error_line(*cli("detect", data, "--config", bad)[::2], "not UTF-8", str(bad))
    one_error_line(*cli("detect", data, "--set", "update.x=1")[::2], "[update]")


@pytest.mark.parametrize("split", ["[/]", "label", "holdout"])
def test_labels_file_with_a_bad_split_is_one_line(tmp_path, make_image, cli, split):
    root = tmp_path / "flat"
    make_image(root / "a.png")
    make_image(root / "b.png")
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label,split\na.png,cat,train\nb.png,dog,{split}\n")
    rc, _, err = cli("scan", root, "--labels", labels, *SCAN)
    one_error_line(rc, err, f"split value {split!r} (line 3) is not a split name")
    assert not (root / ".dataaudit").exists()


def test_markup_in_labels_and_roots_is_shown_verbatim(tmp_path, make_image, cli):
    root = tmp_path / "a[" / "b]" / "photos[red]"  # the root path reads a[/b]/photos[red]
    make_image(root / "a.png")
    make_image(root / "b.png", color=(10, 200, 10))
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,[/]\nb.png,[bold]x\n")
    rc, out, err = cli("scan", root, "--labels", labels, *SCAN)
    assert rc == 0, err
    flat = out.replace("\n", "")
    assert f"Indexed {root}" in flat and f"dataaudit report {root}" in flat
    assert "[/]" in out and "[bold]x" in out
    rc, out, err = cli("report", root)
    assert rc == 0, err
    assert str(root) in out.replace("\n", "") and "[bold]x" in out


def test_escape_codes_in_names_never_reach_the_terminal(tmp_path, make_image, cli, monkeypatch):
    root = tmp_path / "data"
    make_image(root / "fine.png")
    evil = "\x1b]0;pwned\x07\x1b[2J\u202eevil.png"
    (root / evil).write_bytes(b"")
    assert cli("scan", root, *SCAN)[0] == 0
    for fmt in ("rich", "markdown"):
        rc, out, _ = cli("report", root, "--format", fmt)
        assert rc == 0
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202eevil.png" in out.replace("\n", "")
    rc, out, _ = cli("report", root, "--format", "json")
    assert evil in [e["path"] for s in json.loads(out)["issues"] for e in s["examples"]]
    rc, out, _ = cli("issues", root, "--format", "csv")  # piped: the data, verbatim
    assert evil in out
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # on a terminal: escaped
    rc, out, _ = cli("issues", root, "--format", "csv")
    assert "\x1b" not in out and "\\x1b]0;pwned" in out
    rc, _, err = cli("scan", root / evil, *FAST)  # an error message that quotes the name
    assert "\x1b" not in err and "\\x1b" in err


def test_another_programs_duckdb_is_refused_untouched(data, cli, tmp_path):
    other = tmp_path / "sales.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE orders (id INTEGER, total DOUBLE)")
    con.execute("INSERT INTO orders VALUES (1, 9.5)")
    con.close()
    for args in (("scan", data, "--db", other, *FAST), ("detect", data, "--db", other),
                 ("report", data, "--db", other), ("issues", data, "--db", other)):  # fmt: skip
        one_error_line(*cli(*args)[::2], "another program", "tables: orders")
    con = duckdb.connect(str(other), read_only=True)
    assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [
        ("orders",)
    ]
    con.close()


def test_a_full_disk_is_one_line_and_loses_nothing_committed(tmp_path, make_image, query):
    """RLIMIT_FSIZE makes every write past 24 KB fail (EFBIG) as a full disk would."""
    root = tmp_path / "data"
    for i in range(40):
        make_image(root / f"{i}.png", size=(48, 48), color=(i * 6, 255 - i * 6, 99))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, 24_000))

    proc = subprocess.run(
        [sys.executable, "-m", "dataaudit", "scan", str(root), *SCAN],
        capture_output=True, text=True, env=env, preexec_fn=limited, timeout=120,
    )  # fmt: skip
    one_error_line(proc.returncode, proc.stderr, "cannot write", "File too large")
    proc = subprocess.run(
        [sys.executable, "-m", "dataaudit", "scan", str(root), *SCAN],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert query(root / ".dataaudit" / "index.duckdb", "SELECT count(*) FROM images") == [(40,)]


def test_an_unexpected_error_is_one_line_with_a_log(data, cli, monkeypatch, tmp_path):
    assert cli("scan", data, *SCAN)[0] == 0
    import dataaudit.report

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in the report")

    monkeypatch.setattr(dataaudit.report, "build_report", broken)
    rc, out, err = cli("report", data)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and out == "", err
    assert lines[0].startswith("dataaudit: internal error: ZeroDivisionError: a bug in the report")
    log = Path(lines[0].split("(traceback in ")[1].split(";")[0])
    assert log.is_file() and log.is_relative_to(Path(os.environ["XDG_CACHE_HOME"]))
    text = log.read_text()
    assert "Traceback" in text and "a bug in the report" in text and "'report'" in text


def test_ctrl_c_outside_the_scan_is_one_line(data, cli, monkeypatch):
    assert cli("scan", data, *FAST)[0] == 0
    import dataaudit.detectors.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataaudit.detectors.runner, "run_detectors", interrupted)
    rc, _, err = cli("detect", data)
    assert rc == 130 and "Traceback" not in err


# ------------------------------------------------ 17: a labels file that matches nothing


def test_labels_that_match_no_file_are_warned(tmp_path, make_image, cli, index_rows):
    root = tmp_path / "flat"
    make_image(root / "a.png")
    make_image(root / "b.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nimages/a.png,cat\nimages/b.png,dog\nb.png,dog\n")
    rc, _, err = cli("scan", root, "--labels", labels, *FAST)
    assert rc == 0, err
    assert "warning: 2 of 3 row(s) of the labels file match no file" in err
    assert "'images/a.png'" in err
    labels.write_text("path,label\na.png,cat\nb.png,dog\n")
    rc, _, err = cli("scan", root, "--labels", labels, *FAST)
    assert rc == 0 and "warning" not in err
    assert {p: r["label"] for p, r in index_rows(root / ".dataaudit" / "index.duckdb").items()} == {
        "a.png": "cat", "b.png": "dog"}  # fmt: skip


def test_the_cli_imports_no_private_module():
    """Issue 7: ``cli.py`` used ``typer._click``; usage errors are now matched by interface."""
    import ast

    import dataaudit.cli

    tree = ast.parse(Path(dataaudit.cli.__file__).read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    private = [
        m for m in names if m != "__future__" and any(p.startswith("_") for p in m.split("."))
    ]
    assert not private


def test_bad_settings_fail_before_the_scan_starts(data, cli):
    """A scan of a million files must not end in a config error: settings are checked first."""
    rc, out, err = cli("scan", data, *SCAN, "--set", "quality.z=nan")
    one_error_line(rc, err, "quality.z must be a finite number")
    assert out == "" and not (data / ".dataaudit").exists()

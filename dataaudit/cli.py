"""The ``dataaudit`` command: thin wrappers that parse options, call the library, show results.

Run ``dataaudit --help``. Misuse prints one line saying what to do and exits with 2.
"""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
import warnings
from datetime import datetime
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from dataaudit.display import safe_text
from dataaudit.errors import DataAuditError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Index an image dataset, find what is wrong with it, and fix it before training.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """Index an image dataset, find what is wrong with it, and fix it before training."""


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML file with detector thresholds.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one threshold: section.key=value (repeatable)."),
]
DbOpt = Annotated[Path | None, typer.Option(help="Index file (default: found from PATH).")]
FromDataOpt = Annotated[
    bool,
    typer.Option(
        "--config-from-data",
        help="Also apply dataaudit.toml / [tool.dataaudit] in pyproject.toml found inside "
        "PATH. Off by default: whoever ships a dataset should not set its audit thresholds.",
    ),
]
PathArg = Annotated[
    Path, typer.Argument(help="Dataset folder (or its index file).", show_default=False)
]


@app.command()
def scan(
    path: Annotated[
        str,
        typer.Argument(
            help="Dataset folder (or s3://, gs:// URL with --engine ray).", show_default=False
        ),
    ],
    db: Annotated[
        Path | None,
        typer.Option(
            help="Index file. Default: PATH/.dataaudit/index.duckdb (cache if read-only)."
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Worker processes (default: one per core; 0: none).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="CSV or Parquet with path,label[,split] (flat layouts).")
    ] = None,
    thumb_size: Annotated[int, typer.Option(min=0, help="Thumbnail box in px; 0: none.")] = 128,
    detect: Annotated[
        bool, typer.Option("--detect/--no-detect", help="Run the detectors after the scan.")
    ] = True,
    embed: Annotated[
        bool, typer.Option("--embed/--no-embed", help="Compute embeddings (needs torch).")
    ] = True,
    embed_model: Annotated[
        str, typer.Option(help="Backbone: a timm or torchvision model name.")
    ] = "efficientnet_lite0",
    embed_weights: Annotated[
        str | None,
        typer.Option(
            help="'pretrained' (library cache), 'package' (offline EfficientNet-Lite0) or a "
            "local weights file. Default: package for efficientnet_lite0, else pretrained."
        ),
    ] = None,
    embed_size: Annotated[
        int | None, typer.Option(min=16, max=1024, help="Embedder input size in px.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cuda, cuda:N, mps or cpu (default: best available).")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    config_from_data: FromDataOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="local (process pool) or ray (Ray Data: a cluster, or a local Ray for the run)."
        ),
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (--engine ray; default: local Ray).")
    ] = None,
    work_dir: Annotated[
        str | None,
        typer.Option(
            help="Run folders of --engine ray (default: beside the index; on many "
            "machines: storage all nodes read, e.g. s3://bucket/prefix)."
        ),
    ] = None,
) -> None:
    """Index PATH into a DuckDB file: one row per image with flags, statistics and hashes.

    Re-running is incremental: only new and changed files are read. PATH may be an object
    store URL (s3://, gs://) with --engine ray.
    """
    from dataaudit import api

    root = None if "://" in path else Path(path)
    settings = _settings(root if root and root.is_dir() else None, config, set_, config_from_data)
    show = not quiet and sys.stderr.isatty()
    with _progress(show) as bar:
        task = bar.add_task("measuring", total=None)

        def on_start(layout: str, todo: int) -> None:
            err_console.print(f"layout: {_safe_markup(layout)}; {todo:,} file(s) to read")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            idx = api.scan(
                path, db, workers=workers, labels=labels, thumb_size=thumb_size, embed=embed,
                embed_model=embed_model, embed_weights=embed_weights, embed_size=embed_size,
                device=device, detect=False, progress=progress, on_start=on_start,
                engine=engine, address=address, work_dir=work_dir,
            )  # fmt: skip
        except KeyboardInterrupt:
            bar.stop()
            _error_line(
                "dataaudit: scan interrupted; everything measured so far is saved. "
                "Run the same command again to finish."
            )
            raise typer.Exit(130) from None
    print_scan_summary(idx.last_scan)
    for warning in idx.last_scan.warnings:
        _warn(warning)
    if detect:
        _detect_and_summarise(idx, settings, path)
    summary = idx.last_scan
    if summary.unreadable:
        # Not a clean scan: what those folders hold now is unknown (rows kept from before).
        shown = ", ".join(f"{p} ({why})" for p, why in summary.unreadable[:3])
        more = len(summary.unreadable) - 3
        _error_line(
            f"dataaudit: {len(summary.unreadable):,} folder(s) or file(s) could not be listed: "
            f"{shown}{f' and {more:,} more' if more > 0 else ''}. Their earlier rows are kept; "
            "fix the access and scan again."
        )
        raise typer.Exit(3)


@app.command("detect")
def detect_cmd(
    path: PathArg,
    db: DbOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    config_from_data: FromDataOpt = False,
) -> None:
    """Re-run the detectors on an existing index (fast: no image is reopened)."""
    root = Path(path) if Path(path).is_dir() else None
    settings = _settings(root, config, set_, config_from_data)
    _detect_and_summarise(_open(path, db), settings, str(path))


def _settings(root: Path | None, config: Path | None, overrides: list[str] | None, from_data: bool):  # noqa: ANN202 - (DetectConfig, sources), imported lazily
    """Detector settings and the list of their sources, checked before any work starts."""
    from dataaudit.detectors.config import load_config

    return load_config(root, config, overrides, from_data=from_data)


def _detect_and_summarise(idx, settings, shown_path: str) -> None:  # noqa: ANN001 - Index
    from dataaudit import api
    from dataaudit.detectors.registry import ISSUE_TYPES

    cfg, sources = settings
    result = api.detect(idx, cfg, sources=sources)
    counts = result.counts()
    console.print(f"[bold]Detectors[/bold] ran in {result.elapsed_s:.1f} s (run {result.run_id})")
    console.print(f"  settings: {_safe_markup('; '.join(sources) or 'built-in defaults')}")
    if not counts:
        console.print("  no issues found")
    for issue, n in counts.items():
        console.print(f"  {issue:<20} {n:>7,}   {ISSUE_TYPES[issue][1]}")
    if result.findings:
        warnings = [f for f in result.findings if f.severity != "info"]
        console.print(f"  dataset-level findings: {len(warnings)} warning(s)")
    console.print(  # a path is never wrapped: it stays one line to copy
        f"Run `dataaudit report {_safe_markup(shown_path)}` for details and examples.",
        soft_wrap=True,
    )


def _open(path: Path, db: Path | None):  # noqa: ANN202 - Index, imported lazily
    """The index of PATH (or ``--db``): never created, refused if not a dataaudit index."""
    from dataaudit import api

    if db is not None and not Path(db).is_file():
        raise DataAuditError(f"no index at {db}", "check --db, or run `dataaudit scan` first")
    return api.open_index(db or path)


@app.command()
def report(
    path: PathArg,
    db: DbOpt = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help="rich (terminal), json or markdown.")
    ] = "rich",
    examples: Annotated[int, typer.Option(min=0, help="Example files per issue type.")] = 3,
    fail_on: Annotated[
        str | None,
        typer.Option(help="Exit 1 if any of these issue types (comma-separated) is found."),
    ] = None,
) -> None:
    """Show what is wrong: issue counts with examples, duplicates, leakage, balance.

    With --fail-on, exit 1 if any of those issue types is flagged, and exit 2 if the
    detectors have not run since the last scan (a gate that never ran must not pass).
    """
    from dataaudit.report import build_report, render_json, render_markdown, render_rich

    if format not in ("rich", "json", "markdown"):
        raise DataAuditError(f"unknown format {format!r}", "use rich, json or markdown")
    gate = _issue_types(fail_on) if fail_on else []
    with _open(path, db).connect() as con:
        data = build_report(con, examples)
    if fail_on and not data["detect_current"]:
        raise DataAuditError(
            f"--fail-on needs detector results newer than the last scan: {data['detect_state']}",
            f"run `dataaudit detect {path}` first",
        )
    if format == "json":
        sys.stdout.write(render_json(data) + "\n")
    elif format == "markdown":
        sys.stdout.write(render_markdown(data))
    else:
        console.print(render_rich(data))
    found = [s["issue"] for s in data["issues"] if s["issue"] in gate]
    if found:
        err_console.print(f"dataaudit: failing because of: {', '.join(found)}")
        raise typer.Exit(1)


@app.command("issues")
def issues_cmd(
    path: PathArg,
    db: DbOpt = None,
    type_: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only these issue types (repeatable).")
    ] = None,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="csv, paths (one per line; refused if a name holds a line break) or paths0 "
            "(NUL-separated, for `xargs -0`).",
        ),
    ] = "csv",
) -> None:
    """Machine-readable findings: CSV with path,issue,group,score, or the flagged paths."""
    if format not in ("csv", "paths", "paths0"):
        raise DataAuditError(f"unknown format {format!r}", "use csv, paths or paths0")
    types = _issue_types(",".join(type_)) if type_ else None
    rows = _open(path, db).issues(types)
    if format in ("paths", "paths0"):
        _write_paths(rows["path"].unique(maintain_order=True).to_list(), nul=format == "paths0")
        return
    out = rows.select("path", "issue", pl.col("group").cast(pl.String).fill_null(""), "score")
    _write_stdout(out.write_csv())


def _write_paths(paths: list[str], nul: bool) -> None:
    """One path per line, or NUL-terminated; a line break inside a name is refused, since
    `xargs rm` would otherwise act on the pieces (a healthy file among them)."""
    if nul:
        sys.stdout.flush()
        sys.stdout.buffer.write(
            b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)
        )
        sys.stdout.buffer.flush()
        return
    broken = [p for p in paths if "\n" in p or "\r" in p]
    if broken:
        raise DataAuditError(
            f"{len(broken)} flagged path(s) contain a line break, e.g. {broken[0]!r}; "
            "one path per line cannot represent them",
            "use --format paths0 (with `xargs -0`) or --format csv",
        )
    _write_stdout("".join(p + "\n" for p in paths))


def _write_stdout(text: str) -> None:
    """Machine output goes out verbatim, except to a terminal, where control characters in
    file names (escape sequences) are shown escaped instead of being obeyed."""
    sys.stdout.write(safe_text(text, keep="\n") if sys.stdout.isatty() else text)


@app.command("export")
def export_cmd(
    path: PathArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to write (new or empty; see --force).")
    ],
    db: DbOpt = None,
    drop: Annotated[
        str, typer.Option(help="Also drop these issue types, e.g. dark,blurry,outlier.")
    ] = "",
    leakage: Annotated[
        str, typer.Option(help="drop-eval (keep the train copy), keep-eval, or ignore.")
    ] = "drop-eval",
    keep_duplicates: Annotated[
        bool, typer.Option("--keep-duplicates", help="Keep every copy, not one per group.")
    ] = False,
    keep_corrupt: Annotated[
        bool, typer.Option("--keep-corrupt", help="Keep corrupt files.")
    ] = False,
    ignore_decisions: Annotated[
        bool, typer.Option("--ignore-decisions", help="Ignore reviewer drops and relabels.")
    ] = False,
    relabel_above: Annotated[
        float | None, typer.Option(help="Apply suggested labels with label_error score >= this.")
    ] = None,
    resplit: Annotated[
        str | None, typer.Option(help="Re-split, grouped and stratified: train=0.8,val=0.1,...")
    ] = None,
    group_by: Annotated[
        str | None, typer.Option(help="Labels-file column kept on one side (patient, video).")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Labels file for --group-by (default: the scan's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the re-split.")] = 0,
    mode: Annotated[str, typer.Option(help="copy, hardlink or symlink.")] = "copy",
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty --out.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; write nothing.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write a cleaned copy: ImageFolder tree, manifest, changes.csv and summary.json.

    Drops corrupt files, all but one copy per duplicate group and the evaluation side of
    leaks (each overridable), applies reviewer decisions; the source is never modified.
    """
    import dataaudit as da
    from dataaudit.export import ExportRules, describe

    rules = ExportRules(
        drop_corrupt=not keep_corrupt,
        dedupe=not keep_duplicates,
        leakage=leakage,
        drop=tuple(_issue_types(drop)) if drop else (),
        use_decisions=not ignore_decisions,
        relabel_above=relabel_above,
    )
    index = _open(path, db)
    kwargs = dict(rules=rules, resplit=resplit, group_by=group_by, labels_file=labels,
                  seed=seed, mode=mode, force=force, dry_run=dry_run)  # fmt: skip
    with _progress(not quiet and not dry_run and sys.stderr.isatty()) as bar:
        task = bar.add_task("exporting", total=None)
        try:
            result = da.export(index, out, **kwargs,
                               progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
        except KeyboardInterrupt:
            bar.stop()
            _error_line(f"dataaudit: export interrupted; nothing was written to {out}")
            raise typer.Exit(130) from None
    for line in describe(result):
        console.print(safe_text(line, keep="\n"), markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        console.print(safe_text(f"dry run: nothing written (would write {out})"), markup=False)
    else:
        console.print(safe_text(f"wrote {result.out} in {result.seconds:.1f} s"), markup=False)


@app.command("train")
def train_cmd(
    path: PathArg,
    db: DbOpt = None,
    model: Annotated[
        str,
        typer.Option(
            help="Baselines, comma-separated: input_independent, linear, convnet, resnet18, or all."
        ),
    ] = "input_independent,linear,convnet",
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per pixel model.")] = 10,
    size: Annotated[int, typer.Option(min=8, help="Pixel models see SIZE x SIZE images.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    seed: Annotated[int, typer.Option(help="Seeds Python, NumPy and torch.")] = 0,
    exclude: Annotated[
        str | None,
        typer.Option(help="Leave out images flagged with these issue types (corrupt always)."),
    ] = None,
    sweep: Annotated[
        str | None,
        typer.Option(help="Resolution sweep sizes, e.g. 64,32,16 (capped at the data's)."),
    ] = None,
    second_labels: Annotated[
        Path | None, typer.Option(help="CSV path,label of a second annotation: human baseline.")
    ] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Early stopping after N epochs without a better loss.")
    ] = None,
    checks_only: Annotated[
        bool, typer.Option("--checks-only", help="Only the sanity checks, on the tiny ConvNet.")
    ] = False,
    sanity: Annotated[
        bool, typer.Option("--sanity/--no-sanity", help="Run the sanity checks too.")
    ] = True,
    check_steps: Annotated[
        int, typer.Option(min=10, help="Training steps of the input_independent check.")
    ] = 200,
) -> None:
    """Train dumb baselines, check the pipeline, store predictions and model label errors."""
    import dataaudit as da
    from dataaudit.store import db as store
    from dataaudit.train.config import MODELS, TrainConfig
    from dataaudit.train.run import train

    models = (
        MODELS
        if model.strip() == "all"
        else tuple(m.strip() for m in model.split(",") if m.strip())
    )
    sizes = tuple(int(s) for s in sweep.split(",") if s.strip()) if sweep else ()
    cfg = TrainConfig(
        models=models, epochs=epochs, size=size, device=device, seed=seed,
        exclude=tuple(_issue_types(exclude)) if exclude else (), sweep=sizes,
        second_labels=str(second_labels) if second_labels else None, patience=patience,
        sanity=sanity or checks_only, sanity_steps=check_steps,
    )  # fmt: skip
    idx = da.open_index(db or store.find_index(path))
    result = train(idx, cfg, say=lambda m: err_console.print(escape(m)), checks_only=checks_only)
    if result.table.height:
        from rich.table import Table

        table = Table(title=f"Baselines (run {result.run_id}), evaluated on {result.eval_split}")
        for col in (
            "model",
            "epoch",
            "train loss",
            result.eval_split + " loss",
            "accuracy",
            "note",
        ):
            table.add_column(col)
        for row in result.table.iter_rows(named=True):

            def num(v: float | None, fmt: str) -> str:
                return "" if v is None else format(v, fmt)

            table.add_row(
                row["model"], num(row["epoch"], "d"), num(row["train_loss"], ".4f"),
                num(row["loss"], ".4f"), num(row["accuracy"], ".1%"), escape(row["note"] or ""),
            )  # fmt: skip
        console.print(table)
    if result.sanity is not None:
        console.print("Sanity checks (tiny ConvNet baseline):")
        for r in result.sanity.results:
            console.print(
                f"  {r.verdict.upper():<7} {r.name:<19} {escape(r.measured)}"
                + (f"\n          expected: {escape(r.expected)}" if r.verdict != "pass" else "")
                + (f"\n          {escape(r.detail)}" if r.detail and r.verdict != "pass" else "")
            )
    if result.sweep:
        console.print(
            "Resolution sweep (accuracy): "
            + ", ".join(f"{s} px {a:.1%}" for s, a in sorted(result.sweep.items(), reverse=True))
        )
    if result.human:
        h = result.human
        console.print(
            f"Human baseline: {h['agreement']:.1%} agreement with the labels on {h['n']} images, "
            f"Cohen's kappa {h['kappa']:.3f}"
        )
    for note in result.notes:
        console.print(f"note: {escape(note)}")
    if result.label_issues is not None:
        console.print(
            f"{result.label_issues} model-based label issue(s) (confident learning); "
            "`dataaudit report` lists label errors from both votes."
        )
    console.print(
        f"Predictions stored in the index as run {result.run_id}; figures in {result.out_dir}"
    )


@app.command("app")
def app_cmd(
    path: PathArg,
    db: DbOpt = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: first free from 8501).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "localhost",
) -> None:
    """Open the review app on PATH's index: browse, sort, filter, look and record decisions."""
    from dataaudit.appserver import launch

    launch(path, db, host, port)


def _issue_types(spec: str) -> list[str]:
    from dataaudit.detectors.registry import ISSUE_TYPES

    types = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in types if t not in ISSUE_TYPES]
    if unknown:
        raise DataAuditError(
            f"unknown issue type(s): {', '.join(unknown)}", f"known: {', '.join(ISSUE_TYPES)}"
        )
    return types


class _RateColumn(ProgressColumn):
    """Files per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} files/s" if speed else "- files/s")


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=not show,
        transient=False,
    )


def print_scan_summary(summary) -> None:  # noqa: ANN001 - ScanSummary, imported lazily
    """The closing summary: what was seen, what changed, where the index is."""
    c = summary
    console.print(
        f"[bold]Indexed[/bold] {_safe_markup(c.root)}", soft_wrap=True
    )  # a path may hold [brackets]
    console.print(f"  layout          {c.layout}")
    console.print(f"  files seen      {c.files_seen:,}")
    console.print(f"  images indexed  {c.images:,}  ({_human_bytes(c.bytes)})")
    console.print(
        f"  this run        {c.new:,} new, {c.changed:,} changed, {c.unchanged:,} unchanged, "
        f"{c.deleted:,} removed"
        + (f", {c.vanished:,} vanished while scanning" if c.vanished else "")
    )
    for path, why in c.unreadable:
        console.print(f"  [red]not listed[/red]      {escape(path)}: {escape(why)} (rows kept)")
    console.print(f"  not images      {c.skipped_non_images:,} (counted, skipped)")
    console.print(f"  unreadable      {c.corrupt:,}")
    console.print(f"  flagged         {c.flagged:,} (unreadable, bombs, wrong extension, ...)")
    console.print(f"  elapsed         {c.elapsed_s:.1f} s")
    console.print(f"  index           {_safe_markup(c.index_path)}", soft_wrap=True)
    if c.split_label_counts:
        from dataaudit.report import split_label_table

        console.print(split_label_table(c.split_label_counts))


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every error into one line on stderr.

    Exit codes: 0 ok, 1 ``--fail-on`` matched, 2 an error (misuse, bad input, a full disk,
    or a bug, whose traceback goes to a log file), 130 interrupted.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        args = ["--help"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning
            # Without standalone mode, click *returns* the code of a typer.Exit (e.g. 130).
            rc = app(args=args, standalone_mode=False, prog_name="dataaudit")
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _error_line("dataaudit: interrupted")
        return 130
    except DataAuditError as exc:
        _error_line(f"dataaudit: error: {exc}")
        return 2
    except Exception as exc:
        if _is_click_error(exc):  # a usage error: bad option, missing argument, bad value
            ctx = getattr(exc, "ctx", None)
            see = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _error_line(f"dataaudit: error: {exc.format_message()}{see}")
            return 2
        # The last resort: one line, the traceback in a log file.
        cause = _disk_error(exc)
        if cause is not None:
            _error_line(
                f"dataaudit: error: cannot write: {cause} (free some disk space or pass "
                "--db on another disk; everything committed before is kept)"
            )
            return 2
        log = _crash_log(args)
        _error_line(
            f"dataaudit: internal error: {type(exc).__name__}: {_first_line(exc)} "
            f"(traceback in {log}; please report it)"
        )
        return 2
    return rc if isinstance(rc, int) else 0


def _is_click_error(exc: Exception) -> bool:
    """click's ClickException family, from whichever copy raised it: typer >= 0.26 vendors
    click as a private module, older typer uses the click package. Matching by interface
    keeps this file off private imports and working with both."""
    return callable(getattr(exc, "format_message", None)) and isinstance(
        getattr(exc, "exit_code", None), int
    )


_DISK_ERRNOS = frozenset({28, 27, 122})  # ENOSPC, EFBIG, EDQUOT
_DISK_WORDS = ("no space left", "file too large", "disk quota", "could not write", "write error")


def _disk_error(exc: BaseException) -> str | None:
    """The first out-of-space failure in an exception chain (a failed commit is often
    followed by a failed rollback: report the cause, not the aftermath)."""
    seen = set()
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in reversed(chain):  # the earliest first
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:
            return f"{e.strerror} ({e.filename or 'index'})"
        text = str(e).lower()
        if "duckdb" in type(e).__module__ and any(w in text for w in _DISK_WORDS):
            return _first_line(e)
    return None


def _crash_log(args: list[str]) -> Path:
    """Write the current traceback to a log file (atomically) and return its path."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    body = (
        f"dataaudit {datetime.now().isoformat()} pid {os.getpid()}\n"
        f"argv: {args!r}\npython: {sys.version}\n\n{traceback.format_exc()}"
    )
    name = f"crash-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    for folder in (cache / "dataaudit" / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.tmp"
            tmp.write_text(body, errors="backslashreplace")
            tmp.replace(folder / name)
            return folder / name
        except OSError:
            continue
    return Path("(no writable folder for the log)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe_markup(text: str) -> str:
    """A user string made safe to embed in rich markup and to show on a terminal."""
    return escape(safe_text(text))


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """A Python warning (ours or a library's) as one line, not a source excerpt."""
    _warn(str(message))


def _warn(text: str) -> None:
    _error_line(f"dataaudit: warning: {text}")


def _error_line(text: str) -> None:
    """One line on stderr whatever the terminal width; paths like ``[train]`` stay verbatim."""
    err_console.print(safe_text(text), soft_wrap=True, markup=False)


if __name__ == "__main__":
    sys.exit(main())

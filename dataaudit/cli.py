"""The ``dataaudit`` command: thin wrappers that parse options, call the library, show results.

Run ``dataaudit --help``. Misuse prints one line saying what to do and exits with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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
from rich.table import Table
from rich.text import Text

from dataaudit.errors import DataAuditError

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer with click installed
    from click import exceptions as click_exc

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


@app.command()
def scan(
    path: Annotated[Path, typer.Argument(help="Dataset folder.", show_default=False)],
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
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Index PATH into a DuckDB file: one row per image with flags, statistics and hashes.

    Re-running is incremental: only new and changed files are read.
    """
    from dataaudit.scan.measure import MeasureConfig
    from dataaudit.scan.pipeline import ScanOptions
    from dataaudit.scan.pipeline import scan as run_scan

    options = ScanOptions(
        workers=workers,
        labels_file=str(labels) if labels else None,
        measure=MeasureConfig(thumb_size=thumb_size),
    )
    show = not quiet and sys.stderr.isatty()
    with _progress(show) as bar:
        task = bar.add_task("measuring", total=None)

        def on_start(layout: str, todo: int) -> None:
            err_console.print(f"layout: {layout}; {todo:,} file(s) to read")

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            summary = run_scan(path, db, options, progress=progress, on_start=on_start)
        except KeyboardInterrupt:
            bar.stop()
            err_console.print(
                "dataaudit: scan interrupted; everything measured so far is saved. "
                "Run the same command again to finish."
            )
            raise typer.Exit(130) from None
    print_scan_summary(summary)


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
    console.print(f"[bold]Indexed[/bold] {c.root}")
    console.print(f"  layout          {c.layout}")
    console.print(f"  files seen      {c.files_seen:,}")
    console.print(f"  images indexed  {c.images:,}  ({_human_bytes(c.bytes)})")
    console.print(
        f"  this run        {c.new:,} new, {c.changed:,} changed, {c.unchanged:,} unchanged, "
        f"{c.deleted:,} removed"
    )
    console.print(f"  not images      {c.skipped_non_images:,} (counted, skipped)")
    console.print(f"  unreadable      {c.corrupt:,}")
    console.print(f"  flagged         {c.flagged:,} (unreadable, bombs, wrong extension, ...)")
    console.print(f"  elapsed         {c.elapsed_s:.1f} s")
    console.print(f"  index           {c.index_path}")
    if c.split_label_counts:
        console.print(split_label_table(c.split_label_counts))


def split_label_table(rows: list[tuple[str | None, str | None, int]]) -> Table:
    """A label x split table of image counts."""
    splits = sorted({s or "(none)" for s, _, _ in rows})
    labels = sorted({lab or "(none)" for _, lab, _ in rows})
    counts = {(s or "(none)", lab or "(none)"): n for s, lab, n in rows}
    table = Table(title="images per label and split", title_justify="left")
    table.add_column("label")
    for s in splits:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    shown = labels if len(labels) <= 50 else labels[:50]
    for lab in shown:
        per = [counts.get((s, lab), 0) for s in splits]
        table.add_row(lab, *[f"{n:,}" for n in per], f"{sum(per):,}")
    if len(labels) > len(shown):
        table.add_row(f"... {len(labels) - len(shown)} more labels", *[""] * (len(splits) + 1))
    totals = [sum(n for (s, _), n in counts.items() if s == sp) for sp in splits]
    table.add_row("[bold]total", *[f"{n:,}" for n in totals], f"{sum(totals):,}")
    return table


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every user error into one line and exit code 2."""
    try:
        app(args=argv, standalone_mode=False, prog_name="dataaudit")
    except click_exc.NoArgsIsHelpError as exc:
        console.print(exc.ctx.get_help() if exc.ctx else "see `dataaudit --help`")
        return 0
    except click_exc.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx else "dataaudit"
        err_console.print(f"dataaudit: error: {exc.format_message()} (see `{cmd} --help`)")
        return 2
    except typer.Abort:
        err_console.print("dataaudit: aborted")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except click_exc.ClickException as exc:
        err_console.print(f"dataaudit: error: {exc.format_message()}")
        return 2
    except DataAuditError as exc:
        err_console.print(f"dataaudit: error: {exc}", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The audit report: what is wrong with a dataset, built from the index, in three formats.

:func:`build_report` gathers everything into plain data (the JSON format is exactly that);
:func:`render_markdown` and :func:`render_rich` present it for pull requests and terminals.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb
import polars as pl
from rich.console import Group
from rich.table import Table
from rich.text import Text

from dataaudit.detectors.config import DATA_CONFIG_MARK
from dataaudit.detectors.registry import ISSUE_TYPES
from dataaudit.display import safe_text
from dataaudit.queries import index as q

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def build_report(con: duckdb.DuckDBPyConnection, examples: int = 3) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready data."""
    rows = q.issue_examples(con, examples)
    counts = dict(q.issue_counts(con).iter_rows())
    issue_sections = []
    for issue, (severity, description) in ISSUE_TYPES.items():
        n = counts.get(issue, 0)
        if n == 0:
            continue
        sample = rows.filter(pl.col("issue") == issue)
        issue_sections.append(
            {
                "issue": issue,
                "severity": severity,
                "description": description,
                "files": n,
                "examples": [
                    {"path": p, "reason": d}
                    for p, d in sample.select("path", "details").iter_rows()
                ],
            }
        )
    issue_sections.sort(key=lambda s: (SEVERITY_ORDER[s["severity"]], -s["files"]))
    scan = q.latest_run(con, "scan")
    detect = q.latest_run(con, "detect")
    current, state = detect_state(scan, detect)
    sources = (detect or {}).get("params", {}).get("sources", [])
    groups = q.group_totals(con)
    return {
        "root": q.meta(con, "root"),
        "totals": q.image_totals(con),
        "scanned_at": scan["ended_at"] if scan else None,
        "detected_at": detect["ended_at"] if detect else None,
        "detect_run_id": detect["run_id"] if detect else None,
        "detect_current": current,
        "detect_state": state,
        "config": {
            "sources": sources,
            "from_data": [x for x in sources if x.endswith(DATA_CONFIG_MARK)],
        },
        "issues": issue_sections,
        "duplicates": {
            "pairs_by_layer": q.duplicate_layers(con),
            "groups": groups[0],
            "files_in_groups": groups[1],
            "leakage_pairs_by_split_pair": q.leakage_by_split_pair(con),
        },
        "split_label_counts": [
            {"split": s, "label": lab, "images": n} for s, lab, n in q.split_label_counts(con)
        ],
        "findings": q.findings(con),
    }


def detect_state(scan: dict[str, Any] | None, detect: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether the stored issues describe the index as it is now, and why not.

    Current means: the latest detect run completed, and no scan (finished, interrupted or
    killed) started after it. Run ids grow, so they order runs without trusting clocks.
    """
    if detect is None:
        return False, "the detectors never ran on this index"
    if detect["status"] != "completed":
        return False, f"the last detect run ({detect['run_id']}) is {detect['status']}"
    if scan is not None and scan["run_id"] > detect["run_id"]:
        return False, (
            f"the last detect run ({detect['run_id']}, {detect['ended_at']}) is older than "
            f"the last scan ({scan['run_id']}, {scan['status']}, started {scan['started_at']})"
        )
    return True, f"detect run {detect['run_id']} is newer than the last scan"


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)


def render_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [
        f"# Data audit: `{report['root']}`",
        "",
        f"{t['images']:,} images, {t['corrupt']:,} unreadable. "
        f"Detectors run {report['detected_at'] or 'never'}.",
        "",
    ]
    if not report["detect_current"]:
        lines += [f"**Stale results:** {report['detect_state']}; run `dataaudit detect`.", ""]
    if report["config"]["from_data"]:
        names = ", ".join(f"`{_md(x)}`" for x in report["config"]["from_data"])
        lines += [f"**Warning: detector settings came from inside the audited data:** {names}.", ""]
    lines += ["## Issues", ""]
    if not report["issues"]:
        lines.append("No issues found.")
    else:
        lines += [
            "| issue | severity | files | what it means | example |",
            "|---|---|---:|---|---|",
        ]
        for s in report["issues"]:
            ex = s["examples"][0] if s["examples"] else {"path": "", "reason": ""}
            lines.append(
                f"| `{s['issue']}` | {s['severity']} | {s['files']:,} | {s['description']} | "
                f"`{_md(ex['path'])}`: {_md(ex['reason'])} |"
            )
    d = report["duplicates"]
    lines += ["", "## Duplicates and leakage", ""]
    layers = ", ".join(f"{k}: {v:,}" for k, v in d["pairs_by_layer"].items()) or "none"
    lines.append(
        f"Pairs by layer: {layers}. Groups: {d['groups']:,} ({d['files_in_groups']:,} files)."
    )
    leaks = ", ".join(f"{k}: {v:,}" for k, v in d["leakage_pairs_by_split_pair"].items()) or "none"
    lines.append(f"Cross-split pairs: {_md(leaks)}.")
    lines += ["", "## Classes per split", ""]
    lines += _markdown_balance(report["split_label_counts"])
    lines += ["", "## Dataset-level findings", ""]
    for f in sorted(report["findings"], key=lambda f: SEVERITY_ORDER.get(f["severity"], 3)):
        lines.append(f"- **{f['severity']}** `{f['finding']}`: {_md(f['message'])}")
    if not report["findings"]:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _markdown_balance(rows: list[dict[str, Any]]) -> list[str]:
    splits = sorted({r["split"] or "(none)" for r in rows})
    labels = sorted({r["label"] or "(none)" for r in rows})
    cell = {(r["split"] or "(none)", r["label"] or "(none)"): r["images"] for r in rows}
    out = ["| label | " + " | ".join(map(_md, splits)) + " |", "|---|" + "---:|" * len(splits)]
    for lab in labels[:100]:
        out.append(
            f"| {_md(lab)} | " + " | ".join(f"{cell.get((s, lab), 0):,}" for s in splits) + " |"
        )
    return out


def _md(text: str) -> str:
    """A user string (file name, label) inside a Markdown table cell, on one line."""
    return safe_text(str(text).replace("|", "\\|"))  # line breaks become escapes


def _plain(text: object) -> Text:
    """A user string for a rich table: never parsed as markup, never obeyed as escapes."""
    return Text(safe_text(str(text)))


def render_rich(report: dict[str, Any]) -> Group:
    """Terminal rendering: issue table with examples, duplicates, balance, findings."""
    t = report["totals"]
    parts: list[Any] = [
        Text.assemble(("Data audit ", "bold"), safe_text(report["root"])),
        Text(
            f"{t['images']:,} images, {t['corrupt']:,} unreadable; detectors run "
            f"{report['detected_at'] or 'never (run dataaudit detect)'}"
        ),  # fmt: skip
    ]
    if report["detected_at"] and not report["detect_current"]:
        parts.append(Text(f"Stale results: {report['detect_state']}; run dataaudit detect",
                          style="bold yellow"))  # fmt: skip
    if report["config"]["from_data"]:
        names = ", ".join(report["config"]["from_data"])
        parts.append(Text("WARNING: detector settings came from inside the audited data: "
                          + safe_text(names), style="bold red"))  # fmt: skip
    table = Table(title="issues", title_justify="left", show_lines=False)
    for col, justify in (("issue", "left"), ("severity", "left"), ("files", "right"),
                         ("examples (reason)", "left")):  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")
    style = {"error": "red", "warning": "yellow", "info": "cyan"}
    for s in report["issues"]:
        ex = Text("\n".join(safe_text(f"{e['path']}  ({e['reason']})") for e in s["examples"]))
        table.add_row(s["issue"], f"[{style[s['severity']]}]{s['severity']}", f"{s['files']:,}", ex)
    parts.append(table if report["issues"] else Text("No issues found."))
    d = report["duplicates"]
    dup = Table(title="duplicates and leakage", title_justify="left")
    dup.add_column("what")
    dup.add_column("count", justify="right")
    for layer, n in d["pairs_by_layer"].items():
        dup.add_row(f"pairs linked by {layer}", f"{n:,}")
    dup.add_row("duplicate groups", f"{d['groups']:,}")
    for pair, n in d["leakage_pairs_by_split_pair"].items():
        dup.add_row(Text(f"leaked pairs {safe_text(pair)}", style="red"), f"{n:,}")
    parts.append(dup)
    rows = [(r["split"], r["label"], r["images"]) for r in report["split_label_counts"]]
    if rows:
        parts.append(split_label_table(rows))
    fnd = Table(title="dataset-level findings", title_justify="left")
    fnd.add_column("severity")
    fnd.add_column("finding")
    fnd.add_column("message", overflow="fold")
    for f in sorted(report["findings"], key=lambda f: SEVERITY_ORDER.get(f["severity"], 3)):
        fnd.add_row(
            f"[{style.get(f['severity'], 'white')}]{f['severity']}",
            f["finding"],
            _plain(f["message"]),
        )
    parts.append(fnd)
    return Group(*parts)


def split_label_table(rows: list[tuple[str | None, str | None, int]]) -> Table:
    """A label x split table of image counts."""
    splits = sorted({s or "(none)" for s, _, _ in rows})
    labels = sorted({lab or "(none)" for _, lab, _ in rows})
    counts = {(s or "(none)", lab or "(none)"): n for s, lab, n in rows}
    table = Table(title="images per label and split", title_justify="left")
    table.add_column("label")
    for s in splits:
        table.add_column(_plain(s), justify="right")
    table.add_column("total", justify="right")
    shown = labels if len(labels) <= 50 else labels[:50]
    for lab in shown:
        per = [counts.get((s, lab), 0) for s in splits]
        table.add_row(_plain(lab), *[f"{n:,}" for n in per], f"{sum(per):,}")
    if len(labels) > len(shown):
        table.add_row(f"... {len(labels) - len(shown)} more labels", *[""] * (len(splits) + 1))
    totals = [sum(n for (s, _), n in counts.items() if s == sp) for sp in splits]
    table.add_row("[bold]total", *[f"{n:,}" for n in totals], f"{sum(totals):,}")
    return table

"""What every page shares on screen: the busy state, filters, the thumbnail grid, the detail view.

Reads live in ``data.py``. While a scan holds the index, ``stamp`` keeps the last key seen,
so cached results keep serving; uncached reads show "a scan is running" and the page
refreshes on its own when the scan is done.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import data as d
import polars as pl
import streamlit as st
from PIL import Image, ImageOps

from dataaudit.errors import DataAuditError, IndexBusyError

GRID_FIELDS = ["label", "split", "sharpness", "brightness_mean", "width", "height", "bytes"]
REFRESH_S = 3


def stamp() -> str:
    """The cache key: the index file and its last run (``Index.state``), computed once per
    script run. While a scan writes (or another program holds the file), keep the last key
    seen, so cached pages keep showing the last completed state, and say so."""
    token = st.session_state.get("_run_token")
    memo = st.session_state.get("_stamp_memo")
    if memo and token and memo[0] == token:
        return memo[1]
    idx = d.index()
    state = idx.state()
    previous = st.session_state.get("_stamp")
    held = state["last_run_id"] == 0 and previous and not previous.endswith("|0|None")
    if state["writing"] or held:
        st.session_state["_busy"] = (
            busy_text(state["progress"]) if state["writing"]
            else "Another program holds the index open."
        )  # fmt: skip
        key = previous or f"{idx.db_path}|0|None"
    else:
        st.session_state.pop("_busy", None)
        key = f"{idx.db_path}|{state['last_run_id']}|{state['last_run_status']}"
        st.session_state["_stamp"] = key
    st.session_state["_stamp_memo"] = (token, key)
    return key


def busy_text(progress: dict[str, Any]) -> str:
    done, total = progress.get("done"), progress.get("total")
    stage = progress.get("stage") or "scan"
    if isinstance(done, int) and isinstance(total, int) and total:
        return f"A {stage} is running: {done:,} of {total:,} files done."
    return f"A {stage} is running on this index."


def busy_banner() -> None:
    """Say so when a scan writes the index; what is shown is its last completed state."""
    msg = st.session_state.get("_busy")
    if msg:
        st.info(f"{msg} Showing the last completed state; this page refreshes when it is done.")
        _refresh_when_free()


@st.fragment(run_every=REFRESH_S)
def _refresh_when_free() -> None:
    """Every few seconds: once nothing writes and the index reads again, rerun the page."""
    idx = d.index()
    if idx.state()["writing"]:
        return
    try:
        idx.runs()
    except IndexBusyError:
        return
    st.session_state.pop("_busy", None)
    st.rerun()


@contextmanager
def page_guard():
    """Run a page body: a running scan or a user error becomes a message, never a traceback."""
    try:
        yield
    except IndexBusyError as exc:
        st.session_state["_busy"] = busy_text(exc.progress)
        st.info(f"{exc.message}. This page refreshes on its own when it has finished.")
        _refresh_when_free()
    except DataAuditError as exc:
        st.error(str(exc))


# ----------------------------------------------------------------------------- widgets


def keep_state(*keys: str) -> None:
    """Keep widget values across pages (Streamlit drops a widget's state when it is not drawn)."""
    for k in keys:
        if k in st.session_state:
            st.session_state[k] = st.session_state[k]


def filters_ui(prefix: str, key: str, with_sort: bool = True) -> dict[str, Any]:
    """Split, label, issue, numeric ranges, free WHERE and sort; returns a plain filter dict."""
    f = d.facets(key)
    k = lambda name: f"{prefix}_{name}"  # noqa: E731
    for name, default in [
        ("splits", []), ("labels", []), ("issues", []), ("range_cols", []), ("where", ""),
        ("sort", "path"), ("desc", False),
    ]:  # fmt: skip
        st.session_state.setdefault(k(name), default)
    keep_state(
        *(k(n) for n in ("splits", "labels", "issues", "range_cols", "where", "sort", "desc"))
    )
    c1, c2, c3 = st.columns(3)
    c1.multiselect("Split", f["splits"], key=k("splits"), placeholder="all splits")
    c2.multiselect("Label", f["labels"], key=k("labels"), placeholder="all labels")
    c3.multiselect("Issue", f["issues"], key=k("issues"), placeholder="any or none")
    ranges = {}
    with st.expander("Ranges and WHERE", expanded=bool(st.session_state[k("range_cols")])):
        st.multiselect("Filter by range of", d.numeric_columns(), key=k("range_cols"))
        for col in st.session_state[k("range_cols")]:
            lo, hi = d.column_range(key, col)
            if lo is None or hi is None:
                st.caption(f"{col}: no values")
                continue
            lo, hi = float(lo), float(hi)
            if lo == hi:
                hi = lo + 1.0
            rk = k(f"range_{col}")
            st.session_state.setdefault(rk, (lo, hi))
            keep_state(rk)
            ranges[col] = st.slider(col, lo, hi, key=rk)
        st.text_input(
            "WHERE (SQL over the images table, read-only)",
            key=k("where"),
            placeholder="e.g. width < 64 AND label = '3'",
        )
    spec: dict[str, Any] = {
        "splits": list(st.session_state[k("splits")]),
        "labels": list(st.session_state[k("labels")]),
        "issues": list(st.session_state[k("issues")]),
        "ranges": ranges,
        "where": st.session_state[k("where")].strip() or None,
    }
    if with_sort:
        s1, s2 = st.columns([3, 1])
        cols = [c for c in f["columns"] if c != "file_id"]
        if st.session_state[k("sort")] not in cols:
            st.session_state[k("sort")] = "path"
        s1.selectbox("Sort by", cols, key=k("sort"))
        s2.toggle("Descending", key=k("desc"))
        spec["sort"] = st.session_state[k("sort")]
        spec["descending"] = bool(st.session_state[k("desc")])
    return spec


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return "" if v is None else str(v)


def placeholder_png(text: str = "no thumbnail") -> bytes:
    im = Image.new("RGB", (128, 128), (235, 235, 235))
    from PIL import ImageDraw

    ImageDraw.Draw(im).text((10, 58), text, fill=(120, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def square(jpeg: bytes | None) -> bytes | Image.Image:
    """A thumbnail boxed into a square, so a 25x100 strip does not stretch its grid row."""
    if not jpeg:
        return placeholder_png()
    im = Image.open(io.BytesIO(jpeg))
    w, h = im.size
    if 0.8 <= w / max(h, 1) <= 1.25:
        return jpeg
    side = max(w, h)
    box = Image.new("RGB", (side, side), (240, 240, 240))
    box.paste(im.convert("RGB"), ((side - w) // 2, (side - h) // 2))
    return box


def grid(
    key: str,
    df: pl.DataFrame,
    fields: list[str] | None = None,
    prefix: str = "g",
    ncols: int = 6,
    captions: dict[int, str] | None = None,
    marks: dict[int, str] | None = None,
) -> None:
    """Thumbnails from the index with label, chosen fields and any decision; 'open' shows it."""
    if df.height == 0:
        st.caption("No images.")
        return
    ids = [int(i) for i in df["file_id"].to_list()]
    thumbs = d.thumbnails(key, tuple(ids))
    badges = d.decision_badges()
    fields = [f for f in (fields or GRID_FIELDS) if f in df.columns]
    rows = df.to_dicts()
    for start in range(0, len(rows), ncols):
        cols = st.columns(ncols)
        for col, row in zip(cols, rows[start : start + ncols], strict=False):
            fid = int(row["file_id"])
            with col:
                st.image(square(thumbs.get(fid)), width="stretch")
                name = Path(str(row.get("path", ""))).name
                lines = [f"**{name}**" if name else ""]
                lines.append(" · ".join(f"{f}={_fmt(row.get(f))}" for f in fields))
                if captions and fid in captions:
                    lines.append(captions[fid])
                if marks and fid in marks:
                    lines.append(f"**{marks[fid]}**")
                if fid in badges:
                    lines.append(f":red[**decision: {badges[fid]}**]")
                st.caption("  \n".join(x for x in lines if x))
                st.button(
                    "open",
                    key=f"{prefix}_open_{fid}_{start}",
                    on_click=select_image,
                    args=(fid,),
                    width="stretch",
                )


def select_image(file_id: int) -> None:
    st.session_state["selected"] = file_id


def show_selected(key: str) -> None:
    """Open the detail dialog for the image chosen with any 'open' button on this page."""
    fid = st.session_state.get("selected")
    if fid is not None:
        _detail(key, int(fid))


def full_image(root: Path | None, rel: str) -> Image.Image | None:
    """The full-size file, upright; None when it is missing or cannot be decoded."""
    if root is None:
        return None
    p = Path(root) / rel
    try:
        with Image.open(p) as im:
            im.load()
            return ImageOps.exif_transpose(im).convert("RGB")
    except Exception:  # noqa: BLE001 - a corrupt file is an expected state here
        return None


@st.dialog("Image", width="large")
def _detail(key: str, file_id: int) -> None:
    info = d.image(key, file_id)
    path = str(info.get("path"))
    st.markdown(f"**{path}**  \nlabel `{info.get('label')}` · split `{info.get('split')}`")
    full = full_image(d.index().root, path)
    if full is not None:
        caption = f"full size {full.width}×{full.height}"
        if full.width < 360:  # small images enlarged (square pixels) so they can be seen
            f = min(8, -(-360 // full.width))
            full = full.resize((full.width * f, full.height * f), Image.NEAREST)
            caption += f", shown {f}× enlarged"
        st.image(full, caption=caption, width=min(full.width, 720))
    else:
        thumb = d.thumbnails(key, (file_id,)).get(file_id)
        st.image(thumb or placeholder_png("cannot decode"), caption="thumbnail (file unreadable)")
    found = [r for r in info.get("issue_rows") or [] if r.get("is_issue")]
    if found:
        st.markdown("**Issues**")
        st.dataframe(pl.DataFrame(found), hide_index=True, width="stretch")
    else:
        st.caption("No issues flagged.")
    decision_ui(key, [file_id], [path], prefix=f"dlg_{file_id}")
    try:
        nb = d.neighbors(key, file_id, 8)
    except DataAuditError as exc:
        nb = None
        st.caption(f"Neighbours unavailable: {exc}")
    if nb is not None and nb.height:
        st.markdown("**Nearest neighbours** (embedding cosine similarity)")
        nb = d.with_images(key, nb)
        grid(key, nb, fields=["label", "split", "similarity"], prefix=f"nb{file_id}", ncols=4)
    elif nb is not None:
        st.caption("No neighbours: the index has no embeddings (scanned with --no-embed).")
    with st.expander("Every stored field"):
        fields = {k: _fmt(v) for k, v in info.items() if k not in d.HIDDEN | {"issues"}}
        st.dataframe(
            pl.DataFrame({"field": list(fields), "value": list(fields.values())}),
            hide_index=True,
            width="stretch",
            height=400,
        )
    if st.button("Close", key=f"close_{file_id}"):
        st.session_state.pop("selected", None)
        st.rerun()


def decision_ui(key: str, file_ids: list[int], paths: list[str], prefix: str) -> None:
    """Keep / drop / relabel for the given images, written to the decisions log."""
    labels = d.facets(key)["labels"]
    c1, c2, c3 = st.columns([2, 2, 3])
    action = c1.segmented_control(
        "Decision", ["drop", "relabel", "keep"], key=f"{prefix}_action", default="drop"
    )
    new_label = None
    if action == "relabel":
        new_label = c2.selectbox("New label", labels, key=f"{prefix}_label")
    reason = c3.text_input("Reason", key=f"{prefix}_reason")
    n = len(file_ids)
    if st.button(f"Save decision for {n} image{'s' * (n != 1)}", key=f"{prefix}_save"):
        if action is None:
            st.warning("Pick keep, drop or relabel first.")
            return
        try:
            d.record_decision(
                file_ids, paths, action, new_label, reason, who=st.session_state.get("who") or None
            )
        except DataAuditError as exc:
            st.error(str(exc))
            return
        st.success(f"Saved: {action}{' → ' + str(new_label) if new_label else ''} for {n}.")


def pager(prefix: str, total: int, per_page: int) -> int:
    """Page number control; returns the offset."""
    pages = max(1, -(-total // per_page))
    kp = f"{prefix}_page"
    st.session_state.setdefault(kp, 1)
    keep_state(kp)
    if st.session_state[kp] > pages:
        st.session_state[kp] = 1
    st.number_input(f"Page (of {pages:,})", 1, pages, key=kp)
    return (int(st.session_state[kp]) - 1) * per_page


def goto_browse(spec: dict[str, Any]) -> None:
    """Callback: preset Browse's filters (and sort) and switch there on the next run."""
    for name, value in spec.items():
        st.session_state[f"browse_{name}"] = value
    st.session_state["browse_page"] = 1
    st.session_state["_goto"] = "browse.py"

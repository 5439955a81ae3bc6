"""Review: mark images keep / drop / relabel-to-X, one, a selection or a whole filter result.

Decisions go to an append-only log beside the index (``decisions.jsonl``), with who, when
and why; the latest line per image wins and "keep" clears an earlier decision. Export reads
the same log.
"""

from __future__ import annotations

import base64

import data as d
import polars as pl
import streamlit as st
import widgets as w

from dataaudit.errors import DataAuditError
from dataaudit.store.decisions import Decisions

PER_PAGE = 100


def data_url(jpeg: bytes | None) -> str | None:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode() if jpeg else None


st.title("Review")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    labels = d.facets(key)["labels"]
    current = d.decisions()
    tab_mark, tab_current = st.tabs(["Mark images", f"Decisions ({current.height})"])
    with tab_mark:
        spec = w.filters_ui("review", key)
        try:
            total = d.count(key, spec)
        except DataAuditError as exc:
            st.error(f"Filter error: {exc}")
            st.stop()
        offset = w.pager("review", total, PER_PAGE)
        page = d.images(key, spec, columns=("file_id", "path", "label", "split"),
                        limit=PER_PAGE, offset=offset)  # fmt: skip
        thumbs = d.thumbnails(key, tuple(page["file_id"].to_list()))
        badges = d.decision_badges()
        table = page.with_columns(
            pl.col("file_id").map_elements(lambda f: data_url(thumbs.get(f)),
                                           return_dtype=pl.String).alias("image"),
            pl.col("file_id").map_elements(lambda f: badges.get(f, ""),
                                           return_dtype=pl.String).alias("decision"),
        ).select("image", "path", "label", "split", "decision", "file_id")  # fmt: skip
        st.markdown(f"**{total:,} images** match. Select rows (tick the left column), then "
                    "choose a decision below.")  # fmt: skip
        event = st.dataframe(
            table,
            column_config={"image": st.column_config.ImageColumn("image", width="small"),
                           "file_id": None},
            hide_index=True, width="stretch", height=min(820, 40 + 66 * max(page.height, 1)), row_height=64,
            on_select="rerun", selection_mode="multi-row", key="review_table",
        )  # fmt: skip
        rows = list(event.selection.rows) if event else []
        scope = st.radio(
            "Apply to",
            [f"the {len(rows)} selected", f"all {total:,} matching the filters"],
            horizontal=True,
            key="review_scope",
        )
        if scope.startswith("all"):
            everything = d.images(key, spec, columns=("file_id", "path"))
            ids, paths = everything["file_id"].to_list(), everything["path"].to_list()
        else:
            chosen = table[rows] if rows else table.head(0)
            ids, paths = chosen["file_id"].to_list(), chosen["path"].to_list()
        if ids:
            w.decision_ui(key, ids, paths, prefix="review")
        else:
            st.caption("Nothing selected.")
    with tab_current:
        if current.height == 0:
            st.caption("No decisions yet. Mark images here, or with the buttons under an "
                       "opened image on any page.")  # fmt: skip
        else:
            counts = current.group_by("action").len().sort("action")
            st.markdown(" · ".join(f"**{n}** {a}" for a, n in counts.iter_rows()))
            st.dataframe(current, hide_index=True, width="stretch")
            st.download_button(
                "Download decisions (CSV)",
                current.write_csv(),
                file_name="decisions.csv",
                mime="text/csv",
                key="review_download",
            )
            thumbs_df = d.with_images(key, current.select("file_id"))
            w.grid(key, thumbs_df.head(60), fields=["label", "split"], prefix="cur")
        with st.expander("Full history (every line of the log)"):
            hist = Decisions.for_index(d.index()).history()
            st.dataframe(hist, hide_index=True, width="stretch")
    w.show_selected(key)

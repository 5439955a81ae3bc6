"""SQL: a read-only console over the index; results as a table, downloadable; the schema beside."""

from __future__ import annotations

import data as d
import polars as pl
import streamlit as st
import widgets as w

from dataaudit.errors import DataAuditError

EXAMPLE = (
    "SELECT label, split, count(*) AS n, avg(sharpness) AS sharpness\n"
    "FROM images GROUP BY ALL ORDER BY ALL"
)
MAX_ROWS = 10_000


st.title("SQL")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    left, right = st.columns([3, 1])
    with right:
        st.markdown("**Schema**")
        sch = d.schema(key)
        for (table,), part in sch.group_by(["table"], maintain_order=True):
            with st.expander(table):
                st.dataframe(part.select("column", "type"), hide_index=True)
    with left:
        st.session_state.setdefault("sql_query", EXAMPLE)
        w.keep_state("sql_query")
        st.text_area("Query (read-only: writes are refused)", key="sql_query", height=160)
        run = st.button("Run", type="primary", key="sql_run")
        query = st.session_state["sql_query"].strip()
        if run or st.session_state.get("sql_ran") == query:
            st.session_state["sql_ran"] = query
            try:
                out = d.sql(key, query)
            except DataAuditError as exc:
                st.error(f"Query refused or failed: {exc}")
            except Exception as exc:  # noqa: BLE001 - any engine error is shown, never raised
                st.error(f"Query failed: {str(exc).splitlines()[0]}")
            else:
                st.caption(f"{out.height:,} rows" + (f" (first {MAX_ROWS:,} shown)"
                           if out.height > MAX_ROWS else ""))  # fmt: skip
                shown = out.head(MAX_ROWS)
                blobs = [c for c, t in shown.schema.items() if t == pl.Binary]
                if blobs:
                    shown = shown.with_columns(pl.col(c).bin.size().alias(c) for c in blobs)
                    st.caption("Binary columns are shown as their size in bytes.")
                st.dataframe(shown, hide_index=True, width="stretch")
                st.download_button("Download CSV", shown.write_csv(), file_name="query.csv",
                                   mime="text/csv", key="sql_download")  # fmt: skip

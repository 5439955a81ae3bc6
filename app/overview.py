"""Overview: counts, split x label, class balance, dataset-level findings, every histogram."""

from __future__ import annotations

import altair as alt
import data as d
import polars as pl
import streamlit as st
import widgets as w

st.title("Overview")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    o = d.overview(key)
    t = o["totals"]
    c = st.columns(6)
    c[0].metric("Images", f"{t['images']:,}")
    c[1].metric("Size", f"{t['bytes'] / 1e6:,.1f} MB")
    c[2].metric("Labels", f"{t['labels']:,}")
    c[3].metric("Unreadable", f"{t['corrupt']:,}")
    c[4].metric("Images with issues", f"{o['files_flagged']:,}")
    c[5].metric("Decisions", f"{d.decisions().height:,}")
    if not o["has_embeddings"]:
        st.caption(
            "No embeddings in this index (scanned with --no-embed): no map, neighbours, "
            "outliers or label errors."
        )

    left, right = st.columns([1, 1])
    with left:
        st.subheader("Split × label")
        by = o["by"]
        if by.height:
            table = by.pivot(on="split", index="label", values="n").fill_null(0)
            splits = [s for s in table.columns if s != "label"]
            table = table.with_columns(pl.sum_horizontal(splits).alias("total"))
            st.dataframe(table, hide_index=True, width="stretch")
    with right:
        st.subheader("Class balance per split")
        if by.height:
            share = by.with_columns((pl.col("n") / pl.col("n").sum().over("split")).alias("share"))
            chart = (
                alt.Chart(share.to_pandas())
                .mark_bar()
                .encode(
                    x=alt.X("label:N", sort=None),
                    y=alt.Y("share:Q", axis=alt.Axis(format="%")),
                    color="split:N",
                    xOffset="split:N",
                    tooltip=["split", "label", "n", alt.Tooltip("share:Q", format=".1%")],
                )
                .properties(height=260)
            )
            st.altair_chart(chart, width="stretch")

    st.subheader("Issues")
    flagged = o["flagged"]
    if flagged.height:
        st.dataframe(
            flagged, hide_index=True, width="content", height=36 * (flagged.height + 1) + 2
        )
        st.caption("Open a type on the Issues page, or filter by it in Browse.")
    else:
        st.caption("No issues flagged (or the detectors have not run: `dataaudit detect PATH`).")

    st.subheader("Dataset-level findings")
    findings = d.findings(key)
    if findings.height:
        for f in findings.iter_rows(named=True):
            icon = {
                "error": ":red[:material/error:]",
                "warning": ":orange[:material/warning:]",
            }.get(f["severity"], ":blue[:material/info:]")
            st.markdown(f"{icon} **{f['finding']}** — {f['message']}")
    else:
        st.caption("None.")

    st.subheader("Distributions")
    st.caption("The buttons open the tails of a distribution in Browse, sorted by that column.")
    cols = st.columns(3)
    hists = d.histograms(key)
    for i, col in enumerate(d.numeric_columns()):
        h = hists[col]
        with cols[i % 3], st.container(border=True):
            if h.height == 0:
                st.caption(f"{col}: no values")
                continue
            chart = (
                alt.Chart(h.to_pandas())
                .mark_bar()
                .encode(
                    x=alt.X("lo:Q", bin="binned", title=col),
                    x2="hi:Q",
                    y=alt.Y("count:Q", title="images"),
                    tooltip=["lo", "hi", "count"],
                )
                .properties(height=150)
            )
            st.altair_chart(chart, width="stretch")
            b1, b2 = st.columns(2)
            b1.button(
                f"Lowest {col}", key=f"low_{col}", on_click=w.goto_browse,
                args=({"sort": col, "desc": False},), width="stretch",
            )  # fmt: skip
            b2.button(
                f"Highest {col}", key=f"high_{col}", on_click=w.goto_browse,
                args=({"sort": col, "desc": True},), width="stretch",
            )  # fmt: skip

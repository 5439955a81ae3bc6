"""Map and outliers: the 2-D embedding map coloured by label, split or issue, thumbnails of the
selected points, and the outlier ranking with outliers that resemble each other grouped."""

from __future__ import annotations

import altair as alt
import data as d
import polars as pl
import streamlit as st
import widgets as w

TOP_OUTLIERS = 30  # at least this many of the highest-scoring images, flagged or not


st.title("Map and outliers")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    if not d.overview(key)["has_embeddings"]:
        st.info("This index has no embeddings (it was scanned with --no-embed). "
                "Run `dataaudit scan PATH` with embeddings to get the map and outliers.")  # fmt: skip
        st.stop()
    pts = d.map_points(key)
    st.session_state.setdefault("map_color", "label")
    w.keep_state("map_color")
    color = st.segmented_control("Colour by", ["label", "split", "issue"], key="map_color")
    color = color or "label"
    st.caption(f"{pts.height:,} points" + (" (a fixed sample)" if pts.height >= d.MAX_POINTS else "")
               + ". Drag a rectangle to see those images below.")  # fmt: skip
    brush = alt.selection_interval(name="brush")
    chart = (
        alt.Chart(pts.select("file_id", "x", "y", "label", "split", "issue", "path").to_pandas())
        .mark_circle(size=40, opacity=0.8)
        .encode(
            x=alt.X("x:Q", axis=None),
            y=alt.Y("y:Q", axis=None),
            color=alt.Color(f"{color}:N"),
            tooltip=["path", "label", "split", "issue"],
        )
        .add_params(brush)
        .properties(height=480)
    )
    event = st.altair_chart(chart, width="stretch", on_select="rerun", key="map_chart")
    box = (event or {}).get("selection", {}).get("brush") if event else None
    if box and "x" in box and "y" in box:
        (x0, x1), (y0, y1) = box["x"], box["y"]
        sel = pts.filter(pl.col("x").is_between(x0, x1) & pl.col("y").is_between(y0, y1))
        st.markdown(f"**{sel.height} selected** (first 60 shown)")
        w.grid(key, sel.head(60), fields=["label", "split", "issue"], prefix="mapsel")

    st.subheader("Outliers")
    flagged_ids = set(d.issues(key, "outlier")["file_id"].to_list())
    n_flag = len(flagged_ids)
    top, n_scored = d.ranked(key, "outlier", None, max(TOP_OUTLIERS, n_flag))
    if n_scored == 0:
        st.caption("No outlier scores stored (run `dataaudit detect PATH`).")
    else:
        reasons = dict(zip(top["file_id"].to_list(), top["details"].to_list(), strict=False))
        marks = {f: "flagged outlier" for f in top["file_id"].to_list() if f in flagged_ids}
        st.markdown(f"**{n_flag} flagged**; the ranking shows them first, then the next "
                    f"highest scores (top {top.height} of {n_scored:,} scored). The caption is "
                    "the reason.")  # fmt: skip
        w.grid(key, top, fields=["label", "split", "score"], prefix="orank", captions=reasons,
               marks=marks)  # fmt: skip
        st.subheader("Clusters of outliers")
        st.caption("Outliers of the ranking above that resemble each other: a cluster is often "
                   "a sub-population (a new domain, a capture setting), not noise.")  # fmt: skip
        st.session_state.setdefault("map_sim", 0.8)
        w.keep_state("map_sim")
        min_sim = st.slider("Link outliers at cosine similarity ≥", 0.5, 0.99, key="map_sim")
        clusters = [
            c for c in d.outlier_clusters(key, tuple(top["file_id"].to_list()), float(min_sim))
            if len(c) > 1
        ]  # fmt: skip
        if not clusters:
            st.caption("No two outliers of the ranking are that similar.")
        for i, members in enumerate(clusters):
            n_in = sum(f in flagged_ids for f in members)
            st.markdown(f"**Cluster {i + 1}** · {len(members)} similar images, {n_in} flagged")
            df = d.with_images(key, pl.DataFrame({"file_id": members}))
            w.grid(key, df, fields=["label", "split"], prefix=f"oc{i}", captions=reasons,
                   marks=marks)  # fmt: skip
    w.show_selected(key)

"""Map and outliers: the 2-D embedding map coloured by label, split or issue, thumbnails of the
selected points, and the outlier ranking with outliers that resemble each other grouped."""

from __future__ import annotations

import altair as alt
import numpy as np
import polars as pl
import streamlit as st
import widgets as w

import dataaudit as da

MAX_POINTS = 20_000  # a browser draws this many points smoothly; more are sampled
TOP_OUTLIERS = 60


@st.cache_data(show_spinner=False)
def points(key: str) -> pl.DataFrame:
    """Map coordinates with label, split and the most severe flagged issue (or 'none')."""
    m = w._with_images(key, w.index().embedding_map().select("file_id", "x", "y"))
    if m.height > MAX_POINTS:  # a fixed sample, so the picture is stable across reruns
        m = m.filter((pl.col("file_id").hash(seed=0) % (m.height // MAX_POINTS + 1)) == 0)
    top = (
        w.issues(key)
        .sort("score", descending=True, nulls_last=True)
        .unique("file_id", keep="first")
        .select("file_id", "issue")
    )
    m = m.join(top, on="file_id", how="left").with_columns(pl.col("issue").fill_null("none"))
    return m.with_columns(pl.col("label").fill_null("(none)"), pl.col("split").fill_null("(none)"))


@st.cache_data(show_spinner=False)
def outlier_clusters(key: str, ids: tuple[int, ...], min_sim: float) -> list[list[int]]:
    """Connected components of outliers linked by cosine similarity >= ``min_sim``."""
    where = f"file_id IN ({', '.join(str(int(i)) for i in ids)})"
    emb = w.index().embeddings(da.Filters(where=where))
    pos = {int(f): i for i, f in enumerate(emb.file_ids)}
    order = [i for i in ids if i in pos]
    if not order:
        return []
    x = emb.matrix[[pos[i] for i in order]].astype(np.float32)
    sim = x @ x.T
    parent = list(range(len(order)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(sim >= min_sim, k=1)), strict=False):
        parent[find(int(i))] = find(int(j))
    comps: dict[int, list[int]] = {}
    for i, fid in enumerate(order):
        comps.setdefault(find(i), []).append(fid)
    return sorted(comps.values(), key=lambda c: (-len(c), order.index(c[0])))


st.title("Map and outliers")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    if not w.overview(key)["has_embeddings"]:
        st.info("This index has no embeddings (it was scanned with --no-embed). "
                "Run `dataaudit scan PATH` with embeddings to get the map and outliers.")  # fmt: skip
        st.stop()
    pts = points(key)
    st.session_state.setdefault("map_color", "label")
    w.keep_state("map_color")
    color = st.segmented_control("Colour by", ["label", "split", "issue"], key="map_color")
    color = color or "label"
    st.caption(f"{pts.height:,} points" + (" (a fixed sample)" if pts.height >= MAX_POINTS else "")
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
    ranked = w.issues(key, "outlier", flagged_only=False).sort(
        "score", descending=True, nulls_last=True
    )
    if ranked.height == 0:
        st.caption("No outlier scores stored (run `dataaudit detect PATH`).")
    else:
        n_flag = w.issues(key, "outlier")["file_id"].n_unique()
        st.markdown(f"**{n_flag} flagged**; the {TOP_OUTLIERS} highest-scoring images, grouped "
                    "when they resemble each other (a cluster of outliers is often a "
                    "sub-population, not noise).")  # fmt: skip
        st.session_state.setdefault("map_sim", 0.8)
        w.keep_state("map_sim")
        min_sim = st.slider("Group outliers at cosine similarity ≥", 0.5, 0.99, key="map_sim")
        top = ranked.unique("file_id", maintain_order=True).head(TOP_OUTLIERS)
        reasons = dict(zip(top["file_id"].to_list(), top["details"].to_list(), strict=False))
        flagged_ids = set(w.issues(key, "outlier")["file_id"].to_list())
        clusters = outlier_clusters(key, tuple(top["file_id"].to_list()), float(min_sim))
        singles = [c[0] for c in clusters if len(c) == 1]
        for i, members in enumerate(c for c in clusters if len(c) > 1):
            st.markdown(f"**Cluster {i + 1}** · {len(members)} similar outliers")
            df = w._with_images(key, pl.DataFrame({"file_id": members}))
            w.grid(key, df, fields=["label", "split"], prefix=f"oc{i}", captions=reasons,
                   marks={f: "flagged" for f in members if f in flagged_ids})  # fmt: skip
        if singles:
            st.markdown(f"**Lone outliers** · {len(singles)}")
            df = w._with_images(key, pl.DataFrame({"file_id": singles}))
            w.grid(key, df, fields=["label", "split"], prefix="olone", captions=reasons,
                   marks={f: "flagged" for f in singles if f in flagged_ids})  # fmt: skip
    w.show_selected(key)

"""Duplicates and leakage: groups side by side with the layer that linked them, and the
cross-split pairs grouped by split pair."""

from __future__ import annotations

import data as d
import polars as pl
import streamlit as st
import widgets as w

GROUPS_PER_PAGE = 8


st.title("Duplicates and leakage")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    groups, pairs = d.duplicates(key)
    n_groups = groups["group_id"].n_unique() if groups.height else 0
    cross = pairs.filter(
        pl.col("split_a").is_not_null()
        & pl.col("split_b").is_not_null()
        & (pl.col("split_a") != pl.col("split_b"))
    )
    c = st.columns(4)
    c[0].metric("Duplicate groups", f"{n_groups:,}")
    c[1].metric("Images in groups", f"{groups.height:,}")
    c[2].metric("Linked pairs", f"{pairs.height:,}")
    c[3].metric("Cross-split pairs (leakage)", f"{cross.height:,}")
    if pairs.height:
        layers = pairs.group_by("layer").len().sort("layer")
        st.caption(
            "Pairs per layer: "
            + ", ".join(f"{a} {n}" for a, n in layers.iter_rows())
            + " — bytes: same file bytes; pixels: same decoded pixels; phash: perceptual hash "
            "(distance in bits); embedding / aligned: network features or a matching crop "
            "(distance = 1 − cosine)."
        )
    tab_groups, tab_leak = st.tabs(["Groups", "Leakage by split pair"])
    with tab_groups:
        if n_groups == 0:
            st.caption("No duplicate groups.")
        else:
            layer_opts = sorted(pairs["layer"].unique().to_list())
            st.session_state.setdefault("dup_layers", [])
            w.keep_state("dup_layers")
            chosen = st.multiselect("Linked by", layer_opts, key="dup_layers",
                                    placeholder="any layer")  # fmt: skip
            gids = groups.select("group_id", "file_id")
            if chosen:
                keep = pairs.filter(pl.col("layer").is_in(chosen))
                ids = set(keep["a"].to_list()) | set(keep["b"].to_list())
                gids = gids.filter(pl.col("file_id").is_in(list(ids)))
            order = (
                groups.filter(pl.col("group_id").is_in(gids["group_id"].unique().to_list()))
                .group_by("group_id")
                .agg(pl.len().alias("n"), pl.col("split").n_unique().alias("splits"))
                .sort(["splits", "n", "group_id"], descending=[True, True, False])
            )
            offset = w.pager("dup", order.height, GROUPS_PER_PAGE)
            for gid, n, n_splits in order.slice(offset, GROUPS_PER_PAGE).iter_rows():
                members = groups.filter(pl.col("group_id") == gid).sort(
                    ["is_representative", "path"], descending=[True, False]
                )
                ids = members["file_id"].to_list()
                links = pairs.filter(pl.col("a").is_in(ids) | pl.col("b").is_in(ids))
                names = dict(zip(members["file_id"].to_list(), members["path"].to_list(),
                                 strict=False))  # fmt: skip
                link_text = "; ".join(
                    f"{names.get(a, a)} ↔ {names.get(b, b)}: {layer} ({dist:.3g})"
                    for a, b, layer, dist in links.select("a", "b", "layer", "distance").iter_rows()
                )
                leak = " — **spans splits (leakage)**" if n_splits > 1 else ""
                st.markdown(f"**Group {gid}** · {n} images{leak}")
                st.caption(link_text)
                marks = {fid: "★ representative (keep)" for fid, rep in
                         members.select("file_id", "is_representative").iter_rows() if rep}  # fmt: skip
                w.grid(key, members, fields=["label", "split"], prefix=f"grp{gid}",
                       ncols=max(4, min(len(ids), 6)), marks=marks)  # fmt: skip
                st.divider()
    with tab_leak:
        if cross.height == 0:
            st.caption("No duplicate pairs cross a split boundary.")
        else:
            cross = cross.with_columns(
                pl.min_horizontal("split_a", "split_b").alias("s1"),
                pl.max_horizontal("split_a", "split_b").alias("s2"),
            )
            for (s1, s2), part in cross.group_by(["s1", "s2"], maintain_order=True):
                st.subheader(f"{s1} ↔ {s2}: {part.height} pair{'s' * (part.height != 1)}")
                for a, b, layer, dist in part.select("a", "b", "layer", "distance").iter_rows():
                    pair = d.with_images(key, pl.DataFrame({"file_id": [a, b]}))
                    st.caption(f"linked by {layer}, distance {dist:.3g}")
                    w.grid(key, pair, fields=["label", "split"], prefix=f"leak{a}_{b}", ncols=6)
    w.show_selected(key)

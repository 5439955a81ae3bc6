"""Per-class look: each class's mean image and per-pixel standard deviation (does position or
background give a class away?), and one image at several input sizes side by side (how small
can the input be and stay recognisable?). Everything comes from the stored thumbnails."""

from __future__ import annotations

import io

import data as d
import numpy as np
import streamlit as st
import widgets as w
from PIL import Image

SIZES = [8, 16, 32, 64, 128]


def _upscale(arr: np.ndarray, side: int = 160) -> Image.Image:
    return Image.fromarray(arr).resize((side, side), Image.NEAREST)


st.title("Per-class look")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    stats = d.class_stats(key)
    if not stats:
        st.info("No labelled images with thumbnails in this index.")
        st.stop()
    st.markdown(f"Mean image and per-pixel standard deviation of up to {stats[0]['per_class']} "
                "thumbnails per class. A sharp mean or a dark std region means the class's images share "
                "position, framing or background — a shortcut a model can learn.")  # fmt: skip
    top = max(float(s["std"].max()) for s in stats) or 1.0
    ncols = 8
    for start in range(0, len(stats), ncols):
        cols = st.columns(ncols)
        for col, s in zip(cols, stats[start : start + ncols], strict=False):
            with col:
                st.image(_upscale(s["mean"]), caption=f"{s['label']}: mean of {s['n']}")
                std = (s["std"].mean(2) / top * 255).clip(0, 255).astype(np.uint8)
                st.image(_upscale(std), caption=f"{s['label']}: std")

    st.subheader("One image at several sizes")
    labels = [s["label"] for s in stats]
    c1, c2 = st.columns(2)
    cls = c1.selectbox("Class", labels, key="pc_class")
    choices = d.images(key, {"labels": [cls], "where": "NOT is_corrupt", "sort": "path"},
                       columns=("file_id", "path"), limit=200)  # fmt: skip
    if choices.height:
        paths = dict(zip(choices["file_id"].to_list(), choices["path"].to_list(), strict=False))
        fid = c2.selectbox("Image", list(paths), format_func=lambda f: paths[f], key="pc_image")
        full = w.full_image(d.index().root, paths[fid])
        if full is None:
            data = d.thumbnails(key, (fid,)).get(fid)
            full = Image.open(io.BytesIO(data)).convert("RGB") if data else None
        if full is not None:
            cols = st.columns(len(SIZES) + 1)
            for col, size in zip(cols, SIZES, strict=False):
                small = full.copy()
                small.thumbnail((size, size), Image.LANCZOS)
                col.image(small.resize((256, round(256 * small.height / small.width)),
                                       Image.NEAREST),
                          caption=f"{small.width}×{small.height} px")  # fmt: skip
            cols[-1].image(full, caption=f"full {full.width}×{full.height}")
    st.caption("Each small version is shown enlarged with square pixels: what a network at that "
               "input size sees.")  # fmt: skip

"""Labels: per-class galleries, suspected label errors with the suggested label, the most
confused class pairs, and (once the training module stored predictions) mispredictions."""

from __future__ import annotations

import data as d
import streamlit as st
import widgets as w

PER_PAGE = 36


st.title("Labels")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    labels = d.facets(key)["labels"]
    tab_gal, tab_err, tab_conf, tab_pred = st.tabs(
        ["Per-class galleries", "Suspected label errors", "Confused classes", "Mispredictions"]
    )
    with tab_gal:
        if not labels:
            st.caption("This dataset has no labels.")
        else:
            st.session_state.setdefault("labels_class", labels[0])
            w.keep_state("labels_class")
            if st.session_state["labels_class"] not in labels:
                st.session_state["labels_class"] = labels[0]
            cls = st.selectbox("Class", labels, key="labels_class")
            spec = {"labels": [cls], "sort": "path"}
            total = d.count(key, spec)
            offset = w.pager("labels", total, PER_PAGE)
            st.markdown(f"**{total:,} images** labelled `{cls}`")
            w.grid(key, d.images(key, spec, limit=PER_PAGE, offset=offset),
                   fields=["split", "sharpness"], prefix="gal")  # fmt: skip
    with tab_err:
        errs = d.issues(key, "label_error").sort("score", descending=True, nulls_last=True)
        if errs.height == 0:
            st.caption("No suspected label errors (they need embeddings and the detectors).")
        else:
            st.markdown(f"**{errs.height} suspected label errors**; the reason names the label "
                        "the nearest neighbours vote for.")  # fmt: skip
            reasons = dict(zip(errs["file_id"].to_list(), errs["details"].to_list(), strict=False))
            w.grid(key, errs.head(120), fields=["label", "split", "score"], prefix="lerr",
                   captions=reasons)  # fmt: skip
    with tab_conf:
        if not d.overview(key)["has_embeddings"]:
            st.caption("Needs embeddings (the index was scanned with --no-embed).")
        else:
            small = d.overview(key)["totals"]["images"] < 200_000
            st.session_state.setdefault("labels_confused", small)
            w.keep_state("labels_confused")
            if st.toggle("Count neighbour links between classes", key="labels_confused"):
                pairs = d.confused_pairs(key)
                st.caption("How often an image of one class has an image of the other among its "
                           "5 nearest neighbours: classes that look alike to the network.")  # fmt: skip
                st.dataframe(pairs, hide_index=True, width="stretch")
            else:
                st.caption("Reads the whole neighbour graph: a few seconds on millions of images.")
    with tab_pred:
        t = d.tables(key)
        pred_table = next(
            (n for n, cols in t.items() if "file_id" in cols and "loss" in cols
             and any(c in cols for c in ("predicted", "predicted_label", "pred"))),
            None,
        )  # fmt: skip
        if pred_table is None:
            st.caption("No predictions stored yet: train a baseline with the training module "
                       "(`dataaudit train PATH`) to rank mispredictions by loss here.")  # fmt: skip
        else:
            cols = t[pred_table]
            pred = next(c for c in ("predicted_label", "predicted", "pred") if c in cols)
            mis = d.mispredictions(key, pred_table, "loss", pred)
            st.markdown(f"**{mis.height} mispredicted images** (highest loss first, "
                        f"from `{pred_table}`)")  # fmt: skip
            w.grid(key, mis.head(60), fields=["label", "predicted", "loss"], prefix="mis")
            dyn_cols = set(t.get("prediction_dynamics", []))
            if mis.height and {"epoch", "file_id", "p_label"} <= dyn_cols:
                st.subheader("Prediction dynamics")
                st.caption("Probability of the dataset's label over the epochs of training.")
                names = dict(zip(mis["file_id"].to_list(), mis["path"].to_list(), strict=False))
                fid = st.selectbox("Image", list(names)[:30], key="dyn_fid",
                                   format_func=lambda f: names[f])  # fmt: skip
                dyn = d.index().sql(
                    "SELECT * FROM prediction_dynamics WHERE file_id = ? ORDER BY epoch",
                    params=[int(fid)],
                )  # fmt: skip
                if dyn.height:
                    color = "model" if "model" in dyn.columns else None
                    st.line_chart(dyn.to_pandas(), x="epoch", y="p_label", color=color)
                    st.dataframe(dyn, hide_index=True)
                else:
                    st.caption("No stored dynamics for this image (only fixed validation images).")
    w.show_selected(key)

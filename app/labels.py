"""Labels: per-class galleries, suspected label errors with the suggested label, the most
confused class pairs, and (once the training module stored predictions) mispredictions."""

from __future__ import annotations

import polars as pl
import streamlit as st
import widgets as w

PER_PAGE = 36


@st.cache_data(show_spinner=False)
def confused_pairs(key: str) -> pl.DataFrame:
    """Class pairs whose images are each other's nearest neighbours most often."""
    return w.index().sql(
        """
        WITH links AS (
            SELECT ia.label AS a, ib.label AS b
            FROM knn k
            JOIN images ia ON ia.file_id = k.file_id
            JOIN images ib ON ib.file_id = k.neighbor_id
            WHERE k.scope = 'all' AND k.rank <= 5 AND ia.label IS NOT NULL
              AND ib.label IS NOT NULL
        ),
        per_class AS (SELECT a, count(*) AS total FROM links GROUP BY a)
        SELECT least(l.a, l.b) AS class_1, greatest(l.a, l.b) AS class_2,
               count(*) AS neighbour_links,
               round(100.0 * count(*) / any_value(p.total), 1) AS pct_of_class_1_links
        FROM links l JOIN per_class p ON p.a = least(l.a, l.b)
        WHERE l.a <> l.b
        GROUP BY ALL ORDER BY neighbour_links DESC LIMIT 15
        """
    )


@st.cache_data(show_spinner=False)
def tables(key: str) -> dict[str, list[str]]:
    df = w.index().sql(
        "SELECT table_name, column_name FROM information_schema.columns ORDER BY ordinal_position"
    )
    out: dict[str, list[str]] = {}
    for t, c in df.iter_rows():
        out.setdefault(t, []).append(c)
    return out


@st.cache_data(show_spinner=False)
def mispredictions(key: str, table: str, loss: str, pred: str) -> pl.DataFrame:
    return w.index().sql(
        f"""
        SELECT p.file_id, p."{pred}" AS predicted, p."{loss}" AS loss, i.path, i.label, i.split
        FROM "{table}" p JOIN images i USING (file_id)
        WHERE p."{pred}"::VARCHAR IS DISTINCT FROM i.label
        QUALIFY row_number() OVER (PARTITION BY p.file_id ORDER BY p."{loss}" DESC) = 1
        ORDER BY loss DESC LIMIT 200
        """
    )


st.title("Labels")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    labels = w.facets(key)["labels"]
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
            total = w.count(key, spec)
            offset = w.pager("labels", total, PER_PAGE)
            st.markdown(f"**{total:,} images** labelled `{cls}`")
            w.grid(key, w.images(key, spec, limit=PER_PAGE, offset=offset),
                   fields=["split", "sharpness"], prefix="gal")  # fmt: skip
    with tab_err:
        errs = w.issues(key, "label_error").sort("score", descending=True, nulls_last=True)
        if errs.height == 0:
            st.caption("No suspected label errors (they need embeddings and the detectors).")
        else:
            st.markdown(f"**{errs.height} suspected label errors**; the reason names the label "
                        "the nearest neighbours vote for.")  # fmt: skip
            reasons = dict(zip(errs["file_id"].to_list(), errs["details"].to_list(), strict=False))
            w.grid(key, errs.head(120), fields=["label", "split", "score"], prefix="lerr",
                   captions=reasons)  # fmt: skip
    with tab_conf:
        if not w.overview(key)["has_embeddings"]:
            st.caption("Needs embeddings (the index was scanned with --no-embed).")
        else:
            pairs = confused_pairs(key)
            st.caption("How often an image of one class has an image of the other among its 5 "
                       "nearest neighbours: classes that look alike to the network.")  # fmt: skip
            st.dataframe(pairs, hide_index=True, width="stretch")
    with tab_pred:
        t = tables(key)
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
            mis = mispredictions(key, pred_table, "loss", pred)
            st.markdown(f"**{mis.height} mispredicted images** (highest loss first, "
                        f"from `{pred_table}`)")  # fmt: skip
            w.grid(key, mis.head(60), fields=["label", "predicted", "loss"], prefix="mis")
            if "epoch" in cols:
                st.subheader("Prediction dynamics")
                fid_opts = mis["file_id"].head(30).to_list()
                if fid_opts:
                    fid = st.selectbox("Image", fid_opts, key="dyn_fid",
                                       format_func=lambda f: str(f))  # fmt: skip
                    dyn = w.index().sql(
                        f'SELECT epoch, "{pred}"::VARCHAR AS predicted, loss FROM "{pred_table}" '
                        "WHERE file_id = ? ORDER BY epoch", params=[fid],
                    )  # fmt: skip
                    st.line_chart(dyn.to_pandas(), x="epoch", y="loss")
                    st.dataframe(dyn, hide_index=True)
    w.show_selected(key)

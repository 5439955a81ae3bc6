"""Human baseline: label random images shown without their labels; see how often you agree
with the dataset (an estimate of label noise and of the accuracy a model can reach)."""

from __future__ import annotations

import uuid

import data as d
import polars as pl
import streamlit as st
import widgets as w

from dataaudit.store.human_labels import HumanLabels, agreement

CANT_TELL = "can't tell"


def start(n: int, splits: list[str]) -> None:
    seed = uuid.uuid4().int % (2**31)
    st.session_state["hb"] = {
        "session": uuid.uuid4().hex[:12],
        "items": d.human_sample(n, seed, splits).to_dicts(),
        "i": 0,
        "answers": [],
    }


def answer(choice: str) -> None:
    hb = st.session_state["hb"]
    item = hb["items"][hb["i"]]
    human = None if choice == CANT_TELL else choice
    HumanLabels.for_index(d.index()).record(
        item["file_id"], item["path"], item["label"], human, hb["session"],
        who=st.session_state.get("who") or None,
    )  # fmt: skip
    hb["answers"].append({"file_id": item["file_id"], "dataset_label": item["label"],
                          "human_label": human})  # fmt: skip
    hb["i"] += 1


def report(answers: pl.DataFrame, title: str) -> None:
    a = agreement(answers)
    st.subheader(title)
    if a["share"] is None:
        st.caption("No scored answers yet.")
        return
    c = st.columns(4)
    c[0].metric("Agreement with the dataset", f"{a['share']:.0%}")
    c[1].metric("95 % interval", f"{a['low']:.0%} – {a['high']:.0%}")
    c[2].metric("Estimated label noise", f"{1 - a['share']:.0%}")
    c[3].metric("Scored / answered", f"{a['scored']} / {a['answered']}")
    st.caption("Where you and the dataset disagree, either the label is wrong or the image is "
               "ambiguous; a model is unlikely to beat your agreement by much.")  # fmt: skip
    scored = answers.filter(pl.col("human_label").is_not_null())
    conf = (
        scored.group_by("dataset_label", "human_label").len()
        .pivot(on="human_label", index="dataset_label", values="len")
        .fill_null(0).sort("dataset_label")
    )  # fmt: skip
    st.markdown("Confusion: rows are the dataset's labels, columns yours")
    st.dataframe(conf, hide_index=True)
    per = (
        scored.group_by("dataset_label")
        .agg(pl.len().alias("n"), (pl.col("human_label") == pl.col("dataset_label")).mean()
             .alias("agreement"))
        .sort("dataset_label")
    )  # fmt: skip
    st.dataframe(
        per,
        hide_index=True,
        column_config={"agreement": st.column_config.NumberColumn(format="percent")},
    )


st.title("Human baseline")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    labels = d.facets(key)["labels"]
    store = HumanLabels.for_index(d.index())
    if not labels:
        st.info("This dataset has no labels to compare with.")
        st.stop()
    hb = st.session_state.get("hb")
    if hb is None or hb["i"] >= len(hb["items"]):
        st.markdown("You will see random images **without their labels**; pick the label you "
                    "think is right. Answers are saved beside the index "
                    f"(`{store.path.name}`) for the training module to compare against.")  # fmt: skip
        c1, c2 = st.columns(2)
        n = c1.number_input("Images", 5, 500, 20, step=5, key="hb_n")
        splits = c2.multiselect("From splits", d.facets(key)["splits"], key="hb_splits",
                                placeholder="all splits")  # fmt: skip
        st.button("Start", type="primary", on_click=start, args=(int(n), splits), key="hb_start")
        if hb is not None and hb["answers"]:
            report(pl.DataFrame(hb["answers"]), "This session")
    else:
        item = hb["items"][hb["i"]]
        st.progress(hb["i"] / len(hb["items"]), text=f"Image {hb['i'] + 1} of {len(hb['items'])}")
        left, right = st.columns([2, 3])
        with left:
            img = w.full_image(d.index().root, item["path"])
            if img is None:
                img = d.thumbnails(key, (item["file_id"],)).get(item["file_id"])
            if img is not None:
                st.image(img, width=320)
        with right:
            st.markdown("**Which label is this?**")
            choices = [*labels, CANT_TELL]
            if len(choices) <= 24:
                cols = st.columns(6)
                for i, lab in enumerate(choices):
                    cols[i % 6].button(lab, key=f"hb_ans_{hb['i']}_{lab}", on_click=answer,
                                       args=(lab,), width="stretch")  # fmt: skip
            else:
                pick = st.selectbox("Label", choices, key=f"hb_pick_{hb['i']}")
                st.button("Answer", on_click=answer, args=(pick,), key=f"hb_go_{hb['i']}")
            if st.button("Stop here", key="hb_stop"):
                hb["items"] = hb["items"][: hb["i"]]
                st.rerun()
    everyone = store.latest()
    if everyone.height:
        report(everyone, f"All saved answers ({everyone.height}, every session and person)")

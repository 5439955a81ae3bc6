"""Issues: ranked examples per type with their reasons; move a threshold, see the set change.

The recomputation runs every detector in memory (``da.detect(idx, config, write=False)``):
the index is never written from the app. Use ``dataaudit detect PATH --set ...`` to keep it.
"""

from __future__ import annotations

from dataclasses import fields

import data as d
import polars as pl
import streamlit as st
import widgets as w

import dataaudit as da
from dataaudit.detectors.registry import DETECTORS, ISSUE_TYPES

# The settings that move each issue type's threshold (section, name); others: its whole section.
THRESHOLDS: dict[str, list[tuple[str, str]]] = {
    "dark": [("quality", "z"), ("quality", "dark_max_mean"), ("quality", "dark_always_mean"),
             ("quality", "exposure_cv_z")],
    "light": [("quality", "z"), ("quality", "light_min_mean"), ("quality", "light_always_mean"),
              ("quality", "exposure_cv_z")],
    "blurry": [("quality", "blurry_z"), ("quality", "blurry_max_sharpness")],
    "low_information": [("quality", "low_info_max_contrast"), ("quality", "flat_contrast")],
    "grayscale": [("quality", "grayscale_max_share")],
    "odd_size": [("geometry", "unusable_side"), ("geometry", "size_factor"), ("geometry", "z")],
    "odd_aspect_ratio": [("geometry", "aspect_factor"), ("geometry", "z")],
    "outlier": [("semantic", "outlier_z"), ("semantic", "cluster_z"), ("semantic", "cluster_min_size")],
    "label_error": [("semantic", "label_max_own_share")],
    "unusual_mode": [("integrity", "unusual_mode_max_share")],
}  # fmt: skip
SECTION_OF_DETECTOR = {"outliers": "semantic", "label_errors": "semantic"}
PER_PAGE = 36


def settings_for(issue: str, config) -> list[tuple[str, str]]:  # noqa: ANN001
    """The (section, name) pairs shown for ``issue``, limited to what the config has."""
    pairs = THRESHOLDS.get(issue)
    if pairs is None:
        det = next((x for x in DETECTORS if issue in x.issues), None)
        section = SECTION_OF_DETECTOR.get(det.name, det.name) if det else None
        params = getattr(config, section, None) if section else None
        pairs = [(section, f.name) for f in fields(params)] if params is not None else []
    return [(s, n) for s, n in pairs if hasattr(getattr(config, s, None), n)]


def base_config():  # noqa: ANN201 - DetectConfig
    root = d.index().root
    cfg = da.load_config(root)
    return cfg[0] if isinstance(cfg, tuple) else cfg


@st.cache_data(show_spinner="Running the detectors in memory...", max_entries=8)
def recompute(key: str, overrides: tuple[tuple[str, str, object], ...]) -> pl.DataFrame:
    """Flagged (file_id, issue, score, details) under the stored config plus ``overrides``."""
    cfg = base_config()
    values: dict[str, dict[str, object]] = {}
    for section, name, value in overrides:
        values.setdefault(section, {})[name] = value
    if values:
        cfg.update(values, "the app")
    result = da.detect(d.index(), cfg, write=False)
    return result.issues.filter(pl.col("is_issue")).select("file_id", "issue", "score", "details")


st.title("Issues")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    flagged = d.issues(key)
    counts = flagged.group_by("issue").agg(pl.col("file_id").n_unique().alias("flagged"))
    counts = dict(counts.iter_rows())
    summary = pl.DataFrame(
        {
            "issue": list(ISSUE_TYPES),
            "severity": [s for s, _ in ISSUE_TYPES.values()],
            "flagged": [counts.get(t, 0) for t in ISSUE_TYPES],
            "what it means": [desc for _, desc in ISSUE_TYPES.values()],
        }
    ).sort(["flagged", "issue"], descending=[True, False])
    st.dataframe(summary, hide_index=True, width="stretch", height=260)

    types = summary["issue"].to_list()
    st.session_state.setdefault("issues_type", types[0] if types else None)
    w.keep_state("issues_type")
    issue = st.selectbox(
        "Issue type",
        types,
        key="issues_type",
        format_func=lambda t: f"{t} ({counts.get(t, 0)})",
    )
    flagged_t = flagged.filter(pl.col("issue") == issue)
    st.markdown(
        f"**{flagged_t['file_id'].n_unique()} flagged** `{issue}`: {ISSUE_TYPES[issue][1]}. "
        "Ranked by score (1 = most severe); the caption is the reason."
    )
    tab_flagged, tab_near, tab_thr = st.tabs(
        ["Flagged, ranked", "Near misses (not flagged)", "Move a threshold"]
    )
    flagged_ids = set(flagged_t["file_id"].to_list())
    with tab_flagged:
        offset = w.pager("issues", len(flagged_ids), PER_PAGE) if len(flagged_ids) > PER_PAGE else 0
        rows, _ = d.ranked(key, issue, True, PER_PAGE, offset)
        reasons = dict(zip(rows["file_id"].to_list(), rows["details"].to_list(), strict=False))
        w.grid(key, rows, fields=["label", "split", "score"], prefix="iss",
               captions={k: v for k, v in reasons.items() if v})  # fmt: skip
    with tab_near:
        near, n_near = d.ranked(key, issue, False, PER_PAGE)
        if n_near == 0:
            st.caption("This detector stores no ranked candidates below its threshold.")
        else:
            st.caption(
                f"The {near.height} highest-scoring of {n_near:,} images below the threshold."
            )
        reasons = dict(zip(near["file_id"].to_list(), near["details"].to_list(), strict=False))
        w.grid(key, near, fields=["label", "split", "score"], prefix="near",
               captions={k: v for k, v in reasons.items() if v})  # fmt: skip
    with tab_thr:
        cfg = base_config()
        pairs = settings_for(issue, cfg)
        if not pairs:
            st.caption(f"`{issue}` has no threshold to move.")
        else:
            st.caption(
                "Change a setting and press Recompute: every detector runs in memory on the "
                "stored measurements; the index is not written. To keep a setting, run "
                "`dataaudit detect PATH --set section.name=value`."
            )
            with st.form("thresholds"):
                values = []
                for section, name in pairs:
                    current = getattr(getattr(cfg, section), name)
                    kk = f"thr_{section}_{name}"
                    if isinstance(current, bool):
                        v = st.checkbox(f"{section}.{name}", value=current, key=kk)
                    elif isinstance(current, int):
                        v = st.number_input(f"{section}.{name}", value=current, step=1, key=kk)
                    else:
                        v = st.number_input(
                            f"{section}.{name}", value=float(current), format="%.4g", key=kk
                        )
                    if v != current:
                        values.append((section, name, v))
                submitted = st.form_submit_button("Recompute")
            last = f"thr_last_{issue}"
            if submitted:
                st.session_state[last] = tuple(values)
            if last in st.session_state:
                overrides = st.session_state[last]
                new = recompute(key, overrides).filter(pl.col("issue") == issue)
                new_ids = set(new["file_id"].to_list())
                added = new.filter(~pl.col("file_id").is_in(list(flagged_ids)))
                removed = flagged_t.filter(~pl.col("file_id").is_in(list(new_ids)))
                changes = ", ".join(f"{s}.{n} = {v}" for s, n, v in overrides) or "stored config"
                st.markdown(
                    f"With {changes}: **{len(new_ids)} flagged** `{issue}` "
                    f"(stored: {len(flagged_ids)}; **+{added['file_id'].n_unique()} newly "
                    f"flagged, −{removed['file_id'].n_unique()} no longer flagged**)."
                )
                if added.height:
                    st.markdown("Newly flagged")
                    reasons = dict(zip(added["file_id"].to_list(), added["details"].to_list(),
                                       strict=False))  # fmt: skip
                    added = d.with_images(key, added.unique("file_id", maintain_order=True))
                    w.grid(key, added.head(PER_PAGE), fields=["label", "split", "score"],
                           prefix="add", captions=reasons)  # fmt: skip
                if removed.height:
                    st.markdown("No longer flagged")
                    w.grid(key, removed.unique("file_id", maintain_order=True).head(PER_PAGE),
                           fields=["label", "split", "score"], prefix="rem")  # fmt: skip
    w.show_selected(key)

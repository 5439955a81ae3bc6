"""Browse: a sortable, filterable grid of thumbnails; 'open' shows an image with its neighbours."""

from __future__ import annotations

import data as d
import streamlit as st
import widgets as w

from dataaudit.errors import DataAuditError

st.title("Browse")
with w.page_guard():
    key = w.stamp()
    w.busy_banner()
    spec = w.filters_ui("browse", key)
    c1, c2, c3 = st.columns([2, 2, 3])
    st.session_state.setdefault("browse_per_page", 60)
    w.keep_state("browse_per_page")
    per_page = c1.selectbox("Per page", [30, 60, 120, 240], key="browse_per_page")
    shown = c3.multiselect(
        "Fields under each image",
        d.facets(key)["columns"],
        default=[f for f in w.GRID_FIELDS if f in d.facets(key)["columns"]][:4],
        key="browse_fields",
    )
    try:
        total = d.count(key, spec)
    except DataAuditError as exc:
        st.error(f"Filter error: {exc}")
        st.stop()
    with c2:
        offset = w.pager("browse", total, per_page)
    sort_field = spec.get("sort")
    fields = list(dict.fromkeys([*shown, *([sort_field] if sort_field != "path" else [])]))
    st.markdown(
        f"**{total:,} images** match"
        + (
            f", sorted by `{sort_field}`{' descending' if spec.get('descending') else ''}"
            if sort_field
            else ""
        )
    )
    wanted = ("file_id", "path", "label", "split", *fields)
    page = d.images(key, spec, columns=tuple(dict.fromkeys(wanted)), limit=per_page, offset=offset)
    w.grid(key, page, fields=fields, prefix="browse")
    w.show_selected(key)

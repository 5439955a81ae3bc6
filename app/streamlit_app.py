"""dataaudit's review app: run with ``dataaudit app PATH`` (it sets the index and starts Streamlit).

Pages are one file each beside this one; ``widgets.py`` holds what they share.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # pages import widgets.py from this folder
    sys.path.insert(0, str(HERE))

import data as d  # noqa: E402
import widgets as w  # noqa: E402

from dataaudit.errors import DataAuditError, IndexBusyError  # noqa: E402

st.set_page_config(page_title="dataaudit", page_icon=":material/search:", layout="wide")

PAGES = [
    st.Page("overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("browse.py", title="Browse", icon=":material/grid_view:"),
    st.Page("issues.py", title="Issues", icon=":material/warning:"),
    st.Page("duplicates.py", title="Duplicates and leakage", icon=":material/content_copy:"),
    st.Page("map.py", title="Map and outliers", icon=":material/scatter_plot:"),
    st.Page("labels.py", title="Labels", icon=":material/label:"),
    st.Page("human.py", title="Human baseline", icon=":material/person:"),
    st.Page("per_class.py", title="Per-class look", icon=":material/biotech:"),
    st.Page("review.py", title="Review", icon=":material/fact_check:"),
    st.Page("sql.py", title="SQL", icon=":material/terminal:"),
]


def sidebar() -> None:
    try:
        idx = d.index()
    except DataAuditError as exc:
        st.error(str(exc))
        st.stop()
    st.sidebar.caption(f"Index: `{idx.db_path}`")
    key = w.stamp()
    if st.session_state.get("_busy"):
        st.sidebar.warning(st.session_state["_busy"])
    try:
        runs = d.sql(key, "SELECT kind, status, ended_at FROM runs ORDER BY run_id DESC LIMIT 1")
        if runs.height:
            r = runs.row(0, named=True)
            st.sidebar.caption(f"Last run: {r['kind']} ({r['status']}) {r['ended_at'] or ''}")
    except IndexBusyError:
        pass
    st.sidebar.caption(f"Decisions in force: {d.decisions().height} (see Review)")
    w.keep_state("who")
    st.sidebar.text_input("Your name (recorded with decisions)", key="who")


nav = st.navigation(PAGES)
st.session_state["_run_token"] = uuid.uuid4().hex  # stamp() is computed once per run
sidebar()
goto = st.session_state.pop("_goto", None)
if goto:
    st.switch_page(goto)
nav.run()

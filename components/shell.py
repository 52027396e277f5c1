"""Keeping every page inside app.py's shell (navigation + sidebar model picker)."""
from __future__ import annotations

import streamlit as st


def ensure_app_shell() -> None:
    """Rerun through app.py if Streamlit ran this page file on its own.

    A fresh server that is first opened on a deep link (/logit_lens) serves it in Streamlit's old
    pages/-directory mode, which runs the page file without app.py: no sidebar, no model picker.
    app.py's st.navigation turns that mode off; until it has run once, switch it off here and rerun,
    which executes app.py with the same page (its url_path equals the file's stem).
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()

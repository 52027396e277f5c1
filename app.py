"""Logitscope entry point: page config, navigation, and the sidebar model/checkpoint picker."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from components.links import share_link
from components.methods import METHODS
from components.model_state import sidebar_model_picker

ROOT = Path(__file__).resolve().parent  # `streamlit run` puts this folder on sys.path; an installed copy imports
                                        # the packages from site-packages

st.set_page_config(page_title="Logitscope", page_icon="🔬", layout="wide")
pages = [st.Page(str(ROOT / "pages/home.py"), title="Home", icon="🏠", default=True)]
pages += [st.Page(str(ROOT / m.page_file), title=m.title, icon=m.icon, url_path=Path(m.page_file).stem)
          for m in METHODS.values()]  # the registry, in menu order
nav = st.navigation(pages)
sidebar_model_picker()
try:
    nav.run()
finally:  # also when the page stops early (st.stop): its settings are in the URL by now
    share_link()

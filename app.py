"""Logitscope entry point: page config, navigation, and the sidebar model/checkpoint picker."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.links import share_link  # noqa: E402
from components.model_state import sidebar_model_picker  # noqa: E402

# Analysis pages, in menu order; a page appears once its file exists (each comes with its own issue).
ANALYSIS_PAGES = [
    ("pages/logit_lens.py", "Logit lens", "🔭"),
    ("pages/logit_flow.py", "Logit flow", "🌊"),
    ("pages/steering.py", "Steering and personas", "🧭"),
    ("pages/confidence_neurons.py", "Confidence neurons", "🌡️"),
    ("pages/checkpoint_shift.py", "Checkpoint shift", "🔀"),
    ("pages/ood.py", "OOD separability", "🧪"),
]

st.set_page_config(page_title="Logitscope", page_icon="🔬", layout="wide")
pages = [st.Page(str(ROOT / "pages/home.py"), title="Home", icon="🏠", default=True)]
pages += [st.Page(str(ROOT / path), title=title, icon=icon, url_path=Path(path).stem)
          for path, title, icon in ANALYSIS_PAGES if (ROOT / path).is_file()]
nav = st.navigation(pages)
sidebar_model_picker()
try:
    nav.run()
finally:  # also when the page stops early (st.stop): its settings are in the URL by now
    share_link()

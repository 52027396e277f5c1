"""AppTest fixture: two prompt-set inputs on one page (keys must not clash); writes what each returned."""
import os

import streamlit as st

from analysis.prompts import prompt_set_from_text
from components.prompt_input import prompt_set_input, render_like

first = prompt_set_input("first", default_builtin=os.environ.get("LOGITSCOPE_TEST_DEFAULT_BUILTIN") or None)
st.text(f"first: {'none' if first is None else len(first)}")
second = prompt_set_input("second", allow_typed=False)
st.text(f"second: {'none' if second is None else len(second)}")
if first is not None:
    st.text(f"first sha: {first.sha256}")
# Another set rendered as the first input renders its own (the OOD page does this for its OOD sets).
st.text(f"like first: {render_like('first', prompt_set_from_text('Hi')).prompts!r}")

"""The prompt-set input every page uses: typed prompts, a built-in set, or an uploaded file.

All parsing and validation lives in analysis.prompts; this module only draws widgets and shows
the engine's messages. Prompt text is shown as data (st.dataframe, st.caption of counts), never
as HTML or markdown.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from components.charts.text import md_literal

from analysis.errors import LogitscopeError
from analysis.prompts import (
    OPTIONAL_FIELDS,
    PromptSet,
    builtin_sets,
    load_builtin,
    parse_prompt_file,
    prompt_set_from_text,
)

TYPED, BUILTIN, UPLOAD = "Typed", "Built-in", "Upload"
_PREVIEW_ROWS = 200
_UPLOAD_HELP = (
    "A .txt file with one prompt per line, a .csv file with a header row and a 'prompt' column, or a "
    '.jsonl file with one JSON object per line and a "prompt" field. Optional columns/fields: '
    + ", ".join(OPTIONAL_FIELDS)
    + "."
)


@st.cache_data(max_entries=16, show_spinner=False)
def _parse_upload(filename: str, data: bytes) -> PromptSet:
    # Cached on the file's bytes, so a rerun does not re-parse a large upload. Errors are not cached.
    return parse_prompt_file(filename, data)


def _k(key: str, part: str) -> str:
    return f"{key}__prompts_{part}"


def prompt_set_input(
    key: str,
    *,
    default_builtin: str | None = None,
    allow_typed: bool = True,
    help: str | None = None,
) -> PromptSet | None:
    """Draw the prompt-set picker; return the validated PromptSet, or None (nothing chosen or invalid).

    `key` namespaces every widget, so the input can appear several times on a page. Errors are shown
    with st.error (the engine's sentence, never a traceback) and give None.
    """
    sources = ([TYPED] if allow_typed else []) + [BUILTIN, UPLOAD]
    try:
        sets = builtin_sets()
    except OSError:
        sets = {}
    index = sources.index(BUILTIN) if (default_builtin and default_builtin in sets) else 0
    source = st.radio(
        "Prompts",
        sources,
        index=index,
        horizontal=True,
        key=_k(key, "source"),
        help=help,
    )

    prompt_set: PromptSet | None = None
    try:
        if source == TYPED:
            text = st.text_area(
                "Prompts, one per line",
                key=_k(key, "typed"),
                placeholder="The capital of France is",
                height=100,
            )
            if not text or not text.strip():
                st.caption("Type a prompt to start (one prompt per line).")
                return None
            prompt_set = prompt_set_from_text(text)
        elif source == BUILTIN:
            if not sets:
                st.info("No built-in prompt sets are installed (data/prompts/ is empty).")
                return None
            names = list(sets)
            choice = st.selectbox(
                "Built-in prompt set",
                names,
                index=names.index(default_builtin) if default_builtin in sets else 0,
                key=_k(key, "builtin"),
            )
            if choice is None:
                return None
            prompt_set = load_builtin(choice)
        else:
            uploaded = st.file_uploader(
                "Prompt file",
                type=["txt", "csv", "jsonl"],
                key=_k(key, "upload"),
                help=_UPLOAD_HELP,
            )
            if uploaded is None:
                st.caption("Upload a .txt, .csv or .jsonl file.")
                return None
            prompt_set = _parse_upload(uploaded.name, uploaded.getvalue())
    except LogitscopeError as err:
        st.error(str(err))
        return None

    _describe(prompt_set)
    return prompt_set


def _describe(prompt_set: PromptSet) -> None:
    """Count, notes and a preview table (plain text cells)."""
    n = len(prompt_set)
    summary = f"{n:,} prompt{'s' if n != 1 else ''}"
    groups = prompt_set.groups()
    if groups:
        summary += f" in {len(groups):,} group{'s' if len(groups) != 1 else ''}"
    if any(t is not None for t in prompt_set.targets):
        summary += ", with targets"
    st.caption(summary)
    for note in prompt_set.notes:
        st.caption(md_literal(note))
    with st.expander("Preview", expanded=False):
        st.dataframe(_preview_frame(prompt_set), hide_index=True)
        if n > _PREVIEW_ROWS:
            st.caption(f"Showing the first {_PREVIEW_ROWS:,} of {n:,} prompts.")


def _preview_frame(prompt_set: PromptSet) -> pd.DataFrame:
    rows = prompt_set.rows[:_PREVIEW_ROWS]
    columns = {"line": [r.row for r in rows], "prompt": [r.prompt for r in rows]}
    for field in OPTIONAL_FIELDS:
        values = [getattr(r, field) for r in rows]
        if any(v is not None for v in values):
            columns[field] = values
    return pd.DataFrame(columns)

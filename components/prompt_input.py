"""The prompt-set input every page uses: typed prompts, a built-in set, or an uploaded file.

All parsing and validation lives in analysis.prompts; this module only draws widgets and shows
the engine's messages. Prompt text is shown as data (st.dataframe, st.caption of counts), never
as HTML or markdown.

Prompts run exactly as given. Typed text and .txt files are one prompt per line (a prompt there
cannot hold a line break); .csv quoted fields and .jsonl strings keep every character. Rows given
as chat messages (.jsonl "messages") are rendered with checkpoint A's chat template, and the
"Apply the chat template" checkbox (shown when A's tokenizer has one) wraps plain prompts as one
user turn. The preview shows the exact text (line breaks as ↵, ␍) and the tokens A runs.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.core.errors import LogitscopeError, PromptSetError
from analysis.core.wording import plural
from analysis.prompts import (
    OPTIONAL_FIELDS,
    PromptSet,
    apply_chat_template,
    builtin_sets,
    has_chat_template,
    load_builtin,
    parse_prompt_file,
    prompt_set_from_text,
)
from analysis.prompts import store as prompt_store
from components.charts.text import decode_token, md_literal, visible
from components.model_state import current_spec, load_cached

TYPED, BUILTIN, UPLOAD, LINKED = "Typed", "Built-in", "Upload", "From the link"
_PREVIEW_ROWS = 200
_PREVIEW_TOKENS = 300  # tokens listed per row in the preview (the count column always has them all)
_UPLOAD_HELP = (
    "A .txt file with one prompt per line (a prompt there cannot contain a line break), a .csv file with "
    "a header row and a 'prompt' column (quoted fields keep their line breaks), or a .jsonl file with one "
    'JSON object per line and a "prompt" field, or a "messages" list of {"role": ..., "content": ...} '
    "turns rendered with checkpoint A's chat template. Prompts run exactly as given (spaces and "
    '"\\n" kept): use .jsonl for prompts with newlines. Optional columns/fields: '
    + ", ".join(OPTIONAL_FIELDS)
    + "."
)
_TYPED_HELP = (
    "One prompt per line, run exactly as typed: a prompt here cannot contain a line break. For prompts "
    "with newlines (such as a chat template's text) upload a .jsonl file."
)
_CHAT_HELP = (
    "Wrap each plain prompt as one user turn with checkpoint A's chat template, ready for the "
    "assistant's answer. Rows given as messages (.jsonl) always use the template. Off: plain prompts "
    "run exactly as given."
)
_BREAKS = str.maketrans({"\n": "↵", "\r": "␍", "\t": "⇥"})


@st.cache_data(max_entries=16, show_spinner=False)
def parse_upload(filename: str, data: bytes) -> PromptSet:
    """The prompt set of an uploaded file, cached on the file's bytes (a rerun does not re-parse a large upload;
    errors are not cached)."""
    return parse_prompt_file(filename, data)


@st.cache_data(max_entries=16, show_spinner=False)
def _render_cached(_prompt_set: PromptSet, sha256: str, name: str, notes: tuple, spec, wrap_plain: bool) -> PromptSet:
    # Keyed on the set's content, name and notes and on A's spec; the tokenizer is re-fetched from the model cache.
    return apply_chat_template(_prompt_set, load_cached(spec)[0].tokenizer, wrap_plain=wrap_plain)


def _upload_cap_mb() -> int:
    """The server's upload cap (server.maxUploadSize, MB): the browser refuses bigger files before the app sees them."""
    try:
        return int(st.get_option("server.maxUploadSize"))
    except (RuntimeError, TypeError, ValueError):
        return 200


def _k(key: str, part: str) -> str:
    return f"{key}__prompts_{part}"


def _apply_link(key: str, sets: dict) -> None:
    """Put the prompt set a link names ("<key>.set" = builtin:<name> or a stored set's sha256, "<key>.chat") into
    this input's widgets, once per link; a set this machine does not have is said, never guessed."""
    value = st.query_params.get(f"{key}.set")
    chat = st.query_params.get(f"{key}.chat")
    memo = _k(key, "link_applied")
    if value is None or st.session_state.get(memo) == (value, chat):
        return
    st.session_state[memo] = (value, chat)
    if chat is not None:
        st.session_state[_k(key, "chat")] = chat == "true"
    if value.startswith("builtin:"):
        name = value[len("builtin:"):]
        if name in sets:
            st.session_state[_k(key, "source")] = BUILTIN
            st.session_state[_k(key, "builtin")] = name
        else:
            st.warning(md_literal(f"The link's built-in prompt set '{name}' is not installed here."))
        return
    try:
        stored = prompt_store.load(value)
    except LogitscopeError as err:
        st.warning(str(err))
        return
    if stored is None:
        st.warning(md_literal(f"The link's prompt set ({value[:12]}…) is not stored on this machine: choose the "
                              "prompts again (typed and uploaded sets are kept where they were first used)."))
        return
    st.session_state[_k(key, "linked")] = value
    st.session_state[_k(key, "source")] = LINKED


def _sync_link(key: str, source: str, raw: PromptSet, wrap_plain: bool) -> None:
    """Make the URL name this input's set: a built-in by name, any other by its content hash (stored here)."""
    value = f"builtin:{st.session_state.get(_k(key, 'builtin'))}" if source == BUILTIN else (
        raw.sha256 if source == LINKED else prompt_store.save(raw))
    chat = "true" if wrap_plain else None
    if st.query_params.get(f"{key}.set") != value:
        st.query_params[f"{key}.set"] = value
    if chat is None and f"{key}.chat" in st.query_params:
        del st.query_params[f"{key}.chat"]
    elif chat is not None and st.query_params.get(f"{key}.chat") != chat:
        st.query_params[f"{key}.chat"] = chat
    st.session_state[_k(key, "link_applied")] = (value, chat)


def _checkpoint_a():
    """Checkpoint A (a LoadedModel) from the model cache, or None; a page has loaded it already and shows its errors."""
    try:
        spec = current_spec("A")
        return load_cached(spec)[0] if spec is not None else None
    except Exception:  # noqa: BLE001 - require_models() on the page reports a model that does not load
        return None


def chat_template_on(key: str) -> bool:
    """Whether the "Apply the chat template" box of the prompt input `key` is ticked (False when it is not shown)."""
    return bool(st.session_state.get(_k(key, "chat"), False))


def render_like(key: str, prompt_set: PromptSet) -> PromptSet:
    """Another set (e.g. OOD sets beside an ID input) rendered as the prompt input `key` renders its own:
    messages always, plain prompts wrapped when its box is ticked. Raises PromptSetError as the input would."""
    return _render(prompt_set, _checkpoint_a(), chat_template_on(key))


def _render(prompt_set: PromptSet, lm, wrap_plain: bool) -> PromptSet:
    """The set rendered with A's chat template where it has messages (or wrap_plain), else unchanged."""
    if not prompt_set.needs_template and not wrap_plain:
        return prompt_set
    if lm is None:
        raise PromptSetError(
            f"{prompt_set.name} gives chat messages, which are rendered with checkpoint A's chat template: "
            "load checkpoint A in the sidebar first."
        )
    return _render_cached(prompt_set, prompt_set.sha256, prompt_set.name, prompt_set.notes, lm.spec, wrap_plain)


def _typed_set(key: str, sets: dict, default_builtin: str | None, upload: list[str]) -> PromptSet | None:
    text = st.text_area(
        "Prompts, one per line",
        key=_k(key, "typed"),
        placeholder="The capital of France is",
        height=100,
        help=_TYPED_HELP,
    )
    if not text or not text.strip():
        st.caption("Type a prompt to start (one prompt per line; a line break ends a prompt).")
        return None
    return prompt_set_from_text(text)


def _builtin_set(key: str, sets: dict, default_builtin: str | None, upload: list[str]) -> PromptSet | None:
    if not sets:
        st.info("No built-in prompt sets are installed (data/prompts/ is empty).")
        return None
    names = list(sets)
    if st.session_state.get(_k(key, "builtin")) not in names:
        st.session_state[_k(key, "builtin")] = default_builtin if default_builtin in sets else names[0]
    choice = st.selectbox("Built-in prompt set", names, key=_k(key, "builtin"))
    return None if choice is None else load_builtin(choice)


def _linked_set(key: str, sets: dict, default_builtin: str | None, upload: list[str]) -> PromptSet | None:
    sha = st.session_state[_k(key, "linked")]
    prompt_set = prompt_store.load(sha)
    if prompt_set is None:
        st.warning(f"The linked prompt set ({sha[:12]}…) is no longer stored on this machine.")
        return None
    st.caption(md_literal(f"From the link: {prompt_set.name} ({plural(len(prompt_set), 'prompt')}, {sha[:12]}…)."))
    return prompt_set


def _uploaded_set(key: str, sets: dict, default_builtin: str | None, upload: list[str]) -> PromptSet | None:
    uploaded = st.file_uploader(
        "Prompt file",
        type=["txt", "csv", "jsonl"],
        key=_k(key, "upload"),
        help=_UPLOAD_HELP,
    )
    if uploaded is None:
        st.caption("Upload a .txt, .csv or .jsonl file.")
        return None
    upload.append(uploaded.name)
    return parse_upload(uploaded.name, uploaded.getvalue())


_SOURCES = {TYPED: _typed_set, BUILTIN: _builtin_set, LINKED: _linked_set, UPLOAD: _uploaded_set}


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
    try:
        sets = builtin_sets()
    except OSError:
        sets = {}
    _apply_link(key, sets)
    sources = ([TYPED] if allow_typed else []) + [BUILTIN, UPLOAD]
    if st.session_state.get(_k(key, "linked")):
        sources.append(LINKED)
    elif st.session_state.get(_k(key, "source")) == LINKED:
        del st.session_state[_k(key, "source")]
    index = sources.index(BUILTIN) if (default_builtin and default_builtin in sets) else 0
    if _k(key, "source") not in st.session_state:  # the first default; a link or the user sets it after that
        st.session_state[_k(key, "source")] = sources[index]
    source = st.radio("Prompts", sources, horizontal=True, key=_k(key, "source"), help=help)

    lm_a = _checkpoint_a()
    tokenizer = lm_a.tokenizer if lm_a is not None else None
    wrap_plain = False
    if tokenizer is not None and has_chat_template(tokenizer):
        wrap_plain = st.checkbox("Apply the chat template", key=_k(key, "chat"), help=_CHAT_HELP)

    upload: list[str] = []  # the name of the uploaded file, when the source is an upload
    try:
        prompt_set = _SOURCES[source](key, sets, default_builtin, upload)
        if prompt_set is None:
            return None
        _sync_link(key, source, prompt_set, wrap_plain)
        prompt_set = _render(prompt_set, lm_a, wrap_plain)
    except LogitscopeError as err:
        st.error(str(err))
        if upload:
            st.caption(md_literal(f"No prompt file is in use: {upload[0]} was refused, and no earlier upload "
                                  "is used in its place."))
        return None
    if upload:
        # The browser refuses a file over the server's upload cap without telling the app, and the uploader then
        # keeps the earlier file: say which file runs, so a refused upload never passes for the one in use.
        st.caption(md_literal(f"In use: {upload[0]} ({plural(len(prompt_set), 'prompt')}). A file the uploader refuses "
                              f"(over {_upload_cap_mb()} MB) does not replace it."))

    _describe(prompt_set, tokenizer)
    return prompt_set


def _describe(prompt_set: PromptSet, tokenizer=None) -> None:
    """Count, notes and a preview table (plain text cells)."""
    n = len(prompt_set)
    summary = plural(n, "prompt")
    groups = prompt_set.groups()
    if groups:
        summary += f" in {plural(len(groups), 'group')}"
    if any(t is not None for t in prompt_set.targets):
        summary += ", with targets"
    st.caption(summary)
    for note in prompt_set.notes:
        st.caption(md_literal(note))
    with st.expander("Preview", expanded=False):
        lines = tuple(r.row for r in prompt_set.rows[:_PREVIEW_ROWS])
        spec = _checkpoint_a().spec if tokenizer is not None else None
        st.dataframe(_preview_cached(prompt_set, prompt_set.sha256, lines, spec), hide_index=True)
        legend = "Exact text: ↵ newline, ␍ carriage return, ⇥ tab."
        if tokenizer is not None:
            legend += " tokens: what checkpoint A runs, special tokens included (␣ space), split by ' | '."
        st.caption(legend)
        if n > _PREVIEW_ROWS:
            st.caption(f"Showing the first {_PREVIEW_ROWS:,} of {n:,} prompts.")


@st.cache_data(max_entries=16, show_spinner=False)
def _preview_cached(_prompt_set: PromptSet, sha256: str, lines: tuple, spec) -> pd.DataFrame:
    # Keyed on the content, the line numbers (not in the hash) and A's spec (None: no tokenizer).
    return preview_frame(_prompt_set, load_cached(spec)[0].tokenizer if spec is not None else None)


def _shown(value: str | None) -> str | None:
    """Text with its line breaks and tabs made visible (a table cell would hide them); spaces stay spaces."""
    return None if value is None else value.translate(_BREAKS)


def preview_frame(prompt_set: PromptSet, tokenizer=None, limit: int = _PREVIEW_ROWS,
                  max_tokens: int = _PREVIEW_TOKENS) -> pd.DataFrame:
    """The first `limit` rows as plain text cells: line, prompt (↵ ␍ ⇥ marked), the optional fields and, with a
    tokenizer, the token count and the first `max_tokens` tokens of what runs (tokenized with special tokens, as
    analyses encode), each token's text with ␣ ↵ ⇥ ␍ for whitespace, so the " | " between tokens is unambiguous."""
    rows = prompt_set.rows[:limit]
    columns: dict[str, list] = {
        "line": [r.row for r in rows],
        "prompt": [_shown(r.prompt) if r.messages is None else "(chat messages, not rendered)" for r in rows],
    }
    for field in OPTIONAL_FIELDS:
        values = [getattr(r, field) for r in rows]
        if any(v is not None for v in values):
            columns[field] = [_shown(v) for v in values]
    if tokenizer is not None and all(r.messages is None for r in rows):
        ids = [list(tokenizer(r.prompt, add_special_tokens=True)["input_ids"]) for r in rows]
        columns["n_tokens"] = [len(x) for x in ids]
        columns["tokens"] = [" | ".join(visible(decode_token(tokenizer, i), max_len=None) for i in x[:max_tokens])
                             + (f" | … {len(x) - max_tokens:,} more" if len(x) > max_tokens else "") for x in ids]
    return pd.DataFrame(columns)

"""Token and prompt text for figures: HTML-escaped (plotly renders a subset of HTML) with visible whitespace."""
from __future__ import annotations

import html

from analysis.core.tokens import decode as decode_token  # noqa: F401  (the one token decoder, re-exported for the UI)

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible(text: str, *, max_len: int | None = 24) -> str:
    """Whitespace made visible (␣ ↵ ⇥), truncated with … to ``max_len`` characters; NOT yet escaped."""
    s = "".join(_VISIBLE.get(ch, ch) for ch in text)
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return s


def token_label(token: str, *, max_len: int | None = 24) -> str:
    """A token string safe to put in a plotly figure (text, hover, annotation, axis tick, Sankey label)."""
    return html.escape(visible(token, max_len=max_len), quote=True)


def safe_text(text: str, *, max_len: int | None = 200) -> str:
    """Any user text (prompt, name) escaped for a plotly figure, truncated to ``max_len``."""
    if max_len is not None and len(text) > max_len:
        text = text[: max_len - 1] + "…"
    return html.escape(text, quote=True).replace("\n", "<br>")


def one_line(text: str, *, max_len: int | None = 60) -> str:
    """User text (a prompt) for a title: its line breaks shown as ↵ on one line (a title's lines are its own), then
    escaped and truncated like ``safe_text``."""
    return safe_text(text.replace("\r\n", "\n").replace("\n", " ↵ "), max_len=max_len)


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:")


def md_literal(text: str) -> str:
    """``text`` with every markdown-special character backslash-escaped, for st.caption/st.info/st.warning.

    Those render markdown: a note that quotes user text (a column name, a target) must show literally,
    never as a link, an image or formatting.
    """
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text)).replace("\n", "  \n")

"""Token and prompt text for figures: HTML-escaped (plotly renders a subset of HTML) with visible whitespace."""
from __future__ import annotations

import html

_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
# Byte-level BPE tokenizers (GPT-2 style) show a leading space as "Ġ" and a newline as "Ċ".
_BYTE_LEVEL = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t", "č": "\r"}


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


def decode_token(tokenizer, token_id: int) -> str:
    """The text a single token id stands for (leading spaces kept), for display."""
    try:
        return tokenizer.decode([int(token_id)], clean_up_tokenization_spaces=False)
    except TypeError:
        return tokenizer.decode([int(token_id)])
    except Exception:  # noqa: BLE001 - a tokenizer without decode still gets a label
        tok = tokenizer.convert_ids_to_tokens(int(token_id))
        return "".join(_BYTE_LEVEL.get(ch, ch) for ch in str(tok))


_MD_SPECIAL = set("\\`*_{}[]()#+-.!|<>~$:")


def md_literal(text: str) -> str:
    """``text`` with every markdown-special character backslash-escaped, for st.caption/st.info/st.warning.

    Those render markdown: a note that quotes user text (a column name, a target) must show literally,
    never as a link, an image or formatting.
    """
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text)).replace("\n", "  \n")

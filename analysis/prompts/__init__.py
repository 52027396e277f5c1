r"""Prompt sets: parse, validate and describe the prompts every page runs on.

Accepted sources: typed text (one prompt per line), .txt (one prompt per line), .csv (a header
row with a `prompt` column) and .jsonl (one JSON object per line with a "prompt" field, or a
"messages" field: a list of {"role": ..., "content": ...} turns). Optional columns/fields: target,
competitor, label, group, response.

Typed text and .txt files are one prompt per line, so such a prompt can never hold a line break
(a trailing newline after a chat template's assistant header included): give prompts with
newlines in .jsonl ("\n" inside the string) or as quoted .csv fields, which keep every character.

Every problem raises PromptSetError with a sentence that names the file, the line and the
problem; anything skipped or ignored is reported in PromptSet.notes, never dropped silently.
Row numbers are the 1-based line of the source file where the row starts (so in a CSV the
header is line 1, matching a spreadsheet's row numbers).

Prompt text is data: it is never interpreted (no HTML, no escapes). Prompts, targets and responses
are kept character for character (leading/trailing spaces, "\r" and "\n" inside a CSV quoted
field or a JSON string); only the line break that ends a line of the file format itself goes.

Rows given as chat messages have no text until a tokenizer's chat template renders them:
apply_chat_template(prompt_set, tokenizer, wrap_plain=...) returns the set with every prompt the
exact rendered text (and, with wrap_plain, plain prompts wrapped as one user turn). Until then
PromptSet.prompts raises PromptSetError, so an unrendered set can never run by accident.

Where the parts live: the data types in types.py, per-row validation in validation.py, file parsing in parsing.py,
the built-in sets in builtin.py, chat templates in chat.py, the context check in context.py and the local store of
typed and uploaded sets in store.py. The package exports its public API here.

This package is engine code: no streamlit import.
"""
from analysis.prompts.builtin import builtin_sets, load_builtin
from analysis.prompts.chat import adds_bos, apply_chat_template, has_chat_template, render_chat, tokenizer_name
from analysis.prompts.context import check_context, token_lengths
from analysis.prompts.parsing import parse_prompt_file, prompt_set_from_text
from analysis.prompts.types import OPTIONAL_FIELDS, PromptRow, PromptSet

__all__ = [
    "OPTIONAL_FIELDS",
    "PromptRow",
    "PromptSet",
    "adds_bos",
    "apply_chat_template",
    "builtin_sets",
    "check_context",
    "has_chat_template",
    "load_builtin",
    "parse_prompt_file",
    "prompt_set_from_text",
    "render_chat",
    "token_lengths",
    "tokenizer_name",
]

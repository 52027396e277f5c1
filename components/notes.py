"""Notes collapse: per-prompt notes of one kind become a single note that lists the affected prompts (pure, no
streamlit), so a set with 8 multi-token targets shows one warning, not 8.

A per-prompt note reads "[A: |A, ]Prompt N: <body>" (the lens engine numbers its notes "Prompt N: ", reports prefix
the checkpoint, "A: " or "A, "). Notes with the same scope and kind are grouped:

- "The target ' Tokyo Tower' is 2 tokens (' Tokyo' | ' Tower'); its first token ' Tokyo' is used." (per prompt)
  -> "8 prompts have a multi-token target; each uses its first token: prompt 1 ' Tokyo Tower' = ' Tokyo' | ' Tower';
  ..."
- "Target = the model's top-1 prediction ' the'." (per prompt) -> "3 prompts have no target; each uses the model's
  top-1 prediction: prompt 1 ' the'; ..."
- any other body repeated word for word -> "Prompts 1, 4 and 7: <body>".

A group of one keeps its note as it was; notes that name no prompt stay as they are; each group takes the place of
its first note, so the order is stable. Listing stops at ``max_listed`` prompts, then "... and N more".
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from analysis.core.wording import plural

MAX_LISTED = 10

_PER_PROMPT = re.compile(r"(?P<scope>(?:[A-Z][\w-]{0,15}[:,] )?)(?P<p>[Pp])rompt (?P<i>\d+): (?P<body>.+)", re.S)
_MULTI = re.compile(r"The (?P<what>\w+) (?P<text>.+) is (?P<n>\d+) tokens \((?P<pieces>.+)\); "
                    r"its first token (?P<first>.+) is used\.", re.S)
_TOP1 = re.compile(r"Target = the model's top-1 prediction (?P<tok>.+)\.", re.S)


def _classify(note: str) -> tuple[tuple, tuple[int, str]] | None:
    """(group key, (prompt number, detail)) of a per-prompt note, or None for a note that names no prompt."""
    m = _PER_PROMPT.fullmatch(note)
    if m is None:
        return None
    scope, body, i = m["scope"], m["body"], int(m["i"])
    multi = _MULTI.fullmatch(body)
    if multi is not None:
        return (scope, "multi", multi["what"]), (i, f"{multi['text']} = {multi['pieces']}")
    top1 = _TOP1.fullmatch(body)
    if top1 is not None:
        return (scope, "top1"), (i, top1["tok"])
    return (scope, "same", body, m["p"]), (i, "")


def _listed(items: list[tuple[int, str]], max_listed: int, sep: str) -> str:
    shown = [f"prompt {i} {detail}" if detail else str(i) for i, detail in items[:max_listed]]
    rest = len(items) - len(shown)
    return sep.join(shown) + (f"{sep}... and {rest} more" if rest else "")


def _merged(key: tuple, items: list[tuple[int, str]], max_listed: int) -> str:
    scope, kind, n = key[0], key[1], len(items)
    if kind == "multi":
        return (f"{scope}{plural(n, 'prompt')} have a multi-token {key[2]}; each uses its first token: "
                f"{_listed(items, max_listed, '; ')}.")
    if kind == "top1":
        return (f"{scope}{plural(n, 'prompt')} have no target; each uses the model's top-1 prediction: "
                f"{_listed(items, max_listed, '; ')}.")
    return f"{scope}{key[3]}rompts {_listed(items, max_listed, ', ')}: {key[2]}"


def collapse_notes(notes: Sequence[str], max_listed: int = MAX_LISTED) -> list[str]:
    """The notes (duplicates dropped) with each group of per-prompt notes of one kind merged into one note that
    lists the affected prompts, in the place of the group's first note."""
    order: list[str | tuple] = []
    groups: dict[tuple, list[tuple[int, str]]] = {}
    first: dict[tuple, str] = {}
    for note in dict.fromkeys(notes):
        found = _classify(note)
        if found is None:
            order.append(note)
            continue
        key, item = found
        if key not in groups:
            groups[key], first[key] = [], note
            order.append(key)
        groups[key].append(item)
    return [entry if isinstance(entry, str)
            else first[entry] if len(groups[entry]) == 1
            else _merged(entry, groups[entry], max_listed)
            for entry in order]

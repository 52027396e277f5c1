"""Steering contrast: which rows of a prompt set are the positive and the negative side, and how they pair up.

Two groups (the ``group`` field, paired where rows share a ``label``), or, without groups, pairs of rows that share
a ``label`` (pair id) with the first row of each pair positive.
"""
from __future__ import annotations

from dataclasses import dataclass

from analysis.core.errors import InputError
from analysis.prompts import PromptRow, PromptSet


# --------------------------------------------------------------------------------------------
# The contrast: which rows are positive and negative, and how they pair up
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Contrast:
    """Positive/negative rows of a prompt set; ``pairs`` [(i_pos, i_neg)] index into pos/neg (may be empty)."""

    positive_name: str
    negative_name: str
    pos: tuple[PromptRow, ...]
    neg: tuple[PromptRow, ...]
    pairs: tuple[tuple[int, int], ...]


def split_contrast(ps: PromptSet, positive: str | None = None, negative: str | None = None) -> Contrast:
    """Split a prompt set into its positive and negative side (groups, or label pairs when there are no groups)."""
    groups = ps.groups()
    if groups or positive is not None or negative is not None:
        if positive is None or negative is None:
            rest = [g for g in groups if g not in (positive, negative)]
            positive = positive if positive is not None else (rest.pop(0) if rest else None)
            negative = negative if negative is not None else (rest.pop(0) if rest else None)
        if positive is None or negative is None:
            raise InputError(
                f"The prompt set '{ps.name}' needs two groups (the `group` field) for a contrast, but it has "
                f"{len(groups)} ({', '.join(repr(g) for g in groups) or 'none'}). Add a second group, or give pairs "
                "with the `label` field (pair id) and no groups.")
        if positive == negative:
            raise InputError(f"The positive and the negative group are both '{positive}'; pick two different groups.")
        pos = tuple(r for r in ps.rows if r.group == positive)
        neg = tuple(r for r in ps.rows if r.group == negative)
        for name, side, rows in ((positive, "positive", pos), (negative, "negative", neg)):
            if not rows:
                raise InputError(
                    f"The {side} group '{name}' is empty: the prompt set '{ps.name}' has no rows in it "
                    f"(groups: {', '.join(repr(g) for g in groups) or 'none'}). Each side needs at least one prompt.")
        pos_by_label = {r.label: i for i, r in enumerate(pos) if r.label is not None}
        pairs = tuple((pos_by_label[r.label], j) for j, r in enumerate(neg) if r.label in pos_by_label)
        return Contrast(positive, negative, pos, neg, pairs)
    # no groups: pairs by label, the first row of each pair positive
    by_label: dict[str, list[PromptRow]] = {}
    for r in ps.rows:
        if r.label is not None:
            by_label.setdefault(r.label, []).append(r)
    full = [rows for rows in by_label.values() if len(rows) == 2]
    if not full:
        raise InputError(
            f"The prompt set '{ps.name}' has no contrast: it needs two groups (the `group` field, one side may not be "
            "empty), or pairs of rows that share a `label` (pair id; the first row of each pair is the positive one).")
    pos = tuple(rows[0] for rows in full)
    neg = tuple(rows[1] for rows in full)
    return Contrast("first of pair", "second of pair", pos, neg, tuple((i, i) for i in range(len(full))))

"""Tokenising prompt batches and running the model on them (mask-aware, padding-side independent)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.errors import InputError
from analysis.core.wording import plural, verb


@dataclass(frozen=True)
class Batch:
    """A padded batch: input_ids/attention_mask/position_ids [B, T]; lengths [B] of real tokens."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    padding_side: str

    @property
    def lengths(self) -> torch.Tensor:
        """Number of real (unpadded) tokens per row: [B]."""
        return self.attention_mask.sum(dim=1)

    def last_index(self) -> torch.Tensor:
        """Index of each row's last real token: [B] (works for left and right padding)."""
        if self.padding_side == "left":
            return torch.full_like(self.lengths, self.input_ids.shape[1] - 1)
        return self.lengths - 1

    def real_positions(self, row: int) -> torch.Tensor:
        """Indices of row ``row``'s real tokens, in order: [n]."""
        return torch.nonzero(self.attention_mask[row], as_tuple=False).flatten()

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.padding_side)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so left padding does not shift positions: [B, T]."""
    return (mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def batch_from_ids(rows: Sequence[Sequence[int]], pad_id: int, padding_side: str = "right") -> Batch:
    """Pad token-id rows into a Batch."""
    if not rows or any(len(r) == 0 for r in rows):
        raise InputError("Every prompt needs at least one token.")
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        t = torch.as_tensor(list(r), dtype=torch.long)
        if padding_side == "left":
            ids[i, T - len(r):] = t
            mask[i, T - len(r):] = 1
        else:
            ids[i, : len(r)] = t
            mask[i, : len(r)] = 1
    return Batch(ids, mask, positions_from_mask(mask), padding_side)


def token_rows(tokenizer, prompts: Sequence[str], *, max_length: int | None = None) -> list[list[int]]:
    """Token ids of each prompt (with the tokenizer's special tokens, e.g. BOS); InputError past max_length."""
    rows = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    if max_length is not None:
        too_long = [i for i, r in enumerate(rows) if len(r) > max_length]
        if too_long:
            first = ", ".join(str(i + 1) for i in too_long[:5])
            raise InputError(
                f"{plural(len(too_long), 'prompt')} {verb(len(too_long), 'is', 'are')} longer than the model's context of {max_length} tokens "
                f"(prompt {first}{', ...' if len(too_long) > 5 else ''}). Shorten them."
            )
    return rows


def encode(tokenizer, prompts: Sequence[str], *, padding_side: str = "right", max_length: int | None = None) -> Batch:
    """Tokenise prompts (with the tokenizer's special tokens, e.g. BOS) into a padded Batch."""
    return batch_from_ids(token_rows(tokenizer, prompts, max_length=max_length), pad_token_id(tokenizer), padding_side)


def pad_token_id(tokenizer) -> int:
    """The pad id, falling back to EOS then 0 (padded positions are always masked out)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def chunks(n: int, size: int) -> list[slice]:
    """Slices covering range(n) in chunks of at most ``size``."""
    size = max(1, int(size))
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def length_batches(lengths: Sequence[int], size: int, *, sort: bool = True) -> list[np.ndarray]:
    """Index batches [b] of at most ``size`` rows: neighbours in token length batched together (longest first).

    The sort is stable (equal lengths keep their input order) and the batches together hold every index of
    range(len(lengths)) exactly once, so results written back at these indices come out in the input order.
    sort=False gives the plain consecutive chunks.
    """
    n = len(lengths)
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable") if sort else np.arange(n)
    return [order[sl] for sl in chunks(n, size)]


def bucketed(tokenizer, prompts: Sequence[str], size: int, *, padding_side: str = "right",
             max_length: int | None = None, sort: bool = True) -> Iterator[tuple[np.ndarray, Batch]]:
    """Length-bucketed padded batches of ``prompts``: yields (input indices [b], Batch of those prompts in that order).

    Every prompt is tokenised once (the length check runs before the first batch); batches are built lazily.
    Sorting by length cuts padding (a batch is padded to its own longest prompt), and per-row results do not
    depend on the padding (attention mask and position ids). Write each row's result at its input index.
    """
    rows = token_rows(tokenizer, prompts, max_length=max_length)
    pad = pad_token_id(tokenizer)
    for idx in length_batches([len(r) for r in rows], size, sort=sort):
        yield idx, batch_from_ids([rows[i] for i in idx], pad, padding_side)


def n_batches(n: int, size: int) -> int:
    """How many batches ``length_batches``/``bucketed`` make of n rows."""
    return len(chunks(n, size))

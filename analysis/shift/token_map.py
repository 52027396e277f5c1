"""Token maps between vocabularies: PM-MinED (prefix match + minimum edit distance), methods.md section 5.

For each source token: special tokens and byte tokens map to themselves (the target's token with the
same special string, or role, or the same single byte); else an exact match of the token's text; else
the candidates are the target tokens that are a prefix of it or that it is a prefix of (a bare space
marker is no candidate for a non-space token), and the pick is the smallest Levenshtein distance, ties
to the lowest id; no candidate -> -1 (unmapped).

Token texts are compared as raw bytes: byte-level BPE symbols ('Ġ' = space, 'Ċ' = newline) and
SentencePiece's '▁' / '<0xNN>' are decoded first, so " Paris" in one vocabulary matches "ĠParis" or
"▁Paris" in another.
"""
from __future__ import annotations

import bisect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

KIND_NORMAL, KIND_SPECIAL, KIND_BYTE, KIND_NONE = 0, 1, 2, 3
_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_ROLES = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable symbol byte-level BPE uses -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


@dataclass(frozen=True)
class Vocab:
    """A tokenizer's vocabulary as raw bytes per id, with a kind per id (normal, special, byte, none).

    raw: [V] bytes (special tokens: their literal string in UTF-8); kind: [V] int8; roles: special role
    name (bos/eos/pad/unk) -> id.
    """

    raw: tuple[bytes, ...]
    kind: np.ndarray
    roles: dict

    def __len__(self) -> int:
        return len(self.raw)

    def text(self, i: int) -> str:
        """The text token ``i`` stands for (invalid UTF-8 shown as U+FFFD)."""
        if not 0 <= i < len(self.raw):
            return "?"
        return self.raw[i].decode("utf-8", errors="replace")

    def texts(self, ids: Sequence[int] | np.ndarray) -> tuple[str, ...]:
        """Texts of several ids."""
        return tuple(self.text(int(i)) for i in ids)


def _decoder_kind(tokenizer: Any) -> str:
    """'bytelevel', 'metaspace' or 'plain', read from a fast tokenizer's decoder (plain if unknown)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "plain"
    try:
        dec = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # noqa: BLE001 - any tokenizer still gets its plain token strings
        return "plain"
    types = {dec.get("type")} | {d.get("type") for d in dec.get("decoders", []) or []}
    text = json.dumps(dec)
    if "ByteLevel" in types:
        return "bytelevel"
    if "Metaspace" in types or "▁" in text or "ByteFallback" in types:
        return "metaspace"
    return "plain"


def _token_bytes(tok: str, decoder: str) -> tuple[bytes, int]:
    """(raw bytes, kind) of one token string under ``decoder``."""
    if decoder == "bytelevel":
        table = _byte_decoder()
        byte_level = tok and all(ch in table for ch in tok)  # else an added (non-byte-level) token
        raw = bytes(table[ch] for ch in tok) if byte_level else tok.encode("utf-8")
        return raw, KIND_BYTE if len(raw) == 1 else KIND_NORMAL
    if decoder == "metaspace":
        m = _SP_BYTE.match(tok)
        if m:
            return bytes([int(m.group(1), 16)]), KIND_BYTE
        return tok.replace("▁", " ").encode("utf-8"), KIND_NORMAL
    return tok.encode("utf-8"), KIND_NORMAL


def vocab_of(tokenizer: Any, size: int | None = None) -> Vocab:
    """The Vocab of ``tokenizer`` over ids 0..size-1 (size defaults to len(tokenizer); ids it lacks are kind none)."""
    n_tok = len(tokenizer) if hasattr(tokenizer, "__len__") else int(getattr(tokenizer, "vocab_size", 0))
    size = int(size if size is not None else n_tok)
    decoder = _decoder_kind(tokenizer)
    special = set(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []))
    roles = {}
    for r in _ROLES:
        v = getattr(tokenizer, r, None)
        if isinstance(v, int):
            roles[r] = v
            special.add(v)
    ids = list(range(min(size, n_tok)))
    try:
        toks = tokenizer.convert_ids_to_tokens(ids)
    except Exception:  # noqa: BLE001
        toks = [None] * len(ids)
    raw: list[bytes] = []
    kind = np.full(size, KIND_NONE, dtype=np.int8)
    for i in range(size):
        tok = toks[i] if i < len(toks) else None
        if tok is None:
            raw.append(b"")
            continue
        tok = str(tok)
        if i in special:
            raw.append(tok.encode("utf-8"))
            kind[i] = KIND_SPECIAL
            continue
        b, k = _token_bytes(tok, decoder)
        raw.append(b)
        kind[i] = k if b else KIND_NONE
    return Vocab(tuple(raw), kind, roles)


def vocab_from_strings(tokens: Sequence[str], *, special: Sequence[int] = (), byte: Sequence[int] = ()) -> Vocab:
    """A Vocab from plain token texts (tests, hand-made vocabularies); ``special``/``byte`` list ids of those kinds."""
    kind = np.full(len(tokens), KIND_NORMAL, dtype=np.int8)
    kind[list(special)] = KIND_SPECIAL
    kind[list(byte)] = KIND_BYTE
    return Vocab(tuple(t.encode("utf-8") for t in tokens), kind, {})


def levenshtein(a: bytes | str, b: bytes | str) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two sequences."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _is_space(raw: bytes) -> bool:
    return len(raw) > 0 and raw.strip() == b""


@dataclass(frozen=True)
class TokenMap:
    """source id -> target id (-1 = unmapped): mapping [V_src] int64, and how each id was mapped.

    how: [V_src] int8 with 0 unmapped, 1 special/byte to itself, 2 exact, 3 prefix + edit distance.
    identity: the two vocabularies are the same (the map is arange).
    """

    mapping: np.ndarray
    how: np.ndarray
    identity: bool

    @property
    def mapped_share(self) -> float:
        """Share of source tokens (that exist) with a target token."""
        return float((self.mapping >= 0).mean()) if len(self.mapping) else 0.0

    @property
    def exact_share(self) -> float:
        """Share of source tokens mapped to themselves or by an exact text match."""
        return float(np.isin(self.how, (1, 2)).mean()) if len(self.how) else 0.0

    def counts(self) -> dict[str, int]:
        """How many source tokens were mapped each way."""
        names = {0: "unmapped", 1: "special or byte", 2: "exact", 3: "prefix + edit distance"}
        return {names[k]: int((self.how == k).sum()) for k in names}


def _nearest_edit(raw: bytes, exact: dict[bytes, int], cand_keys: list[bytes],
                  cand_sorted: list[tuple[bytes, int]]) -> int | None:
    """The target id nearest to ``raw`` among its prefixes and its extensions (ties: shorter edit, then lower id)."""
    space_ok = _is_space(raw)
    best: tuple[int, int] | None = None  # (distance, id)
    # target tokens that are a proper prefix of raw: distance = len(raw) - len(prefix)
    for cut in range(1, len(raw)):
        j = exact.get(raw[:cut])
        if j is None or (not space_ok and _is_space(raw[:cut])):
            continue
        cand = (len(raw) - cut, j)
        best = cand if best is None or cand < best else best
    # target tokens that raw is a proper prefix of: distance = len(t) - len(raw)
    lo = bisect.bisect_right(cand_keys, raw)
    for pos in range(lo, len(cand_keys)):
        t = cand_keys[pos]
        if not t.startswith(raw):
            break
        cand = (len(t) - len(raw), cand_sorted[pos][1])
        best = cand if best is None or cand < best else best
    return None if best is None else best[1]


def pm_mined_map(source: Vocab, target: Vocab) -> TokenMap:
    """PM-MinED map from ``source`` to ``target`` (see the module docstring): a TokenMap over source ids."""
    n_s, n_t = len(source), len(target)
    if source.raw == target.raw and np.array_equal(source.kind, target.kind):
        return TokenMap(np.arange(n_s, dtype=np.int64), np.where(source.kind == KIND_NONE, 0, 2).astype(np.int8),
                        identity=True)
    exact: dict[bytes, int] = {}
    byte_ids: dict[bytes, int] = {}
    special_ids: dict[bytes, int] = {}
    j: int | None
    for j in range(n_t):
        k, raw = target.kind[j], target.raw[j]
        if k == KIND_NONE:
            continue
        if k == KIND_SPECIAL:
            special_ids.setdefault(raw, j)
            continue
        exact.setdefault(raw, j)
        if len(raw) == 1:
            byte_ids.setdefault(raw, j)
    cand_sorted = sorted(exact.items())  # (raw, lowest id) over non-special target tokens
    cand_keys = [r for r, _ in cand_sorted]
    role_of = {v: r for r, v in source.roles.items()}
    mapping = np.full(n_s, -1, dtype=np.int64)
    how = np.zeros(n_s, dtype=np.int8)
    for i in range(n_s):
        k, raw = source.kind[i], source.raw[i]
        if k == KIND_NONE:
            continue
        if k == KIND_SPECIAL:
            j = special_ids.get(raw)
            if j is None and i in role_of:
                j = target.roles.get(role_of[i])
            if j is not None:
                mapping[i], how[i] = j, 1
            continue
        if k == KIND_BYTE:
            j = byte_ids.get(raw) if len(raw) == 1 else None
            if j is not None:
                mapping[i], how[i] = j, 1
            continue
        j = exact.get(raw)
        if j is not None:
            mapping[i], how[i] = j, 2
            continue
        best = _nearest_edit(raw, exact, cand_keys, cand_sorted)
        if best is not None:
            mapping[i], how[i] = best, 3
    return TokenMap(mapping, how, identity=False)


def same_tokenizer(tok_a: Any, tok_b: Any) -> bool:
    """True when two tokenizers give every text the same ids (same class and vocabulary)."""
    if tok_a is tok_b:
        return True
    if type(tok_a) is not type(tok_b):
        return False
    get_a, get_b = getattr(tok_a, "get_vocab", None), getattr(tok_b, "get_vocab", None)
    if callable(get_a) and callable(get_b):
        try:
            return get_a() == get_b() and len(tok_a) == len(tok_b)
        except Exception:  # noqa: BLE001
            return False
    return getattr(tok_a, "vocab_size", None) == getattr(tok_b, "vocab_size", None)


def build_token_map(tok_src: Any, tok_tgt: Any, size_src: int | None = None, size_tgt: int | None = None) -> TokenMap:
    """The PM-MinED map from one tokenizer's ids (0..size_src-1) to another's; identity when they are the same."""
    if same_tokenizer(tok_src, tok_tgt) and (size_src == size_tgt):
        n = size_src if size_src is not None else len(vocab_of(tok_src))
        return TokenMap(np.arange(n, dtype=np.int64), np.full(n, 2, dtype=np.int8), identity=True)
    return pm_mined_map(vocab_of(tok_src, size_src), vocab_of(tok_tgt, size_tgt))

"""Checkpoint logit shift (Cross-model Control, Wu et al. 2024): what changed between checkpoints A and B.

The same text runs through A and B, teacher-forced on a reference continuation (the prompt set's
``response``, or B's own greedy output of N tokens). Step t is the prediction of continuation token t
(step 0 is predicted from the last prompt token). Per step the shift is
S_t = log_softmax(z_B) - log_softmax(z_A) over B's vocabulary (the reference model's). Only reduced
views are kept: per step the top-N tokens by B's probability with their shifts, KL(B||A), and over
the set the tokens that gained and lost the most probability (over each step's top-N of A and of B).

Different tokenizers: A reads the same text with its own tokenizer; a step counts when A has a token
starting at the same character of the continuation; A's log-probs are read through the PM-MinED map
(B token -> A token; analysis.shift.token_map); unmapped columns get shift 0 (methods.md section 5).
Shapes: T = continuation steps, N = top-N, L = blocks, V = B's vocabulary.

Where the parts live: the result types in analysis.shift.results and the per-pair rows (alignment, token map,
reduction) in analysis.shift.pair; this module keeps the checks and the public API, and re-exports the moved names.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.wording import plural, verb
from analysis.lens import lens_compare
from analysis.shift.pair import ShiftAccumulator, ShiftPair, encode_text
from analysis.shift.results import Compatibility, LayerKL, ShiftResult, Similarity
from analysis.shift.token_map import build_token_map, same_tokenizer

REFERENCES = ("response", "greedy")


# ------------------------------------------------------------------------------------------ checks
def compatibility(a: LoadedModel, b: LoadedModel) -> Compatibility:
    """Which views are possible for A vs B, and a user-facing sentence saying so."""
    same_tok = same_tokenizer(a.tokenizer, b.tokenizer) and a.adapter.vocab_size == b.adapter.vocab_size
    same_depth = a.adapter.n_layers == b.adapter.n_layers
    same_width = a.adapter.d_model == b.adapter.d_model
    parts = []
    if not same_tok:
        parts.append(f"Checkpoints A ({a.name}) and B ({b.name}) use different tokenizers, so their logits do not "
                     "index the same tokens: the per-token shift and KL(B||A) are compared on tokens mapped with "
                     "PM-MinED (unmapped tokens get shift 0, steps only where both split the text at the same "
                     "character), and the per-layer lens KL needs the same tokenizer, so it is not available.")
    elif not same_depth:
        parts.append(f"Checkpoints A ({a.name}, {a.adapter.n_layers} layers) and B ({b.name}, "
                     f"{b.adapter.n_layers} layers) differ in depth: the shift and KL(B||A) work, but the per-layer "
                     "lens KL compares layer l with layer l and needs the same number of layers.")
    return Compatibility(same_tok, same_depth, same_width, " ".join(parts))


def require_lens_compatible(a: LoadedModel, b: LoadedModel) -> None:
    """Raise IncompatibleModelsError (explaining what still works) unless the per-layer lens KL is possible."""
    c = compatibility(a, b)
    if not c.lens_kl:
        raise IncompatibleModelsError(c.message)


def _check_inputs(prompts: Sequence[str], responses: Sequence[str | None] | None, reference: str, top_n: int,
                  n_tokens: int) -> list[str | None]:
    if reference not in REFERENCES:
        raise InputError(f"Unknown reference '{reference}': use 'response' (the set's responses) or 'greedy' "
                         "(B's greedy output).")
    if not prompts:
        raise InputError("No prompts to compare.")
    if top_n < 1:
        raise InputError(f"Top-N must be at least 1, got {top_n}.")
    if reference == "greedy" and n_tokens < 1:
        raise InputError(f"The greedy continuation needs at least 1 token, got {n_tokens}.")
    resp: list[str | None] = list(responses) if responses is not None else [None] * len(prompts)
    if len(resp) != len(prompts):
        raise InputError("There must be one response per prompt.")
    if reference == "response":
        missing = [i + 1 for i, r in enumerate(resp) if not r]
        if missing:
            raise InputError(f"{plural(len(missing), 'prompt')} {verb(len(missing))} no response (prompt {', '.join(map(str, missing[:5]))}); "
                             "use B's greedy output as the reference, or add a 'response' column.")
    return resp


# ------------------------------------------------------------------------------------------ public API
def compute_shift(a: LoadedModel, b: LoadedModel, prompts: Sequence[str], responses: Sequence[str | None] | None = None,
                  *, reference: str = "response", n_tokens: int = 16, top_n: int = 100,
                  progress: Progress = None) -> ShiftResult:
    """Shift S = log_softmax(B) - log_softmax(A) teacher-forced on the reference continuation, reduced per step."""
    resp = _check_inputs(prompts, responses, reference, top_n, n_tokens)
    pair = ShiftPair(a, b)
    acc = ShiftAccumulator(pair, top_n)
    for i, (p, r) in enumerate(zip(prompts, resp, strict=True)):
        cont = pair.reference_ids(p, r, reference, n_tokens)
        lp_b, side, text, offsets = pair.rows(p, cont, r if reference == "response" else None)
        acc.add(p, cont, lp_b, side, text, offsets)
        if progress:
            progress((i + 1) / len(prompts), f"prompt {i + 1}/{len(prompts)}")
    return acc.result(reference)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def _finite_mean(v: Sequence[float]) -> float:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors (NaN if one is constant)."""
    return _pearson(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def cosine(x: np.ndarray, y: np.ndarray) -> float:
    """Cosine similarity of two equal-length vectors (NaN if one is zero)."""
    return _cosine(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


def shift_similarity(pair1: tuple[LoadedModel, LoadedModel], pair2: tuple[LoadedModel, LoadedModel],
                     prompts: Sequence[str], responses: Sequence[str | None] | None = None, *,
                     reference: str = "response", n_tokens: int = 16, top_n: int = 100, columns: str = "top",
                     n_shuffles: int = 20, seed: int = 0, progress: Progress = None) -> Similarity:
    """Compare the shifts of pair 1 (A->A') and pair 2 (B->B') per aligned step on shared or mapped tokens.

    Both pairs read the same continuation text (the responses, or pair 1's B greedy output); pair 1's
    reference vocabulary is mapped to pair 2's with PM-MinED (identity when they share a tokenizer).
    """
    if columns not in ("top", "all"):
        raise InputError(f"columns must be 'top' or 'all', got {columns!r}.")
    resp = _check_inputs(prompts, responses, reference, top_n, n_tokens)
    p1, p2 = ShiftPair(*pair1), ShiftPair(*pair2)
    acc1, acc2 = ShiftAccumulator(p1, top_n), ShiftAccumulator(p2, top_n)
    b1, b2 = pair1[1], pair2[1]
    m12 = torch.as_tensor(build_token_map(b1.tokenizer, b2.tokenizer, b1.adapter.vocab_size, b2.adapter.vocab_size).mapping)
    m21 = torch.as_tensor(build_token_map(b2.tokenizer, b1.tokenizer, b2.adapter.vocab_size, b1.adapter.vocab_size).mapping)
    mapped_share = float((m12 >= 0).float().mean())
    all_src = torch.nonzero(m12 >= 0).flatten()
    rng = np.random.default_rng(seed)
    pr: list[float] = []
    co: list[float] = []
    cpr: list[float] = []
    cco: list[float] = []
    second = []
    n_steps = 0
    for i, (p, r) in enumerate(zip(prompts, resp, strict=True)):
        cont1 = p1.reference_ids(p, r, reference, n_tokens)
        lp1, side1, text, off1 = p1.rows(p, cont1, r if reference == "response" else None)
        ps1 = acc1.add(p, cont1, lp1, side1, text, off1)
        ref_text = r if reference == "response" else text
        assert ref_text is not None  # _check_inputs refuses a missing response when the reference is "response"
        cont2 = encode_text(b2.tokenizer, ref_text, False)
        lp2, side2, text2, off2 = p2.rows(p, cont2, text)
        acc2.add(p, cont2, lp2, side2, text2, off2)
        S1 = torch.nan_to_num(lp1 - side1.logp, nan=0.0)
        S2 = torch.nan_to_num(lp2 - side2.logp, nan=0.0)
        step2 = {int(o): k for k, o in enumerate(off2) if side2.valid[k]}
        sec = np.full(ps1.top_ids.shape, np.nan, dtype=np.float32)
        vals: tuple[list[float], list[float], list[float], list[float]] = ([], [], [], [])
        for t, o in enumerate(off1):
            k = step2.get(int(o))
            if k is None or not side1.valid[t]:
                continue
            tgt = m12[torch.as_tensor(ps1.top_ids[t])]
            ok = tgt >= 0
            sec[t, ok.numpy()] = S2[k, tgt[ok]].numpy()
            if columns == "all":
                src = all_src
            else:
                from_1 = lp1[t].topk(min(top_n, lp1.shape[1])).indices
                from_2 = m21[lp2[k].topk(min(top_n, lp2.shape[1])).indices]
                src = torch.unique(torch.cat([from_1, from_2[from_2 >= 0]]))
                src = src[m12[src] >= 0]
            if src.numel() < 3:
                continue
            x = S1[t, src].double().numpy()
            y = S2[k, m12[src]].double().numpy()
            vals[0].append(_pearson(x, y))
            vals[1].append(_cosine(x, y))
            perm_p, perm_c = [], []
            for _ in range(int(n_shuffles)):
                yp = y[rng.permutation(len(y))]
                perm_p.append(_pearson(x, yp))
                perm_c.append(_cosine(x, yp))
            vals[2].append(_finite_mean(perm_p))
            vals[3].append(_finite_mean(perm_c))
            n_steps += 1
        second.append(sec)
        for lst, v in zip((pr, co, cpr, cco), vals, strict=True):
            lst.append(_finite_mean(v))
        if progress:
            progress((i + 1) / len(prompts), f"prompt {i + 1}/{len(prompts)}")
    return Similarity(acc1.result(reference), acc2.result(reference), columns, mapped_share,
                      np.asarray(pr), np.asarray(co), np.asarray(cpr), np.asarray(cco), n_steps, tuple(second))


def layer_kl(a: LoadedModel, b: LoadedModel, prompts: Sequence[str], responses: Sequence[str | None] | None = None,
             *, reference: str = "response", n_tokens: int = 16, progress: Progress = None) -> LayerKL:
    """Per-layer lens KL(A_l || B_l) over the continuation steps ("where in depth did tuning act"), layers 0..L.

    Computed by analysis.lens.logit_lens.lens_compare on prompt + continuation text; kept at the positions that
    predict continuation tokens."""
    require_lens_compatible(a, b)
    resp = _check_inputs(prompts, responses, reference, 1, n_tokens)
    pair = ShiftPair(a, b)
    texts, starts = [], []
    for i, (p, r) in enumerate(zip(prompts, resp, strict=True)):
        if reference == "greedy":
            cont = pair.reference_ids(p, r, reference, n_tokens)
            r = "".join(pair.vocab_b.text(t) for t in cont)
        assert r is not None  # _check_inputs refuses a missing response when the reference is "response"
        texts.append(p + r)
        starts.append(len(encode_text(b.tokenizer, p, True)) - 1)
        if progress:
            progress(0.5 * (i + 1) / len(prompts), "reference continuations")
    half = (lambda f, m: progress(0.5 + 0.5 * f, m)) if progress else None
    comp = lens_compare(a, b, texts, progress=half)
    per = []
    for n, s in enumerate(starts):
        length = int(comp.mask[n].sum())
        per.append(comp.kl[n, :, s:length - 1].astype(np.float64))  # positions predicting continuation tokens
    allv = np.concatenate(per, axis=1) if per else np.zeros((a.adapter.n_layers + 1, 0))
    mean = allv.mean(axis=1) if allv.shape[1] else np.full(allv.shape[0], np.nan)
    return LayerKL(a.name, b.name, mean, tuple(per))

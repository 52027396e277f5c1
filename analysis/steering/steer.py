"""Steering: add alpha * v to the residual stream h_l at chosen positions, in a forward pass or while generating.

The hook sits on block l-1's output (layer 0: the input of block 0), so h_l changes by exactly alpha * v at
steered positions and h_0..h_{l-1} do not change. Positions are ABSOLUTE (a cursor counts the tokens
processed so far), so the rules mean the same with and without the KV cache, where every generation step
has sequence length 1:

- ``all``: every position;  ``prompt``: positions < prompt length;  ``generated``: positions >= prompt length
  (the generated tokens; the first new token is predicted from the last prompt token, so this rule only
  acts from the second new token on);  ``response``: the last prompt token and every generated token
  (Persona Vectors' default).

Optional norm preservation rescales each steered h to its original norm. The generation loop is our own
(use_cache=True, past_key_values), under the model lock and inference_mode; greedy or sampled with a seeded
torch.Generator, so the steered and the unsteered run draw from the same seed.

Global logit shift (Detecting the Disturbance, 2025): on prompts, compare clean and steered next-token
logits at the last prompt token: the change of a logit difference z_a - z_b, KL(clean || steered), the
change of entropy (nats), and the mean logit shift over the vocabulary.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core import tokens
from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import InputError, NumericalError
from analysis.core.forward import run
from analysis.core.hooks import HookSpec, attached, residual_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.steering.activations import token_ids

STEER_RULES = ("all", "prompt", "generated", "response")
STEER_RULE_LABELS = {"all": "all positions", "prompt": "prompt only", "generated": "generated tokens only",
               "response": "last prompt token + generated"}


@dataclass(frozen=True)
class Steer:
    """A steering setting: add alpha * vector [d] to h_layer at the positions of ``rule``."""

    layer: int
    vector: np.ndarray
    alpha: float
    rule: str = "all"
    preserve_norm: bool = False


class Cursor:
    """How many tokens the model has processed so far, and each row's prompt length (absolute positions)."""

    def __init__(self, prompt_lens: Sequence[int]):
        self.offset = 0
        self.prompt_lens = torch.as_tensor(list(prompt_lens), dtype=torch.long)


def validate(lm: LoadedModel, steer: Steer) -> None:
    """Raise InputError for a bad layer, rule, alpha or vector shape."""
    lm.check_layer(steer.layer)
    if steer.rule not in STEER_RULES:
        raise InputError(f"Unknown steering positions '{steer.rule}'. Use one of: {', '.join(STEER_RULES)}.")
    if not isinstance(steer.alpha, (int, float)) or not math.isfinite(float(steer.alpha)):
        raise InputError(f"The steering coefficient alpha must be a finite number, got {steer.alpha!r}.")
    v = np.asarray(steer.vector)
    if v.shape != (lm.adapter.d_model,):
        raise InputError(f"The steering vector has shape {tuple(v.shape)}, but the model's residual stream has width "
                         f"{lm.adapter.d_model}.")
    if not np.isfinite(v).all():
        raise InputError("The steering vector contains NaN or infinite values.")


def position_mask(rule: str, offset: int, T: int, prompt_lens: torch.Tensor) -> torch.Tensor:
    """Which of the T positions processed now (absolute offset..offset+T-1) are steered: [B, T] bool."""
    pos = offset + torch.arange(T)[None, :]
    pl = prompt_lens[:, None]
    if rule == "all":
        return torch.ones(len(prompt_lens), T, dtype=torch.bool)
    if rule == "prompt":
        return pos < pl
    if rule == "generated":
        return pos >= pl
    if rule == "response":
        return pos >= pl - 1
    raise InputError(f"Unknown steering positions '{rule}'.")


def steering_hook(lm: LoadedModel, steer: Steer, cursor: Cursor) -> HookSpec:
    """The residual hook that adds alpha * v at the steered (absolute) positions of h_layer."""
    validate(lm, steer)
    vec = torch.as_tensor(np.asarray(steer.vector, dtype=np.float32))
    alpha = float(steer.alpha)

    def fn(h: torch.Tensor) -> torch.Tensor | None:
        B, T, _ = h.shape
        lens = cursor.prompt_lens.expand(B) if cursor.prompt_lens.numel() == 1 else cursor.prompt_lens
        mask = position_mask(steer.rule, cursor.offset, T, lens).to(h.device)
        if alpha == 0.0 or not bool(mask.any()):
            return None
        add = (alpha * vec.to(h.device)).to(h.dtype)
        new = h + add
        # an overflowing stream (or one whose squared norm overflows, so every later norm collapses) is garbage
        if not bool(torch.isfinite(new).all()) or not bool(torch.isfinite(new.float().pow(2).sum(-1)).all()):
            raise NumericalError(_overflow_message(steer))
        if steer.preserve_norm:
            old_n = h.float().norm(dim=-1, keepdim=True)
            new_n = new.float().norm(dim=-1, keepdim=True).clamp_min(1e-30)
            new = (new.float() * (old_n / new_n)).to(h.dtype)
        return torch.where(mask[..., None], new, h)
    return residual_hook(lm.adapter, steer.layer, fn)


def _overflow_message(steer: Steer) -> str:
    return (f"Steering with alpha = {steer.alpha:g} at layer {steer.layer} made the residual stream or the logits NaN "
            "or infinite (the numbers overflowed). Use a smaller |alpha|: useful values are usually a few times 1.")


def _check_finite(logits: torch.Tensor, steer: Steer | None) -> None:
    if not bool(torch.isfinite(logits).all()):
        if steer is None:
            raise NumericalError("The model produced NaN or infinite logits on this input.")
        raise NumericalError(_overflow_message(steer))


def steered_logits(lm: LoadedModel, ids: Sequence[Sequence[int]], steer: Steer | None,
                   prompt_lens: Sequence[int] | None = None, extra_hooks: Sequence[HookSpec] = ()) -> torch.Tensor:
    """Logits [B, T, V] (fp32) of token rows (right-padded) under ``steer``; prompt_lens default = row lengths."""
    batch = batch_from_ids(ids, pad_token_id(lm.tokenizer), "right")
    lens = prompt_lens if prompt_lens is not None else [len(r) for r in ids]
    hooks = list(extra_hooks)
    if steer is not None:
        hooks = [steering_hook(lm, steer, Cursor(lens))] + hooks
    logits = run(lm, batch, hooks)
    _check_finite(logits, steer)
    return logits


# --------------------------------------------------------------------------------------------
# Generation (our own loop with the KV cache)
# --------------------------------------------------------------------------------------------
def generate_ids(lm: LoadedModel, prompt_ids: Sequence[int], steer: Steer | None, max_new_tokens: int, *,
                 temperature: float = 0.0, seed: int = 0, stop_at_eos: bool = True, keep_logits: bool = False,
                 extra_hooks: Sequence[HookSpec] = ()) -> tuple[list[int], torch.Tensor | None]:
    """Generate after ``prompt_ids`` (one row) with the KV cache; returns (new ids, step logits [n, V] or None)."""
    if max_new_tokens < 1:
        raise InputError(f"The number of tokens to generate must be at least 1, got {max_new_tokens}.")
    if temperature < 0 or not math.isfinite(temperature):
        raise InputError(f"The temperature must be 0 (greedy) or positive, got {temperature}.")
    P = len(prompt_ids)
    if P == 0:
        raise InputError("The prompt has no tokens.")
    if P + max_new_tokens > lm.context_length:
        raise InputError(f"The prompt ({P} tokens) plus {max_new_tokens} new tokens exceed the model's context of "
                         f"{lm.context_length} tokens.")
    cursor = Cursor([P])
    hooks = list(extra_hooks)
    if steer is not None:
        hooks = [steering_hook(lm, steer, cursor)] + hooks
    gen = torch.Generator(device=lm.device).manual_seed(int(seed))
    eos = lm.tokenizer.eos_token_id
    new: list[int] = []
    kept: list[torch.Tensor] = []
    ids = torch.tensor([list(prompt_ids)], device=lm.device)
    with attached(lm.lock, hooks), torch.inference_mode():
        past = None
        step_in = ids
        for step in range(max_new_tokens):
            total = P + step
            mask = torch.ones(1, total, dtype=torch.long, device=lm.device)
            pos = torch.arange(cursor.offset, total, device=lm.device)[None, :]
            out = lm.model(input_ids=step_in, attention_mask=mask, position_ids=pos, past_key_values=past,
                           use_cache=True)
            cursor.offset = total
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            _check_finite(logits, steer)
            if keep_logits:
                kept.append(logits.cpu())
            if temperature == 0.0:
                nxt = int(torch.argmax(logits))
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            new.append(nxt)
            if stop_at_eos and eos is not None and nxt == eos:
                break
            step_in = torch.tensor([[nxt]], device=lm.device)
    return new, (torch.stack(kept) if keep_logits else None)


@dataclass(frozen=True)
class Generation:
    """One continuation: token texts [n], ids [n], and per token the log-prob shift log p_steered - log p_clean [n]."""

    tokens: tuple[str, ...]
    ids: np.ndarray
    logprob_shift: np.ndarray

    @property
    def text(self) -> str:
        """The continuation as one string."""
        return "".join(self.tokens)


@dataclass(frozen=True)
class GenerationComparison:
    """Unsteered and steered continuations of one prompt from the same seed, with per-token log-prob shifts."""

    prompt: str
    unsteered: Generation
    steered: Generation
    layer: int
    alpha: float
    rule: str
    temperature: float
    seed: int


def _token_texts(lm: LoadedModel, ids: Sequence[int]) -> tuple[str, ...]:
    out = []
    for i in ids:
        try:
            out.append(lm.tokenizer.decode([int(i)], clean_up_tokenization_spaces=False))
        except TypeError:
            out.append(lm.tokenizer.decode([int(i)]))
    return tuple(out)


def logprob_shift(lm: LoadedModel, prompt_ids: Sequence[int], new_ids: Sequence[int], steer: Steer) -> np.ndarray:
    """For each new token, log p_steered(token | context) - log p_clean(token | context): [n] (same context)."""
    if not new_ids:
        return np.zeros(0, dtype=np.float32)
    full = list(prompt_ids) + list(new_ids)
    P = len(prompt_ids)
    clean = torch.log_softmax(steered_logits(lm, [full], None)[0], -1)
    st = torch.log_softmax(steered_logits(lm, [full], steer, prompt_lens=[P])[0], -1)
    idx = torch.arange(P - 1, len(full) - 1)
    tok = torch.as_tensor(list(new_ids))
    return (st[idx, tok] - clean[idx, tok]).numpy().astype(np.float32)


def compare_generations(lm: LoadedModel, prompt: str, steer: Steer, *, max_new_tokens: int = 24,
                        temperature: float = 0.0, seed: int = 0) -> GenerationComparison:
    """Generate unsteered and steered from the same seed; shade each token by its steering log-prob shift."""
    p_ids = token_ids(lm.tokenizer, prompt)
    validate(lm, steer)
    gens = []
    for s in (None, steer):
        ids, _ = generate_ids(lm, p_ids, s, max_new_tokens, temperature=temperature, seed=seed)
        gens.append(Generation(_token_texts(lm, ids), np.asarray(ids, dtype=np.int64), logprob_shift(lm, p_ids, ids, steer)))
    return GenerationComparison(prompt, gens[0], gens[1], steer.layer, float(steer.alpha), steer.rule,
                                float(temperature), int(seed))


# --------------------------------------------------------------------------------------------
# Global logit shift
# --------------------------------------------------------------------------------------------
def single_token(lm: LoadedModel, text: str) -> int:
    """The id of ``text`` if it is exactly one token of ``lm``'s tokenizer, else InputError (analysis.core.tokens)."""
    return tokens.single_token(lm.tokenizer, text)


@dataclass(frozen=True)
class LogitShift:
    """Per prompt [N] at the last prompt token: logit difference clean/steered, its change, KL, entropy change, mean shift."""

    ld_clean: np.ndarray
    ld_steered: np.ndarray
    kl: np.ndarray
    d_entropy: np.ndarray
    mean_shift: np.ndarray

    @property
    def d_ld(self) -> np.ndarray:
        """Change of the logit difference: [N]."""
        return self.ld_steered - self.ld_clean


def _last_logits(lm: LoadedModel, rows: Sequence[Sequence[int]], steer: Steer | None,
                 batch_size: int = 16) -> torch.Tensor:
    """Next-token logits at each row's last token: [N, V] fp32 (chunked)."""
    outs = []
    for sl in chunks(len(rows), batch_size):
        part = rows[sl]
        z = steered_logits(lm, part, steer)
        last = torch.as_tensor([len(r) - 1 for r in part])
        outs.append(z[torch.arange(len(part)), last])
    return torch.cat(outs)


def shift_stats(clean: torch.Tensor, steered: torch.Tensor, a: int, b: int) -> LogitShift:
    """LogitShift from clean and steered last-token logits [N, V] and the token pair (a, b)."""
    lp_c, lp_s = torch.log_softmax(clean, -1), torch.log_softmax(steered, -1)
    p_c, p_s = lp_c.exp(), lp_s.exp()
    kl = (p_c * (lp_c - lp_s)).sum(-1)
    H_c, H_s = -(p_c * lp_c).sum(-1), -(p_s * lp_s).sum(-1)
    f = lambda t: t.double().numpy()  # noqa: E731
    return LogitShift(ld_clean=f(clean[:, a] - clean[:, b]), ld_steered=f(steered[:, a] - steered[:, b]),
                      kl=f(kl.clamp_min(0)), d_entropy=f(H_s - H_c), mean_shift=f((steered - clean).mean(-1)))


def logit_shift(lm: LoadedModel, prompts: Sequence[str], steer: Steer, token_a: str, token_b: str) -> LogitShift:
    """Global logit shift of ``steer`` on prompts (positions rule applied with the prompt as the prompt)."""
    a, b = single_token(lm, token_a), single_token(lm, token_b)
    rows = [token_ids(lm.tokenizer, p) for p in prompts]
    return shift_stats(_last_logits(lm, rows, None), _last_logits(lm, rows, steer), a, b)


@dataclass(frozen=True)
class Sweep:
    """Steering sweep: means over prompts for each (layer, alpha): arrays [n_layers, n_alphas].

    ld_* = mean steered logit difference z_a - z_b; d_ld_* its change; kl_* = mean KL(clean || steered);
    d_entropy_control / mean_shift_control on the controls. ld_*_clean [1] = the clean means.
    """

    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    token_a: str
    token_b: str
    rule: str
    ld_target: np.ndarray
    d_ld_target: np.ndarray
    kl_target: np.ndarray
    ld_control: np.ndarray
    d_ld_control: np.ndarray
    kl_control: np.ndarray
    d_entropy_control: np.ndarray
    mean_shift_control: np.ndarray
    ld_target_clean: float
    ld_control_clean: float
    n_targets: int
    n_controls: int


def steering_sweep(lm: LoadedModel, vectors: dict[int, np.ndarray], alphas: Sequence[float],
                   targets: Sequence[str], controls: Sequence[str], token_a: str, token_b: str, *,
                   rule: str = "all", preserve_norm: bool = False, progress: Progress = None) -> Sweep:
    """Sweep alpha for each layer's vector: logit difference and KL on target prompts vs control prompts."""
    if not vectors:
        raise InputError("Pick at least one layer to sweep.")
    if not alphas:
        raise InputError("Give at least one alpha to sweep.")
    if not targets or not controls:
        raise InputError("The sweep needs at least one target prompt and one control prompt.")
    for l in vectors:
        lm.check_layer(int(l))
    a, b = single_token(lm, token_a), single_token(lm, token_b)
    t_rows = [token_ids(lm.tokenizer, p) for p in targets]
    c_rows = [token_ids(lm.tokenizer, p) for p in controls]
    t_clean, c_clean = _last_logits(lm, t_rows, None), _last_logits(lm, c_rows, None)
    layers = sorted(int(l) for l in vectors)
    shape = (len(layers), len(alphas))
    arr = {k: np.zeros(shape) for k in ("ld_t", "dld_t", "kl_t", "ld_c", "dld_c", "kl_c", "dh_c", "ms_c")}
    n_steps, done = len(layers) * len(alphas), 0
    for i, l in enumerate(layers):
        for j, al in enumerate(alphas):
            steer = Steer(l, np.asarray(vectors[l], dtype=np.float32), float(al), rule, preserve_norm)
            st_t = shift_stats(t_clean, _last_logits(lm, t_rows, steer), a, b)
            st_c = shift_stats(c_clean, _last_logits(lm, c_rows, steer), a, b)
            arr["ld_t"][i, j], arr["dld_t"][i, j], arr["kl_t"][i, j] = st_t.ld_steered.mean(), st_t.d_ld.mean(), st_t.kl.mean()
            arr["ld_c"][i, j], arr["dld_c"][i, j], arr["kl_c"][i, j] = st_c.ld_steered.mean(), st_c.d_ld.mean(), st_c.kl.mean()
            arr["dh_c"][i, j], arr["ms_c"][i, j] = st_c.d_entropy.mean(), st_c.mean_shift.mean()
            done += 1
            if progress is not None:
                progress(done / n_steps, f"layer {l}, alpha {al:g}")
    ld_t0 = float((t_clean[:, a] - t_clean[:, b]).mean())
    ld_c0 = float((c_clean[:, a] - c_clean[:, b]).mean())
    return Sweep(tuple(layers), tuple(float(x) for x in alphas), token_a, token_b, rule, arr["ld_t"], arr["dld_t"],
                 arr["kl_t"], arr["ld_c"], arr["dld_c"], arr["kl_c"], arr["dh_c"], arr["ms_c"], ld_t0, ld_c0,
                 len(targets), len(controls))


def next_token_prob(lm: LoadedModel, prompts: Sequence[str], token: str, steer: Steer | None = None) -> np.ndarray:
    """p(token | prompt) at the last prompt token, with optional steering: [N]."""
    t = single_token(lm, token)
    rows = [token_ids(lm.tokenizer, p) for p in prompts]
    return torch.softmax(_last_logits(lm, rows, steer), -1)[:, t].double().numpy()

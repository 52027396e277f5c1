"""Tuned lens (methods.md section 1, "Tuned lens"; Belrose et al. 2023): a learned affine map per layer, then the readout.

For every layer l < L a translator T_l(h) = h + A_l h + b_l (A_l, b_l zero at init: the identity, so an untrained
tuned lens *is* the logit lens, bit for bit: an identity layer is skipped) is trained to minimise
KL(p_L || softmax(readout(T_l(h_l)))), p_L the model's own next-token distribution, ``readout`` the logit lens's
(analysis.core.readout: final norm recomputed, fp32, soft-capped). Layer L has no translator.

Recipe (``train``), sized for a CPU: the corpus is split into lines, every 5th line held out (``split_corpus``);
the residual stream h_0..h_L of up to ``positions`` training token positions is captured once (no logits). Then
1. warm start: per layer a ridge regression of the normalised final stream (rescaled to h_l's mean norm) on h_l,
   shrunk towards the identity, kept where it lowers the KL on a probe batch;
2. ``steps`` Adam steps on the KL itself, all layers together, ``batch`` random positions a step, the learning rate
   decaying linearly to 0 (b_l is stepped in units of h_l's mean norm, so one learning rate fits every layer);
3. per layer, the best on the probe batch of trained / warm start / identity is kept.
The unembedding matmul ([rows, d] x [d, V], forward and backward) is the cost: steps x batch x L of them.

Stored as safetensors (A [L, d, d], b [L, d], the held-out evaluation) with metadata (model name and weights sha256,
corpus sha256, steps, layers, d_model); ``check`` refuses other weights or shapes (TranslatorMismatchError). Cache:
~/.cache/logitscope/tuned_lens, one file per model weights (``LOGITSCOPE_TUNED_LENS`` moves it).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import IncompatibleModelsError, InputError, LogitscopeError
from analysis.core.loading import LoadedModel, resolve_source
from analysis.core.paths import DATA_ROOT
from analysis.core.progress import Progress, ProgressFn
from analysis.core.readout import center, norm_scale, readout
from analysis.lens.inputs import capture_residuals
from analysis.models.weights import weights_sha256

CACHE_ENV = "LOGITSCOPE_TUNED_LENS"
FORMAT = "logitscope-tuned-lens/1"
DEMO_CORPUS = DATA_ROOT / "data" / "prompts" / "corpus_sample.txt"
HELD_OUT_EVERY = 5  # line i is held out when i % 5 == 4
HELD_OUT_POSITIONS = 768  # fit() evaluates on held-out lines up to this many tokens
MAX_LINE_TOKENS = 128
BATCH = 128  # positions per Adam step
FLOP_BUDGET = 3e12  # default_steps: the Adam phase's budget
MIN_STEPS, MAX_STEPS = 4, 200
STEP_HELP = ("Adam steps on the KL after the ridge warm start (default: what fits about a minute of CPU, "
             f"{MIN_STEPS}-{MAX_STEPS}: {MAX_STEPS} on the demo models, 6 on SmolLM2-135M; 0 = warm start only)")
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TranslatorMismatchError(IncompatibleModelsError):
    """A tuned lens trained for other weights, or for another number of layers or width, was applied to a model."""


@dataclass(frozen=True, eq=False)
class HeldOut:
    """Per-layer means over the held-out positions, layers 0..L: KL(p_L || p_l) [L+1] and cross-entropy against the
    next token [L+1] (nats), for the logit lens and the tuned lens."""

    kl_logit: np.ndarray
    kl_tuned: np.ndarray
    xent_logit: np.ndarray
    xent_tuned: np.ndarray
    n_positions: int
    n_texts: int

    @property
    def n_layers(self) -> int:
        """L (the arrays have L + 1 entries)."""
        return len(self.kl_logit) - 1


@dataclass(frozen=True, eq=False)
class Translator:
    """A tuned lens: T_l(h) = h + h @ A[l].T + b[l] for l < L (A [L, d, d], b [L, d], fp32), and what made it."""

    A: np.ndarray
    b: np.ndarray
    model_name: str
    weights_sha256: str
    corpus_sha256: str = ""
    steps: int = 0
    positions: int = 0
    seconds: float = 0.0
    recipe: dict = field(default_factory=dict)
    held_out: HeldOut | None = None

    @property
    def n_layers(self) -> int:
        """L: the model's number of blocks (translators exist for layers 0..L-1)."""
        return int(self.A.shape[0])

    @property
    def d_model(self) -> int:
        """The residual width d."""
        return int(self.A.shape[-1])

    def is_identity(self, layer: int) -> bool:
        """True when layer ``layer``'s translator is the identity (always at L)."""
        return layer >= self.n_layers or not (self.A[layer].any() or self.b[layer].any())

    def apply(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        """T_layer(h) for h [..., d] (fp32); h itself, untouched, where the translator is the identity."""
        if self.is_identity(layer):
            return h
        x = h.float()
        A = torch.from_numpy(self.A[layer]).to(x.device)
        b = torch.from_numpy(self.b[layer]).to(x.device)
        return x + x @ A.T + b

    @property
    def sha256(self) -> str:
        """A digest of the translator's weights (A, b): which translator made a result."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.A, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.b, dtype=np.float32).tobytes())
        return h.hexdigest()

    def metadata(self) -> dict:
        """JSON-ready facts (for the file's header, metadata.json and the page)."""
        return {"format": FORMAT, "model_name": self.model_name, "weights_sha256": self.weights_sha256,
                "corpus_sha256": self.corpus_sha256, "steps": self.steps, "layers": self.n_layers,
                "d_model": self.d_model, "positions": self.positions, "seconds": round(self.seconds, 2),
                "recipe": self.recipe, "translator_sha256": self.sha256}


@dataclass(frozen=True, eq=False)
class Summary:
    """What a lens result keeps of its translator: the metadata and the held-out evaluation (no weights)."""

    meta: dict
    held_out: HeldOut | None


def summary(tr: Translator) -> Summary:
    """The translator's metadata and held-out evaluation, without A and b."""
    return Summary(tr.metadata(), tr.held_out)


def identity(lm: LoadedModel) -> Translator:
    """The untrained translator of ``lm`` (A = 0, b = 0): the logit lens."""
    L, d = lm.adapter.n_layers, lm.adapter.d_model
    return Translator(np.zeros((L, d, d), np.float32), np.zeros((L, d), np.float32), lm.name, model_sha256(lm))


# --------------------------------------------------------------------------------------------- identity of a model
def model_sha256(lm: LoadedModel) -> str:
    """The fingerprint of the model's weights: analysis.models.weights over its local files (as on the model card),
    else a sha256 of its parameters in memory (hub or in-memory models)."""
    got = _FINGERPRINTS.get(lm.model)
    if got:
        return got

    digest = None
    try:
        path, local = resolve_source(lm.spec.source)
        digest = weights_sha256(path, lm.spec.adapter) if local else None
    except LogitscopeError:
        digest = None
    if digest is None:
        h = hashlib.sha256()
        for name, t in sorted(lm.model.state_dict().items()):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digest = "mem-" + h.hexdigest()
    _FINGERPRINTS[lm.model] = digest
    return digest


def check(tr: Translator, lm: LoadedModel) -> Translator:
    """The translator if it was trained for exactly this model; TranslatorMismatchError otherwise."""
    ad = lm.adapter
    if (tr.n_layers, tr.d_model) != (ad.n_layers, ad.d_model):
        raise TranslatorMismatchError(
            f"This tuned lens was trained for {tr.model_name} ({tr.n_layers} layers, width {tr.d_model}); {lm.name} "
            f"has {ad.n_layers} layers of width {ad.d_model}. Train a tuned lens for {lm.name}.")
    mine = model_sha256(lm)
    if tr.weights_sha256 != mine:
        raise TranslatorMismatchError(
            f"This tuned lens was trained for {tr.model_name} (weights {tr.weights_sha256[:12]}…), not for "
            f"{lm.name} (weights {mine[:12]}…): a translator only fits the weights it was trained on. Train a tuned "
            f"lens for {lm.name}.")
    return tr


# --------------------------------------------------------------------------------------------- corpus
def corpus_lines(text: str) -> list[str]:
    """The corpus's non-empty lines, each kept exactly as written (one text per line)."""
    return [ln for ln in text.splitlines() if ln.strip()]


def split_corpus(text: str) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines): every 5th line (i % 5 == 4) is held out; deterministic."""
    lines = corpus_lines(text)
    if len(lines) < HELD_OUT_EVERY:
        raise InputError(f"The corpus has {len(lines)} non-empty lines; a tuned lens needs at least "
                         f"{HELD_OUT_EVERY} (one in {HELD_OUT_EVERY} is held out).")
    held = [ln for i, ln in enumerate(lines) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train_lines = [ln for i, ln in enumerate(lines) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train_lines, held


def corpus_sha256(text: str) -> str:
    """sha256 of the corpus text (utf-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rows(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    limit = min(MAX_LINE_TOKENS, lm.context_length)
    rows = [[int(t) for t in lm.tokenizer(x, add_special_tokens=True)["input_ids"]][:limit] for x in texts]
    return [r for r in rows if r]


def _capture(lm: LoadedModel, rows: list[list[int]], batch_size: int = 16, progress: Progress = None
             ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """h_l of every real position of ``rows``: ([L+1] x [P, d] fp32 on the CPU, next-token ids [P], -1 at the end)."""
    L = lm.adapter.n_layers
    pad = pad_token_id(lm.tokenizer)
    hs: list[list[torch.Tensor]] = [[] for _ in range(L + 1)]
    nxt: list[torch.Tensor] = []
    parts = chunks(len(rows), batch_size)
    for i, s in enumerate(parts):
        batch = batch_from_ids(rows[s], pad, "right")
        store = capture_residuals(lm, batch.input_ids, batch.attention_mask, batch.position_ids)
        real = batch.attention_mask.reshape(-1).nonzero().squeeze(1)
        for l in range(L + 1):
            hs[l].append(store[l].reshape(-1, store[l].shape[-1])[real.to(store[l].device)].float().cpu())
        following = torch.full_like(batch.input_ids, -1)
        following[:, :-1] = torch.where(batch.attention_mask[:, 1:].bool(), batch.input_ids[:, 1:], -1)
        nxt.append(following.reshape(-1)[real])
        del store
        if progress:
            progress((i + 1) / len(parts), f"residual stream, texts {s.stop} of {len(rows)}")
    return [torch.cat(h) for h in hs], torch.cat(nxt)


# --------------------------------------------------------------------------------------------- training
def _kl(logp_L: torch.Tensor, p_L: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """KL(p_L || softmax(z)) per row [r]."""
    return (p_L * (logp_L - torch.log_softmax(z, dim=-1))).sum(-1)


def _warm_start(lm: LoadedModel, X: torch.Tensor, h_L: torch.Tensor, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [d, d], b [d]): y ~ h + h A^T + b by ridge regression shrunk towards the identity (fp64 solve)."""
    fn = lm.adapter.final_norm  # target: h_L normalised as the final norm does (no gain/bias), at h_l's mean norm
    Y = (center(fn, h_L) / norm_scale(fn, h_L) * float(norm_scale(fn, X).mean())).double()
    Xd = X.double()
    xm, ym = Xd.mean(0), Y.mean(0)
    Xc, Yc = Xd - xm, Y - ym
    G = Xc.T @ Xc
    d = G.shape[0]
    lam = ridge * float(torch.trace(G)) / d + 1e-12
    eye = torch.eye(d, dtype=torch.float64)
    M = torch.linalg.solve(G + lam * eye, Xc.T @ Yc + lam * eye)  # y ~ (x - xm) M + ym
    A = (M - eye).T
    b = ym - xm @ M
    return A.float(), b.float()


def default_steps(lm: LoadedModel, batch: int = BATCH) -> int:
    """Adam steps that fit a fixed CPU budget (~3e12 flops: about a minute on two cores): 4 x batch x L x V x d flops
    a step (the unembedding forward and backward), between MIN_STEPS and MAX_STEPS."""
    ad = lm.adapter
    per_step = 4.0 * batch * ad.n_layers * ad.vocab_size * ad.d_model
    return int(min(MAX_STEPS, max(MIN_STEPS, FLOP_BUDGET // per_step)))


def train(lm: LoadedModel, texts: Sequence[str], steps: int | None = None, progress: Progress = None, *,
          positions: int = 4096, batch: int = BATCH, lr: float = 0.02, ridge: float = 0.05, warm_start: bool = True,
          seed: int = 0, corpus_sha256: str = "") -> Translator:
    """A translator for every layer l < L of ``lm``, trained on ``texts`` (see the module docstring for the recipe);
    ``steps`` None = ``default_steps(lm)``; Adam's learning rate is lr / sqrt(d)."""
    t0 = time.perf_counter()
    steps = default_steps(lm, batch) if steps is None else steps
    if isinstance(steps, bool) or int(steps) < 0:
        raise InputError(f"The number of training steps must be 0 or more, got {steps!r}.")
    steps, ad = int(steps), lm.adapter
    L, d = ad.n_layers, ad.d_model
    rows = _rows(lm, texts)
    if not rows:
        raise InputError("The training corpus has no text: give at least one non-empty line.")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=gen).tolist()  # a random subset of lines up to `positions` tokens
    sizes = np.cumsum([len(rows[i]) for i in order])
    chosen = [rows[i] for i in order[: int(np.searchsorted(sizes, positions)) + 1]]
    report: ProgressFn = progress or (lambda f, m: None)
    hs, _ = _capture(lm, chosen, progress=lambda f, m: report(0.15 * f, m))
    N = hs[0].shape[0]
    scales = [float(norm_scale(ad.final_norm, hs[l]).mean()) for l in range(L)]
    A = torch.zeros(L, d, d)
    b = torch.zeros(L, d)
    probe = torch.randperm(N, generator=gen)[: min(N, batch)]
    with torch.no_grad():
        logp_probe = torch.log_softmax(readout(ad, hs[L][probe]), -1)
        p_probe = logp_probe.exp()
    if warm_start:
        for l in range(L):
            A_l, b_l = _warm_start(lm, hs[l], hs[L], ridge)
            with torch.no_grad():
                h = hs[l][probe]
                base = _kl(logp_probe, p_probe, readout(ad, h)).mean()
                warm = _kl(logp_probe, p_probe, readout(ad, h + h @ A_l.T + b_l)).mean()
            if warm < base:
                A[l], b[l] = A_l, b_l
            report(0.15 + 0.1 * (l + 1) / L, f"warm start, layer {l} of {L - 1}")
    # Adam on the KL itself; b is stepped in units of the layer's mean norm (q = b / scale)
    P = A.clone().requires_grad_(True)
    q = (b / torch.tensor(scales).unsqueeze(1)).requires_grad_(True)
    sc = torch.tensor(scales).unsqueeze(1)
    opt = torch.optim.Adam([P, q], lr=lr / math.sqrt(d))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: max(0.0, 1.0 - i / max(steps, 1)))
    losses: list[float] = []
    for step in range(steps):
        idx = torch.randint(0, N, (min(batch, N),), generator=gen)
        with torch.no_grad():
            logp_L = torch.log_softmax(readout(ad, hs[L][idx]), -1)
            p_L = logp_L.exp()
        opt.zero_grad(set_to_none=False)
        total_loss = 0.0
        for l in range(L):
            h = hs[l][idx]
            loss = _kl(logp_L, p_L, readout(ad, h + h @ P[l].T + sc[l] * q[l])).mean()
            loss.backward()  # one layer's graph at a time: one [batch, V] block alive
            total_loss += float(loss.detach())
        opt.step()
        sched.step()
        losses.append(total_loss / L)
        report(0.25 + 0.7 * (step + 1) / max(steps, 1), f"step {step + 1} of {steps}, mean KL {total_loss / L:.3f}")
    with torch.no_grad():
        A_out = P.detach().clone().numpy().astype(np.float32)
        b_out = (sc * q.detach()).numpy().astype(np.float32)
        kept = []  # per layer the best on the probe batch of: trained, warm start, identity
        for l in range(L):
            h = hs[l][probe]
            options = {"trained": (A_out[l], b_out[l]), "warm start": (A[l].numpy(), b[l].numpy()),
                       "identity": (np.zeros((d, d), np.float32), np.zeros(d, np.float32))}
            if steps == 0:
                del options["trained"]
            score = {k: float(_kl(logp_probe, p_probe, readout(ad, h + h @ torch.from_numpy(a).T +
                                                                  torch.from_numpy(c))).mean())
                     for k, (a, c) in options.items()}
            best = min(score, key=score.__getitem__)
            A_out[l], b_out[l] = options[best]
            kept.append(best)
    recipe = {"optimizer": "adam", "lr": lr / math.sqrt(d), "kept": kept, "batch": batch, "ridge": ridge, "seed": seed,
              "held_out_every": HELD_OUT_EVERY, "max_line_tokens": MAX_LINE_TOKENS,
              "loss": [round(x, 5) for x in losses[:1] + losses[-1:]]}
    report(1.0, "done")
    return Translator(A_out, b_out, lm.name, model_sha256(lm), corpus_sha256, steps, N,
                      time.perf_counter() - t0, recipe)


# --------------------------------------------------------------------------------------------- evaluation
def evaluate(lm: LoadedModel, tr: Translator, texts: Sequence[str], progress: Progress = None,
             chunk_rows: int = 256) -> HeldOut:
    """Mean KL(p_L || p_l) over every position and mean cross-entropy over positions with a next token, per layer,
    for the logit lens and for the tuned lens ``tr``, on ``texts``."""
    check(tr, lm)
    ad = lm.adapter
    L = ad.n_layers
    rows = _rows(lm, texts)
    if not rows:
        raise InputError("The held-out text is empty: give at least one non-empty line.")
    report: ProgressFn = progress or (lambda f, m: None)
    hs, nxt = _capture(lm, rows, progress=lambda f, m: report(0.3 * f, m))
    P = hs[0].shape[0]
    sums = np.zeros((4, L + 1), np.float64)
    has_next = nxt >= 0
    parts = chunks(P, chunk_rows)
    with torch.inference_mode():
        for j, c in enumerate(parts):
            logp_L = torch.log_softmax(readout(ad, hs[L][c]), -1)
            p_L = logp_L.exp()
            m, t = has_next[c], nxt[c].clamp(min=0)
            for l in range(L + 1):  # k = 0: logit lens, 1: tuned lens (where it is not the identity)
                for k, h in enumerate([hs[l][c]] + ([] if tr.is_identity(l) else [tr.apply(l, hs[l][c])])):
                    logq = torch.log_softmax(readout(ad, h), -1)
                    sums[k, l] += float((p_L * (logp_L - logq)).sum(-1).clamp(min=0).sum())
                    sums[2 + k, l] += float(-(logq.gather(1, t.unsqueeze(1)).squeeze(1)[m]).sum())
            report(0.3 + 0.7 * (j + 1) / len(parts), "held-out KL and cross-entropy")
    same = [tr.is_identity(l) for l in range(L + 1)]
    sums[1, same], sums[3, same] = sums[0, same], sums[2, same]
    n_next = max(int(has_next.sum()), 1)
    return HeldOut(kl_logit=(sums[0] / P).astype(np.float32), kl_tuned=(sums[1] / P).astype(np.float32),
                   xent_logit=(sums[2] / n_next).astype(np.float32), xent_tuned=(sums[3] / n_next).astype(np.float32),
                   n_positions=int(P), n_texts=len(rows))


def fit(lm: LoadedModel, corpus: str, steps: int | None = None, progress: Progress = None, **options) -> Translator:
    """Train on the corpus's training lines and evaluate on its held-out lines (the first ones, up to
    HELD_OUT_POSITIONS tokens): the translator with ``held_out``."""
    train_lines, held = split_corpus(corpus)
    sizes = np.cumsum([len(lm.tokenizer(x, add_special_tokens=True)["input_ids"]) for x in held])
    held = held[: int(np.searchsorted(sizes, HELD_OUT_POSITIONS)) + 1]
    report: ProgressFn = progress or (lambda f, m: None)
    tr = train(lm, train_lines, steps, lambda f, m: report(0.9 * f, m), corpus_sha256=corpus_sha256(corpus),
               **options)
    ev = evaluate(lm, tr, held, lambda f, m: report(0.9 + 0.1 * f, m))
    return replace(tr, held_out=ev)


# --------------------------------------------------------------------------------------------- files
def cache_dir() -> Path:
    """Where trained translators are kept: ~/.cache/logitscope/tuned_lens, or $LOGITSCOPE_TUNED_LENS."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "logitscope" / "tuned_lens")


def cache_path(lm: LoadedModel) -> Path:
    """The cache file of ``lm``'s translator (one per model weights)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", lm.name)[:60]
    return cache_dir() / f"{name}-{model_sha256(lm).removeprefix('mem-')[:16]}.safetensors"


_HELD = ("kl_logit", "kl_tuned", "xent_logit", "xent_tuned")


def save(tr: Translator, path: str | Path) -> Path:
    """Write the translator (and its held-out evaluation) as safetensors with its metadata; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"A": torch.from_numpy(np.ascontiguousarray(tr.A)), "b": torch.from_numpy(np.ascontiguousarray(tr.b))}
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in tr.metadata().items()}
    if tr.held_out is not None:
        for k in _HELD:
            tensors[f"held_out.{k}"] = torch.from_numpy(np.ascontiguousarray(getattr(tr.held_out, k)))
        meta["held_out"] = json.dumps({"n_positions": tr.held_out.n_positions, "n_texts": tr.held_out.n_texts})
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load(path: str | Path, lm: LoadedModel | None = None) -> Translator:
    """Read a translator file (checked against ``lm`` when given); InputError when it is not one."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (OSError, SafetensorError, ValueError) as err:
        raise InputError(f"{path.name} could not be read as a tuned lens ({err}).") from None
    if meta.get("format") != FORMAT or "A" not in tensors or "b" not in tensors:
        raise InputError(f"{path.name} is not a Logitscope tuned lens file (format {FORMAT}).")
    held = None
    if all(f"held_out.{k}" in tensors for k in _HELD):
        info = json.loads(meta.get("held_out", "{}"))
        held = HeldOut(**{k: tensors[f"held_out.{k}"].numpy() for k in _HELD}, n_positions=int(info.get("n_positions", 0)),
                       n_texts=int(info.get("n_texts", 0)))
    tr = Translator(tensors["A"].float().numpy(), tensors["b"].float().numpy(), meta.get("model_name", ""),
                    meta.get("weights_sha256", ""), meta.get("corpus_sha256", ""), int(json.loads(meta.get("steps", "0"))),
                    int(json.loads(meta.get("positions", "0"))), float(json.loads(meta.get("seconds", "0"))),
                    json.loads(meta.get("recipe", "{}")), held)
    return check(tr, lm) if lm is not None else tr


def cached(lm: LoadedModel) -> Translator | None:
    """The translator trained for ``lm``'s weights in the cache, or None."""
    path = cache_path(lm)
    return load(path, lm) if path.is_file() else None


def cache_stamp(lm: LoadedModel) -> str | None:
    """A cheap token that changes whenever ``lm``'s cached translator is written (None: no translator cached)."""
    try:
        st = cache_path(lm).stat()
    except OSError:
        return None
    return f"{st.st_mtime_ns}-{st.st_size}"


def store(tr: Translator, lm: LoadedModel) -> Path:
    """Put a translator that fits ``lm`` into the cache (the lens page and ``lens --lens tuned`` read it there)."""
    return save(check(tr, lm), cache_path(lm))


def require(lm: LoadedModel) -> Translator:
    """The cached translator of ``lm``; InputError telling how to train one when there is none."""
    tr = cached(lm)
    if tr is None:
        raise InputError(f"No tuned lens is trained for {lm.name} yet: press 'Train tuned lens' on the Logit lens "
                         f"page, or run `python -m logitscope tuned-lens --model {lm.spec.source}`.")
    return tr


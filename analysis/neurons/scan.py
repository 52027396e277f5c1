"""Weight-based scans for confidence-regulation neurons (Stolfo et al. 2024): entropy and token-frequency neurons.

A neuron ``L<b>.N<n>`` (e.g. ``L11.N584``, the paper's "11.584" for GPT-2 small) is hidden unit n of block b's
MLP with a 0-based block b; its write lands in residual layer b+1 (layer convention: 0 = embeddings, L = last
block output). Ids are always written in that form, never as "b.n": a spreadsheet or pandas reads "29.10" back
as the float 29.1, which is another neuron. The old "b.n" form is still accepted as input.
w_out = row n of the down-projection (``adapter.neuron_out_weights(b)``), activation = the input of the
down-projection (for gated MLPs act(gate) * up).

Entropy neurons (last block): ||w_out||, rho = ||U_0^T w_out|| / ||w_out|| where W_U'^T = U S V^T
(U is d x d, singular values descending, U_0 = the last k columns), and LogitVar = Var_v cos(w_out, u_v).
Token-frequency neurons (every block): cos(W_U' w_out, f), f = log p_freq - mean(log p_freq).

``processing=True`` reproduces the paper's TransformerLens-style weights, always on copies (W_U may be
tied to the input embedding): the final norm's gain folded into W_U, W_U centred over the vocabulary,
and w_out centred over d for LayerNorm models (LayerNorm removes that mean anyway).
Gemma-2 passes the MLP output through a post-feed-forward norm: there w_out is the direction before
that norm, so the scan is only indicative.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.architectures import NORM_LAYERNORM, Adapter
from analysis.core.errors import InputError
from analysis.core.progress import Progress
from analysis.core.wording import plural, verb
from analysis.neurons.unigram import Unigram

NeuronId = tuple[int, int]  # (block, index)


# ------------------------------------------------------------------------------------------ neuron ids
def neuron_label(block: int, index: int) -> str:
    """'L{block}.N{index}' (e.g. 'L29.N10') - the neuron id written everywhere (0-based block)."""
    return f"L{int(block)}.N{int(index)}"


NEURON_ID_RE = re.compile(r"[Ll](-?\d+)\.?[Nn](-?\d+)|(-?\d+)\.(-?\d+)")


def parse_neuron_label(text: str) -> NeuronId:
    """(block, index) of one id 'L3.N130' (also 'L3N130', any case) or the old form '3.130'; no range check."""
    m = NEURON_ID_RE.fullmatch(str(text).strip())
    if not m:
        raise InputError(f"'{text}' is not a neuron id; write L{{block}}.N{{index}} with a 0-based block, e.g. L3.N130.")
    g = m.groups()
    return (int(g[0]), int(g[1])) if g[0] is not None else (int(g[2]), int(g[3]))


def split_neuron_text(text: str) -> list[str]:
    """The ids in a list typed by a user (separated by commas, semicolons or spaces)."""
    return [p for p in re.split(r"[\s,;]+", text or "") if p]


def canonical_neuron_text(text: str) -> str:
    """A typed list of ids rewritten as 'L<b>.N<n>, ...' (for settings and metadata); unparsable text unchanged."""
    try:
        return ", ".join(neuron_label(*parse_neuron_label(p)) for p in split_neuron_text(text))
    except InputError:
        return text


def n_neurons(adapter: Adapter, block: int) -> int:
    """Number of MLP neurons in block ``block``."""
    return int(adapter.neuron_out_weights(block).shape[0])


def check_neuron(adapter: Adapter, block: int, index: int) -> NeuronId:
    """Validate a neuron id; raise InputError naming the valid range."""
    if not 0 <= block < adapter.n_layers:
        raise InputError(f"Neuron {neuron_label(block, index)}: block {block} is out of range; this model has "
                         f"blocks 0..{adapter.n_layers - 1} (neuron ids are L{{block}}.N{{index}}, 0-based block).")
    n = n_neurons(adapter, block)
    if not 0 <= index < n:
        raise InputError(f"Neuron {neuron_label(block, index)} is out of range: block {block} has neurons 0..{n - 1}.")
    return int(block), int(index)


def parse_neuron_ids(text: str, adapter: Adapter) -> tuple[NeuronId, ...]:
    """Parse 'L3.N130, L3.N7 ...' (commas or spaces; the old '3.130' form too) into validated (block, index)
    pairs, duplicates dropped."""
    parts = split_neuron_text(text)
    if not parts:
        raise InputError("Give at least one neuron as L{block}.N{index}, e.g. "
                         f"{neuron_label(adapter.n_layers - 1, 0)} (0-based block).")
    out: list[NeuronId] = []
    for p in parts:
        try:
            block, index = parse_neuron_label(p)
        except InputError:
            raise InputError(f"'{p}' is not a neuron id; write L{{block}}.N{{index}} with a 0-based block, e.g. "
                             f"{neuron_label(adapter.n_layers - 1, 17)}.") from None
        nid = check_neuron(adapter, block, index)
        if nid not in out:
            out.append(nid)
    return tuple(out)


# ------------------------------------------------------------------------------------------ weights
def default_k(d_model: int) -> int:
    """The null-space size: about 1% of d_model, at least 1."""
    return max(1, int(round(0.01 * d_model)))


def unembed_matrix(adapter: Adapter, processing: bool) -> torch.Tensor:
    """W_U' [V, d] fp32 copy: raw, or with the final gain folded in and centred over the vocabulary."""
    W = adapter.W_U.detach().float().clone()
    if processing:
        W = W * adapter.final_norm.gain.detach().to(W.device)[None, :]
        W = W - W.mean(dim=0, keepdim=True)
    return W


def out_weights(adapter: Adapter, block: int, processing: bool) -> torch.Tensor:
    """w_out rows [n, d] fp32 copy (centred over d for LayerNorm models when ``processing``)."""
    W = adapter.neuron_out_weights(block).detach().float().clone()
    if processing and adapter.final_norm.kind == NORM_LAYERNORM:
        W = W - W.mean(dim=1, keepdim=True)
    return W.to(adapter.W_U.device)


def gram(W: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """W^T W in float64, chunked over rows: [V, d] -> [d, d]."""
    d = W.shape[1]
    G = torch.zeros(d, d, dtype=torch.float64, device=W.device)
    for s in range(0, W.shape[0], chunk):
        Wc = W[s:s + chunk].double()
        G += Wc.T @ Wc
    return G


def unembed_svd(W: torch.Tensor, exact_limit: int = 20_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """(U [d, d] float64, S [d] descending, zeros when d > V) of W_U'^T (d x V).

    Exact float64 SVD (via R of a QR when V >= d) for matrices up to ``exact_limit`` entries; beyond that
    the eigendecomposition of W^T W (singular values below ~1e-8 of the largest are then not resolved).
    """
    V, d = W.shape
    if V * d <= exact_limit:
        Wd = W.double()
        if d <= V:
            Wd = torch.linalg.qr(Wd, mode="r").R
        _, S, Vh = torch.linalg.svd(Wd, full_matrices=True)
        S = torch.cat([S, torch.zeros(d - S.shape[0], dtype=S.dtype, device=S.device)])
        return Vh.T, S
    evals, evecs = torch.linalg.eigh(gram(W))
    order = torch.argsort(evals, descending=True)
    return evecs[:, order], evals[order].clamp(min=0).sqrt()


def null_fraction(w: torch.Tensor, U0: torch.Tensor) -> torch.Tensor:
    """rho = ||U_0^T w|| / ||w|| per row: w [n, d], U_0 [d, k] -> [n] in [0, 1] (0 for a zero vector)."""
    w = w.double()
    norm = w.norm(dim=-1)
    proj = (w @ U0.to(w.device, torch.float64)).norm(dim=-1)
    return torch.where(norm > 0, proj / norm.clamp(min=1e-300), torch.zeros_like(norm)).clamp(0.0, 1.0)


def logit_var(w: torch.Tensor, W: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Var over the vocabulary of cos(w, u_v) per row: w [n, d], W_U' [V, d] -> [n] (population variance)."""
    unit_u = W / W.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    w_hat = w / w.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    out = []
    for s in range(0, w.shape[0], chunk):
        cos = w_hat[s:s + chunk] @ unit_u.T
        out.append(cos.var(dim=-1, unbiased=False))
    return torch.cat(out) if out else torch.zeros(0)


# ------------------------------------------------------------------------------------------ entropy scan
@dataclass(frozen=True)
class EntropyScan:
    """Entropy-neuron scan of one block (the last by default).

    norms, rho, logit_var [n]; singular_values [d] of W_U' (descending); ranked [n] neuron indices by
    rho (descending); top [m] the first m of ranked with cos_U [m, d] = |cos(w_out, U_i)|; candidates:
    the indices that stand out (rho far above the rest, norm at least the median); message says so.
    """

    block: int
    k: int
    d_model: int
    processing: bool
    norms: np.ndarray
    rho: np.ndarray
    logit_var: np.ndarray
    singular_values: np.ndarray
    ranked: np.ndarray
    top: np.ndarray
    cos_U: np.ndarray
    candidates: np.ndarray
    threshold: float
    message: str

    @property
    def rho_random(self) -> float:
        """Expected rho of a random direction: sqrt(k/d)."""
        return float(np.sqrt(self.k / self.d_model))

    def labels(self, idx: Sequence[int] | None = None) -> list[str]:
        """'L<b>.N<n>' labels of ``idx`` (all neurons by default)."""
        idx = range(len(self.rho)) if idx is None else idx
        return [neuron_label(self.block, int(i)) for i in idx]


def _robust_threshold(x: np.ndarray, z: float = 6.0) -> float:
    """median + z * 1.4826 * MAD, and at least 1.5 times the median."""
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med))) * 1.4826
    return max(med + z * mad, 1.5 * med)


def scan_entropy(adapter: Adapter, *, block: int | None = None, k: int | None = None, processing: bool = True,
                 n_top: int = 10, extra: Sequence[int] = (), progress: Progress = None) -> EntropyScan:
    """Norm, rho and LogitVar of every neuron of ``block`` (default the last); see the module docstring."""
    block = adapter.n_layers - 1 if block is None else int(block)
    if not 0 <= block < adapter.n_layers:
        raise InputError(f"Block {block} is out of range: this model has blocks 0..{adapter.n_layers - 1}.")
    d = adapter.d_model
    k = default_k(d) if k is None else int(k)
    if not 1 <= k <= d - 1:
        raise InputError(f"The null-space size k must be between 1 and {d - 1} (d_model = {d}); got {k}.")
    with torch.no_grad():
        if progress:
            progress(0.1, "SVD of the unembedding")
        W = unembed_matrix(adapter, processing)
        U, S = unembed_svd(W)
        Wout = out_weights(adapter, block, processing)
        if progress:
            progress(0.5, "null-space fractions")
        norms = Wout.norm(dim=-1)
        rho = null_fraction(Wout, U[:, d - k:])
        lv = logit_var(Wout, W)
        ranked = torch.argsort(rho, descending=True, stable=True)
        for i in extra:
            check_neuron(adapter, block, int(i))
        head = [int(i) for i in ranked[:n_top]]
        top = head + [int(i) for i in extra if int(i) not in head]
        top_t = torch.as_tensor(top, dtype=torch.long, device=Wout.device)
        w_top = Wout[top_t].double()
        cos_U = (w_top @ U.to(w_top.device)).abs() / w_top.norm(dim=-1, keepdim=True).clamp(min=1e-300)
    rho_np = rho.cpu().numpy()
    norms_np = norms.cpu().numpy().astype(np.float64)
    thr = _robust_threshold(rho_np)
    cand = [int(i) for i in ranked.cpu().numpy() if rho_np[i] >= thr and norms_np[i] >= np.median(norms_np)]
    med = float(np.median(rho_np))
    best = int(ranked[0])
    if cand:
        shown = ", ".join(f"{neuron_label(block, i)} (rho {rho_np[i]:.3f}, norm {norms_np[i]:.2f})" for i in cand[:6])
        message = (f"{plural(len(cand), 'neuron')} of block {block} {verb(len(cand), 'stands', 'stand')} out as entropy-neuron candidates "
                   f"(rho >= {thr:.3f} and norm >= median): {shown}{' ...' if len(cand) > 6 else ''}. "
                   f"Median rho {med:.3f}; a random direction gives about {np.sqrt(k / d):.3f}.")
    else:
        message = (f"No neuron of block {block} stands out: top rho {rho_np[best]:.3f} "
                   f"({neuron_label(block, best)}), median {med:.3f}; a random direction gives about "
                   f"{np.sqrt(k / d):.3f} (k = {k}, d = {d}).")
    if progress:
        progress(1.0, "done")
    return EntropyScan(block=block, k=k, d_model=d, processing=processing, norms=norms_np, rho=rho_np,
                       logit_var=lv.cpu().numpy().astype(np.float64), singular_values=S.cpu().numpy(),
                       ranked=ranked.cpu().numpy(), top=np.asarray(top, dtype=np.int64),
                       cos_U=cos_U.cpu().numpy(), candidates=np.asarray(cand, dtype=np.int64),
                       threshold=float(thr), message=message)


# ------------------------------------------------------------------------------------------ frequency scan
@dataclass(frozen=True)
class FrequencyScan:
    """Token-frequency scan of every block: score [n_blocks, n] = cos(W_U' w_out, f); norms [n_blocks, n].

    top: the (block, index) pairs with the largest |score|, best first; candidates those that stand out.
    """

    processing: bool
    score: np.ndarray
    norms: np.ndarray
    top: tuple[NeuronId, ...]
    candidates: tuple[NeuronId, ...]
    n_reference_tokens: int
    message: str


def frequency_scores(adapter: Adapter, block: int, direction: torch.Tensor, W: torch.Tensor, G: torch.Tensor,
                     processing: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos(W_U' w_out, f) [n], ||w_out|| [n]) for one block, without forming W_U' w_out ([V, n])."""
    g = (W.double().T @ direction.to(W.device, torch.float64))  # [d] = W_U'^T f
    Wout = out_weights(adapter, block, processing).double()
    num = Wout @ g
    den = torch.sqrt(((Wout @ G) * Wout).sum(dim=-1).clamp(min=0)) * direction.double().norm()
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num)), Wout.norm(dim=-1)


def scan_frequency(adapter: Adapter, unigram: Unigram, *, processing: bool = True, n_top: int = 10,
                   progress: Progress = None) -> FrequencyScan:
    """Token-frequency score of every neuron in every block (see FrequencyScan)."""
    V = adapter.vocab_size
    if unigram.log_p.shape[0] != V:
        raise InputError(f"The unigram distribution has {unigram.log_p.shape[0]} entries, the unembedding {V}.")
    f = torch.as_tensor(unigram.direction)
    scores, norms = [], []
    with torch.no_grad():
        W = unembed_matrix(adapter, processing)
        G = gram(W)
        for b in range(adapter.n_layers):
            s, nrm = frequency_scores(adapter, b, f, W, G, processing)
            scores.append(s.cpu().numpy())
            norms.append(nrm.cpu().numpy())
            if progress:
                progress((b + 1) / adapter.n_layers, f"block {b}")
    score, norm = np.stack(scores), np.stack(norms)
    flat = np.argsort(-np.abs(score), axis=None, kind="stable")
    n = score.shape[1]
    top = tuple((int(i // n), int(i % n)) for i in flat[:n_top])
    a = np.abs(score)
    thr = _robust_threshold(a.ravel())
    cand = tuple((b, i) for b, i in top if a[b, i] >= thr)
    b0, i0 = top[0]
    if cand:
        shown = ", ".join(f"{neuron_label(b, i)} (cos {score[b, i]:+.3f})" for b, i in cand[:6])
        message = (f"{plural(len(cand), 'neuron')} {verb(len(cand), 'stands', 'stand')} out as token-frequency candidates (|cos| >= {thr:.3f}): {shown}. "
                   f"Median |cos| {np.median(a):.3f}.")
    else:
        message = (f"No neuron stands out along the frequency direction: top |cos| {a[b0, i0]:.3f} "
                   f"({neuron_label(b0, i0)}), median {np.median(a):.3f}.")
    return FrequencyScan(processing=processing, score=score, norms=norm, top=top, candidates=cand,
                         n_reference_tokens=unigram.n_tokens, message=message)

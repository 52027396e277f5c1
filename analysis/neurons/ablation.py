"""Neuron ablation: total effect (TE) and direct effect (DE) of replacing neuron activations (Stolfo et al. 2024).

Ablation values (``mode``): "zero"; "mean" (the neuron's mean activation over every real token of a
reference set); "clipped" (clipped mean: a <- min(a, mean) for a neuron whose sign is +1, i.e. only
activations above the mean are pulled down; a <- max(a, mean) for sign -1).

TE: the model is rerun with the activation replaced (an input hook on the down-projection, every
position; position_effects(keep_first=k) leaves positions t < k clean, as the induction study does for the
attention-sink position). DE: the final norm's scale frozen at the clean value sigma_clean per position, and
only the direct path through the unembedding acting:
    z_DE = softcap(W_U frozen_norm(h_L + sum_b delta_b, sigma_clean) + b_U),
where delta_b is the change of block b's MLP write caused by the new activations with block b's
inputs held clean: (a' - a) w_out (Gemma-2: the change after its post-feed-forward norm). For a
neuron of the LAST block h_L + delta is exactly the ablated final residual, so this is the paper's DE;
for earlier blocks it is the direct path only (no effect through later blocks). DE metrics are
compared with the same frozen readout of the clean h_L (which equals the model's logits).

Speed: a unit whose neurons all sit in the LAST block changes nothing but h_L (by exactly its delta), so its TE
needs no rerun: the model's own final norm module, W_U and soft-cap applied to h_L + delta, differenced against
the same head on the clean h_L (equal to the rerun up to fp32 round-off; ``TE_CLOSED_FORM``). Other units
rerun the model, several per forward pass on stacked copies of the batch (``GROUP_LOGITS`` bounds one pass's
logits).

Per token (positions with a real next token): change in next-token loss, entropy, final-norm scale
(TE only; DE freezes it), top-1 flips, and KL(p_model || p_freq) to the unigram distribution.
Per unit: mean |dLoss| TE and DE and the LN-mediated fraction M = 1 - mean|dLoss_DE| / mean|dLoss_TE|
(NaN when TE is zero).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.batching import Batch, bucketed, chunks, n_batches
from analysis.core.errors import InputError, NumericalError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook, output_hook, residual_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.readout import frozen_norm, norm_scale, softcap, unembed
from analysis.neurons.means import by_block, mean_activations
from analysis.neurons.scan import NeuronId, check_neuron, n_neurons, neuron_label

MODES = ("zero", "mean", "clipped")
METRICS = ("loss", "entropy", "top1", "kl", "sigma")
TE_CLOSED_FORM = True  # last-block units: TE = the model's head on h_L + delta (exact), no rerun
GROUP_LOGITS = 1 << 24  # logits entries (64 MiB fp32) of one ablated forward pass that stacks several units' copies


@dataclass(frozen=True)
class Unit:
    """One ablation: neurons (block, index) with their replacement value and clip sign (+1 or -1)."""

    label: str
    kind: str  # "neuron", "set", "random"
    neurons: tuple[NeuronId, ...]
    values: tuple[float, ...]
    signs: tuple[int, ...]


def _replace(a: torch.Tensor, mode: str, values: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """New activations for [..., k] given per-neuron values/signs [k]."""
    if mode == "zero":
        return torch.zeros_like(a)
    v = values.to(a.device, a.dtype).expand_as(a)
    if mode == "mean":
        return v.clone()
    if mode == "clipped":
        return torch.where(signs.to(a.device) > 0, torch.minimum(a, v), torch.maximum(a, v))
    raise InputError(f"Unknown ablation mode '{mode}'; use one of {', '.join(MODES)}.")


def _has_post_norm(lm: LoadedModel) -> bool:
    """True where the MLP output passes through a norm before the residual (Gemma-2)."""
    row = lm.adapter.row
    return row.mlp_write not in ("mlp", row.down_proj)


def _metrics(z: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor, log_pf: torch.Tensor | None,
             sigma: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """loss/entropy/top1/kl/sigma [B, T] (fp32 on cpu, NaN where there is no next token)."""
    lp = torch.log_softmax(z.float(), dim=-1)
    B, T, _ = lp.shape
    loss = torch.full((B, T), float("nan"))
    if T > 1:
        loss[:, :-1] = -lp[:, :-1].gather(-1, ids[:, 1:].to(lp.device)[..., None])[..., 0].cpu()
    p = lp.exp()
    plp = torch.einsum("btv,btv->bt", p, lp)  # sum_v p log p, without a [B, T, V] temporary
    ent = (-plp).cpu()
    kl = (plp - p @ log_pf.to(lp.device)).cpu() if log_pf is not None else torch.full((B, T), float("nan"))
    out = {"loss": loss, "entropy": ent, "top1": lp.argmax(-1).float().cpu(), "kl": kl,
           "sigma": sigma[..., 0].float().cpu() if sigma is not None else torch.full((B, T), float("nan"))}
    nanmask = ~valid
    for k in out:
        out[k] = out[k].masked_fill(nanmask, float("nan"))
    return out


def unit_groups(n_units: int, rows: int, T: int, vocab: int, budget: int | None = None) -> list[slice]:
    """Consecutive slices of units ablated together: one forward pass over one copy of the batch per unit, as many
    copies as keep the logits [copies * rows, T, vocab] within ``budget`` entries (default GROUP_LOGITS; at least
    one unit per pass)."""
    budget = GROUP_LOGITS if budget is None else int(budget)
    per = max(1, min(n_units, budget // max(1, rows * T * vocab)))
    return chunks(n_units, per)


def _valid_positions(batch: Batch) -> torch.Tensor:
    """[B, T] True where position t and t+1 are real tokens (t predicts t+1)."""
    m = batch.attention_mask.bool()
    v = torch.zeros_like(m)
    v[:, :-1] = m[:, :-1] & m[:, 1:]
    return v


def _rebase(res: dict, ref: dict, clean: dict, G: int) -> dict:
    """Closed-form TE metrics [G*B, T] moved onto the clean run: clean + (ablated - reference), both of the latter
    from the same readout (so no change gives exactly 0); top-1 keeps the clean token where the readout's agrees."""
    out = {}
    for k, v in res.items():
        r, c = ref[k].repeat(G, 1), clean[k].repeat(G, 1)
        if k == "top1":
            out[k] = torch.where(v == r, c, v)
        elif k == "sigma":  # the clean sigma is already this readout's norm_scale(h_L)
            out[k] = v
        else:
            out[k] = c + (v - r)
    return out


def _rerun_metrics(lm: LoadedModel, batch: Batch, units: Sequence[Unit], mode: str, keep_first: int,
                   ids: torch.Tensor, valid: torch.Tensor, log_pf: torch.Tensor | None) -> dict:
    """TE metrics [G*B, T] of G units from one forward pass over G stacked copies of the batch (copy g: unit g)."""
    ad = lm.adapter
    B, T = batch.input_ids.shape
    G = len(units)
    edits: dict[int, list[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]] = {}
    for g, u in enumerate(units):
        for b, js in by_block(u.neurons).items():
            edits.setdefault(b, []).append((slice(g * B, (g + 1) * B),
                                            torch.as_tensor([u.neurons[j][1] for j in js], dtype=torch.long),
                                            torch.as_tensor([u.values[j] for j in js], dtype=torch.float32),
                                            torch.as_tensor([u.signs[j] for j in js], dtype=torch.long)))
    store: dict = {}
    hooks = [residual_hook(ad, ad.n_layers, capture(store, "hL", lambda t: t.detach().float()))]
    for b, ed in edits.items():
        def fn(x: torch.Tensor, ed=ed) -> torch.Tensor:
            x = x.clone()
            for rows, idx, vals, sgn in ed:
                i = idx.to(x.device)
                x[rows, keep_first:, i] = _replace(x[rows, keep_first:, i], mode, vals, sgn).to(x.dtype)
            return x
        hooks.append(input_hook(ad.down_proj(b), fn, bt=(G * B, T)))
    stacked = Batch(batch.input_ids.repeat(G, 1), batch.attention_mask.repeat(G, 1), batch.position_ids.repeat(G, 1),
                    batch.padding_side)
    z = run(lm, stacked, hooks)
    return _metrics(z, ids, valid, log_pf, norm_scale(ad.final_norm, store["hL"]))


def _needed_neurons(units: Sequence[Unit]) -> dict[int, list[int]]:
    """Per block, the neuron indices any unit ablates, in first-seen order."""
    needed: dict[int, list[int]] = {}
    for u in units:
        for b, i in u.neurons:
            if i not in needed.setdefault(b, []):
                needed[b].append(i)
    return needed


def _direct_delta(lm: LoadedModel, u: Unit, store: dict, needed: dict[int, list[int]], hL: torch.Tensor,
                  mode: str, keep_first: int, post: bool) -> torch.Tensor:
    """The change of h_L [B, T, d] by unit u's direct path: its blocks' writes change, their inputs clean."""
    ad = lm.adapter
    delta = torch.zeros_like(hL)
    for b, js in by_block(u.neurons).items():
        idx = torch.as_tensor([u.neurons[j][1] for j in js], dtype=torch.long)
        col = [needed[b].index(int(i)) for i in idx.tolist()]
        a = store[("act", b)][..., col]
        a_new = _replace(a, mode, torch.as_tensor([u.values[j] for j in js], dtype=torch.float32),
                         torch.as_tensor([u.signs[j] for j in js], dtype=torch.long))
        a_new[:, :keep_first] = a[:, :keep_first]
        w = ad.neuron_out_weights(b).detach()[idx.to(ad.W_U.device)].float().to(hL.device)
        dw = (a_new - a) @ w
        if post:
            m = store[("m", b)]
            norm_mod = ad.mlp_write(b)
            with lm.lock, torch.inference_mode():
                dw = (norm_mod((m.float() + dw).to(m.dtype)).float() - norm_mod(m).float())
        delta = delta + dw
    return delta


def _check_finite(unit: Unit, valid: torch.Tensor, te: dict, de: dict) -> None:
    for name, res in (("TE", te), ("DE", de)):
        if torch.isinf(res["loss"]).any() or torch.isnan(res["entropy"][valid]).any():
            raise NumericalError(f"Ablating {unit.label} produced NaN or infinite {name} logits.")


def position_effects(lm: LoadedModel, batch: Batch, units: Sequence[Unit], mode: str,
                     log_pf: torch.Tensor | None = None, progress: Progress = None, *, keep_first: int = 0) -> dict:
    """Clean, TE and DE per-position metrics of each unit on one batch (positions t < keep_first not ablated).

    Returns {"valid": [B,T] bool, "clean": {metric: [B,T]}, "clean_de": {...}, "acts": {(b, i): [B,T]},
    "te": [{metric: [B,T]} per unit], "de": [...]} as cpu tensors; NaN where no next token.
    """
    ad = lm.adapter
    B, T = batch.input_ids.shape
    valid = _valid_positions(batch)
    needed = _needed_neurons(units)
    cols = {b: torch.as_tensor(ix, dtype=torch.long) for b, ix in needed.items()}
    post = _has_post_norm(lm)

    # clean run: final residual, the needed activations, and (Gemma-2) the MLP outputs before the post-norm
    store: dict = {}
    hooks = [residual_hook(ad, ad.n_layers, capture(store, "hL", lambda t: t.detach().float()))]
    for b, c in cols.items():
        def pick(t: torch.Tensor, c: torch.Tensor = c) -> torch.Tensor:
            return t[..., c.to(t.device)].detach().float()

        hooks.append(input_hook(ad.down_proj(b), capture(store, ("act", b), pick), bt=(B, T)))
        if post:
            hooks.append(output_hook(ad.down_proj(b), capture(store, ("m", b), lambda t: t.detach().clone()),
                                     bt=(B, T)))
    z_clean = run(lm, batch, hooks)
    hL = store["hL"]
    sigma = norm_scale(ad.final_norm, hL)
    ids = batch.input_ids
    clean = _metrics(z_clean, ids, valid, log_pf, sigma)
    del z_clean

    def de_logits(h: torch.Tensor, sig: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return softcap(ad, unembed(ad, frozen_norm(ad.final_norm, h, sig, with_bias=True)))

    clean_de = _metrics(de_logits(hL, sigma), ids, valid, log_pf, sigma)
    acts = {(b, int(i)): store[("act", b)][..., j].cpu() for b, c in cols.items() for j, i in enumerate(c.tolist())}

    def deltas_of(u: Unit) -> torch.Tensor:
        return _direct_delta(lm, u, store, needed, hL, mode, keep_first, post)

    # Units whose neurons all sit in the last block change h_L by exactly their delta (nothing else runs after
    # that block's MLP): their TE is the readout with the norm recomputed, no forward pass. Other units rerun the
    # model; the units of a group share one pass, unit g on rows g*B..(g+1)*B-1 of a stacked copy of the batch.
    closed = [j for j, u in enumerate(units) if TE_CLOSED_FORM and all(b == ad.n_layers - 1 for b, _ in u.neurons)]
    rerun = [j for j in range(len(units)) if j not in set(closed)]
    def te_logits(h: torch.Tensor) -> torch.Tensor:
        """The model's own head on a final residual: its final norm module (stats recomputed), W_U, soft-cap."""
        with lm.lock, torch.inference_mode():
            return softcap(ad, unembed(ad, ad.final_norm_module(h.to(lm.dtype)).float()))

    ref_te = None
    if closed:  # the same head on the clean h_L: TE differences come from one computation path
        ref_te = _metrics(te_logits(hL), ids, valid, log_pf, sigma)
    results: dict[int, tuple[dict, dict]] = {}
    for kind, js in (("closed", closed), ("rerun", rerun)):
        for grp in unit_groups(len(js), B, T, ad.vocab_size):
            gj = js[grp]
            G = len(gj)
            deltas = [deltas_of(units[j]) for j in gj]
            ids_g, valid_g, sigma_g = ids.repeat(G, 1), valid.repeat(G, 1), sigma.repeat(G, 1, 1)
            h_de = hL.repeat(G, 1, 1) + torch.cat(deltas)
            if kind == "closed":
                te = _metrics(te_logits(h_de), ids_g, valid_g, log_pf, norm_scale(ad.final_norm, h_de))
                assert ref_te is not None  # computed above: closed groups exist only when `closed` has units
                te = _rebase(te, ref_te, clean, G)
            else:
                te = _rerun_metrics(lm, batch, [units[j] for j in gj], mode, keep_first, ids_g, valid_g, log_pf)
            de = _metrics(de_logits(h_de, sigma_g), ids_g, valid_g, log_pf, sigma_g)
            del h_de
            for g, j in enumerate(gj):
                rows = slice(g * B, (g + 1) * B)
                te_u, de_u = {k: v[rows] for k, v in te.items()}, {k: v[rows] for k, v in de.items()}
                _check_finite(units[j], valid, te_u, de_u)
                results[j] = (te_u, de_u)
            if progress:
                progress(len(results) / max(1, len(units)), units[gj[-1]].label)
    te_all = [results[j][0] for j in range(len(units))]
    de_all = [results[j][1] for j in range(len(units))]
    return {"valid": valid, "clean": clean, "clean_de": clean_de, "acts": acts, "te": te_all, "de": de_all}


# ------------------------------------------------------------------------------------------ the ablation study
@dataclass(frozen=True)
class AblationResult:
    """Per-token effects of ablating each unit (a neuron, the set of them, or a random baseline neuron).

    units/kinds [U]; values [U] (the replacement values as text); per token (N = positions with a
    next token, over all prompts): prompt_index, position [N], next_token [N] (strings), clean_* [N];
    effects d*_te / d*_de [U, N] (ablated minus clean), flip_te / flip_de [U, N] (0/1).
    """

    mode: str
    units: tuple[str, ...]
    kinds: tuple[str, ...]
    values: tuple[str, ...]
    prompt_index: np.ndarray
    position: np.ndarray
    next_token: tuple[str, ...]
    clean_loss: np.ndarray
    clean_entropy: np.ndarray
    clean_sigma: np.ndarray
    clean_kl: np.ndarray
    dloss_te: np.ndarray
    dloss_de: np.ndarray
    dentropy_te: np.ndarray
    dentropy_de: np.ndarray
    dsigma_te: np.ndarray
    dkl_te: np.ndarray
    dkl_de: np.ndarray
    flip_te: np.ndarray
    flip_de: np.ndarray
    kl_direction: str = "KL(p_model || p_freq)"

    @property
    def mean_abs_te(self) -> np.ndarray:
        """mean |dLoss_TE| per unit [U]."""
        return np.abs(self.dloss_te).mean(axis=1)

    @property
    def mean_abs_de(self) -> np.ndarray:
        """mean |dLoss_DE| per unit [U]."""
        return np.abs(self.dloss_de).mean(axis=1)

    @property
    def mediated(self) -> np.ndarray:
        """LN-mediated fraction M = 1 - mean|dLoss_DE| / mean|dLoss_TE| per unit [U] (NaN where TE is 0)."""
        te = self.mean_abs_te
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(te > 0, 1.0 - self.mean_abs_de / np.where(te > 0, te, 1.0), np.nan)

    def summary_rows(self) -> list[dict]:
        """One dict per unit: label, kind, value, mean|dLoss| TE/DE, M, mean dH TE/DE, mean dsigma, flips, mean dKL."""
        rows = []
        for u in range(len(self.units)):
            rows.append({
                "unit": self.units[u], "kind": self.kinds[u], "value": self.values[u],
                "mean_abs_dloss_te": float(self.mean_abs_te[u]), "mean_abs_dloss_de": float(self.mean_abs_de[u]),
                "M": float(self.mediated[u]),
                "mean_dentropy_te": float(self.dentropy_te[u].mean()),
                "mean_dentropy_de": float(self.dentropy_de[u].mean()),
                "mean_dsigma_te": float(self.dsigma_te[u].mean()),
                "flip_rate_te": float(self.flip_te[u].mean()), "flip_rate_de": float(self.flip_de[u].mean()),
                "mean_abs_dkl_te": float(np.abs(self.dkl_te[u]).mean()),
                "mean_abs_dkl_de": float(np.abs(self.dkl_de[u]).mean()),
            })
        return rows


def build_units(lm: LoadedModel, neurons: Sequence[NeuronId], *, mode: str, reference: Sequence[str] | None,
                values: Sequence[float] | None = None, signs: Sequence[int] | None = None, as_set: bool = False,
                n_random: int = 0, seed: int = 0, batch_size: int = 8, progress: Progress = None) -> list[Unit]:
    """The units to ablate: each neuron alone, optionally the whole set, and n_random seeded random neurons.

    Random neurons come from the same blocks as ``neurons`` (spread evenly), never one of them.
    Values: ``values`` if given, else the mean over ``reference`` (modes mean/clipped), else 0.
    """
    if mode not in MODES:
        raise InputError(f"Unknown ablation mode '{mode}'; use one of {', '.join(MODES)}.")
    if not neurons:
        raise InputError("Choose at least one neuron to ablate.")
    ad = lm.adapter
    neurons = [check_neuron(ad, b, i) for b, i in neurons]
    rng = np.random.default_rng(seed)
    blocks = sorted({b for b, _ in neurons})
    randoms: list[NeuronId] = []
    for r in range(int(n_random)):
        b = blocks[r % len(blocks)]
        taken = {i for bb, i in neurons + randoms if bb == b}
        free = np.setdiff1d(np.arange(n_neurons(ad, b)), np.fromiter(taken, dtype=np.int64, count=len(taken)))
        if free.size == 0:
            break
        randoms.append((b, int(rng.choice(free))))
    everything = list(neurons) + randoms
    if values is not None:
        if len(values) != len(neurons):
            raise InputError(f"Give one ablation value per neuron ({len(neurons)}), got {len(values)}.")
        vals = list(map(float, values)) + ([0.0] * len(randoms))
        if randoms and mode != "zero":
            vals[len(neurons):] = mean_activations(lm, reference or [], randoms, batch_size=batch_size).tolist()
    elif mode == "zero":
        vals = [0.0] * len(everything)
    else:
        if reference is None or not [p for p in reference if p and p.strip()]:
            raise InputError("The reference set for mean ablation is empty: pick or type at least one prompt.")
        vals = mean_activations(lm, reference, everything, batch_size=batch_size, progress=progress).tolist()
    sg = list(signs) if signs is not None else [1] * len(neurons)
    if len(sg) != len(neurons):
        raise InputError(f"Give one clip sign per neuron ({len(neurons)}), got {len(sg)}.")
    sg = [1 if s >= 0 else -1 for s in sg] + [1] * len(randoms)
    units = [Unit(neuron_label(b, i), "neuron", ((b, i),), (vals[j],), (sg[j],)) for j, (b, i) in enumerate(neurons)]
    if as_set and len(neurons) > 1:
        n = len(neurons)
        units.append(Unit("set: " + "+".join(neuron_label(b, i) for b, i in neurons), "set", tuple(neurons),
                          tuple(vals[:n]), tuple(sg[:n])))
    for j, (b, i) in enumerate(randoms, start=len(neurons)):
        units.append(Unit(f"random {neuron_label(b, i)}", "random", ((b, i),), (vals[j],), (sg[j],)))
    return units


def ablate(lm: LoadedModel, prompts: Sequence[str], units: Sequence[Unit], *, mode: str,
           log_p_freq: np.ndarray | None = None, batch_size: int = 8, min_position: int = 0, bucket: bool = True,
           progress: Progress = None) -> AblationResult:
    """TE and DE of every unit on ``prompts`` (see the module docstring); per-token results.

    min_position drops positions before it (the paper drops the first 3); log_p_freq [V] enables KL.
    ``bucket`` batches prompts of similar token length together (less padding); the tokens come out in input
    order (prompt, then position) either way.
    """
    prompts = [p for p in prompts if p and p.strip()]
    if not prompts:
        raise InputError("The prompt set for the ablation is empty: give at least one non-empty prompt.")
    if not units:
        raise InputError("Choose at least one neuron to ablate.")
    if mode not in MODES:
        raise InputError(f"Unknown ablation mode '{mode}'; use one of {', '.join(MODES)}.")
    lpf = torch.as_tensor(log_p_freq, dtype=torch.float32) if log_p_freq is not None else None
    U = len(units)
    cols: dict[str, list] = {k: [] for k in ("pi", "pos", "tok", "cl", "ce", "cs", "ck")}
    eff: dict[str, list[list[np.ndarray]]] = {k: [[] for _ in range(U)] for k in
                                              ("lt", "ld", "et", "ed", "st", "kt", "kd", "ft", "fd")}
    n_parts = n_batches(len(prompts), batch_size)
    for n_s, (s, batch) in enumerate(bucketed(lm.tokenizer, prompts, batch_size, max_length=lm.context_length,
                                              sort=bucket)):
        rep = (lambda f, m, n_s=n_s: progress((n_s + f) / n_parts, m)) if progress else None
        r = position_effects(lm, batch, units, mode, lpf, rep)
        keep = r["valid"].clone()
        keep[:, :min_position] = False
        bi, ti = torch.nonzero(keep, as_tuple=True)
        cols["pi"].append(s[bi.numpy()])
        cols["pos"].append(ti.numpy())
        nxt = batch.input_ids[bi, ti + 1].tolist()
        cols["tok"].extend(lm.tokenizer.decode([t]) for t in nxt)
        c, cd = r["clean"], r["clean_de"]
        cols["cl"].append(c["loss"][keep].numpy())
        cols["ce"].append(c["entropy"][keep].numpy())
        cols["cs"].append(c["sigma"][keep].numpy())
        cols["ck"].append(c["kl"][keep].numpy())
        for u in range(U):
            te, de = r["te"][u], r["de"][u]
            eff["lt"][u].append((te["loss"] - c["loss"])[keep].numpy())
            eff["ld"][u].append((de["loss"] - cd["loss"])[keep].numpy())
            eff["et"][u].append((te["entropy"] - c["entropy"])[keep].numpy())
            eff["ed"][u].append((de["entropy"] - cd["entropy"])[keep].numpy())
            eff["st"][u].append((te["sigma"] - c["sigma"])[keep].numpy())
            eff["kt"][u].append((te["kl"] - c["kl"])[keep].numpy())
            eff["kd"][u].append((de["kl"] - cd["kl"])[keep].numpy())
            eff["ft"][u].append((te["top1"] != c["top1"])[keep].numpy().astype(np.float64))
            eff["fd"][u].append((de["top1"] != cd["top1"])[keep].numpy().astype(np.float64))
    # back to input order: by prompt, then position (within one prompt the batch already has them in order)
    order = np.argsort(np.concatenate(cols["pi"]), kind="stable")
    cat = lambda xs: np.concatenate(xs).astype(np.float64)[order] if xs else np.zeros(0)  # noqa: E731
    stack = lambda k: np.stack([cat(eff[k][u]) for u in range(U)])  # noqa: E731
    cols["tok"] = [cols["tok"][i] for i in order]
    if cat(cols["cl"]).size == 0:
        raise InputError("No position has a next token to predict: use prompts of at least two tokens"
                         + (f" (and longer than the first {min_position} positions)." if min_position else "."))
    return AblationResult(
        mode=mode, units=tuple(u.label for u in units), kinds=tuple(u.kind for u in units),
        values=tuple(", ".join(f"{v:.4g}" for v in u.values) if mode != "zero" else "0" for u in units),
        prompt_index=np.concatenate(cols["pi"])[order], position=np.concatenate(cols["pos"])[order],
        next_token=tuple(cols["tok"]),
        clean_loss=cat(cols["cl"]), clean_entropy=cat(cols["ce"]), clean_sigma=cat(cols["cs"]),
        clean_kl=cat(cols["ck"]), dloss_te=stack("lt"), dloss_de=stack("ld"), dentropy_te=stack("et"),
        dentropy_de=stack("ed"), dsigma_te=stack("st"), dkl_te=stack("kt"), dkl_de=stack("kd"),
        flip_te=stack("ft"), flip_de=stack("fd"))

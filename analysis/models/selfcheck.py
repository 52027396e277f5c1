"""The post-load self-check: the lens at the last layer reproduces the logits, and DLA sums to the logit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch

from analysis.core.batching import encode
from analysis.core.forward import run
from analysis.core.hooks import component_capture_hooks, residual_capture_hooks
from analysis.core.loading import LoadedModel
from analysis.core.readout import bias_term, direct_logit_attribution, norm_scale, readout, readout_precap

SELF_CHECK_PROMPT = "The quick brown fox jumps over the lazy dog because"


@dataclass(frozen=True)
class SelfCheck:
    """Result of the identities checked after loading (max absolute errors, and the tolerance used)."""

    passed: bool
    lens_err: float  # max |readout(h_L) - model logits| over positions and vocab
    decomposition_err: float  # max |h_0 + sum(sublayer writes) - h_L| at the last position
    dla_err: float  # |sum DLA + bias term - pre-cap logit| for the top-1 token at the last position
    tolerance: float
    message: str


def tolerance_for(dtype: torch.dtype) -> float:
    """Relative tolerance for the identities: tight in fp32, loose in half precision."""
    return 1e-4 if dtype == torch.float32 else 3e-2


def self_check(lm: LoadedModel, prompt: str = SELF_CHECK_PROMPT) -> SelfCheck:
    """Run the identities on a short prompt; never raises for a failed identity (it reports it)."""
    ad = lm.adapter
    batch = encode(lm.tokenizer, [prompt])
    batch = type(batch)(batch.input_ids[:, : lm.context_length], batch.attention_mask[:, : lm.context_length],
                        batch.position_ids[:, : lm.context_length], batch.padding_side)
    resid: dict = {}
    comps: dict = {}
    last = int(batch.last_index()[0])
    hooks = residual_capture_hooks(ad, [ad.n_layers], resid, lambda t: t.detach().float().clone())
    bt = cast("tuple[int, int]", tuple(batch.input_ids.shape))  # input_ids is [B, T]
    hooks += component_capture_hooks(ad, comps, bt, lambda t: t[0, last].detach().float().clone())
    logits = run(lm, batch, hooks)[0]
    h_L = resid[ad.n_layers][0]
    with torch.inference_mode():
        lens = readout(ad, h_L)
        scale = float(logits.abs().max().clamp(min=1.0))
        lens_err = float((lens - logits).abs().max()) / scale
        parts = [comps["embed"]] + [comps[(k, i)] for i in range(ad.n_layers) for k in ("attn", "mlp")]
        stacked = torch.stack(parts)
        h_last = h_L[last]
        dec_err = float((stacked.sum(0) - h_last).abs().max()) / float(h_last.abs().max().clamp(min=1.0))
        top = int(logits[last].argmax())
        sigma = norm_scale(ad.final_norm, h_last)
        dla = direct_logit_attribution(ad, stacked, sigma, top)
        precap = float(readout_precap(ad, h_last)[top])
        dla_err = abs(float(dla.sum()) + bias_term(ad, top) - precap) / max(1.0, abs(precap))
    tol = tolerance_for(lm.dtype)
    ok = lens_err <= tol and dec_err <= tol and dla_err <= tol
    if ok:
        msg = (f"Self-check passed: lens at layer {ad.n_layers} reproduces the logits (rel. err {lens_err:.1e}); "
               f"DLA sums to the logit (rel. err {dla_err:.1e}).")
    else:
        failed = [n for n, e in (("lens = logits", lens_err), ("sublayer writes sum to h_L", dec_err),
                                 ("DLA sums to the logit", dla_err)) if e > tol]
        msg = (f"Self-check FAILED ({'; '.join(failed)}; tolerance {tol:.0e}). Numbers from this model's analyses "
               "are not trustworthy; the architecture adapter does not match this checkpoint.")
    return SelfCheck(ok, lens_err, dec_err, dla_err, tol, msg)

"""Steering default layer: the one rule that picks the layer every view of a set of steering vectors starts on.

The highest held-out AUROC in the window ⌈L/3⌉..⌊3L/4⌋, ties broken by the larger Cohen's d of the contrast
rows' projections, then toward the middle of the model; LayerChoice records the pick and says why.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.core.errors import InputError

# --------------------------------------------------------------------------------------------
# The default layer
# --------------------------------------------------------------------------------------------
DEFAULT_LAYER_RULE = ("the highest held-out AUROC among layers ⌈L/3⌉..⌊3L/4⌋ (L = number of blocks; at least "
                      "layer 1), ties broken by the larger Cohen's d of the contrast set's projections on v_l, then "
                      "toward the middle of the model (L/2), then the earlier layer")


@dataclass(frozen=True)
class LayerChoice:
    """The default layer and why: the window searched, its AUROC and Cohen's d, how many layers tied on AUROC."""

    layer: int
    window: tuple[int, int]
    n_blocks: int
    auroc: float
    separation: float
    n_tied: int
    decided_by: str  # "auroc", "separation", "middle" (the step of the rule that settled it)
    in_window: bool = True

    @property
    def has_auroc(self) -> bool:
        """True when the chosen layer has a measured held-out AUROC."""
        return math.isfinite(self.auroc)

    @property
    def caption(self) -> str:
        """One sentence for the page and the metadata: the layer, why, and the rule."""
        lo, hi = self.window
        where = (f"layers {lo}–{hi}" if hi > lo else f"layer {lo}") if self.in_window else \
            "the layers these vectors cover (none of them is inside the window)"
        d = f"Cohen's d {self.separation:.2f}" if math.isfinite(self.separation) else "Cohen's d not measured"
        if not math.isfinite(self.auroc):
            why = f"no held-out AUROC for these vectors, so among {where} "
            why += ("the one whose groups separate most" + f" ({d})" if self.decided_by == "separation"
                    else "the one nearest the middle of the model")
        elif self.decided_by == "auroc":
            why = f"best held-out AUROC {self.auroc:.2f} among {where} ({d})"
        else:
            why = (f"best held-out AUROC {self.auroc:.2f} among {where}, shared by {self.n_tied} layers; "
                   + (f"of those it separates the groups most ({d})" if self.decided_by == "separation"
                      else "of those the one nearest the middle of the model"))
        return f"Layer {self.layer} (default): {why}. Rule (L = {self.n_blocks}): {DEFAULT_LAYER_RULE}."


def default_window(n_blocks: int) -> tuple[int, int]:
    """Layers searched for the default: (⌈L/3⌉, ⌊3L/4⌋), at least layer 1 and never empty (L = 4 gives 2..3)."""
    L = max(1, int(n_blocks))
    lo = max(1, math.ceil(L / 3))
    hi = min(L, max(lo, (3 * L) // 4))
    return lo, hi


def cohens_d(projections: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Per column of projections [N, k]: (mean pos − mean neg) / pooled sd [k] (NaN: < 3 rows or no spread)."""
    P = np.asarray(projections, dtype=np.float64)
    pos = np.asarray(is_positive, dtype=bool)
    out = np.full(P.shape[1] if P.ndim == 2 else 0, np.nan)
    n1, n2 = int(pos.sum()), int((~pos).sum())
    if P.ndim != 2 or n1 < 1 or n2 < 1 or n1 + n2 < 3:
        return out
    var = ((n1 - 1) * P[pos].var(axis=0, ddof=1 if n1 > 1 else 0)
           + (n2 - 1) * P[~pos].var(axis=0, ddof=1 if n2 > 1 else 0)) / (n1 + n2 - 2)
    sd = np.sqrt(var)
    ok = np.isfinite(sd) & (sd > 0)
    out[ok] = (P[pos].mean(axis=0) - P[~pos].mean(axis=0))[ok] / sd[ok]
    return out


def choose_default_layer(layers: Sequence[int], auroc: Sequence[float] | np.ndarray,
                         separation: Sequence[float] | np.ndarray | None, n_blocks: int) -> LayerChoice:
    """The default layer of steering vectors by DEFAULT_LAYER_RULE (NaN AUROC or d = not measured, never chosen over
    a measured value).

    Why a window: on a real model the held-out AUROC is often 1.0 from the first blocks on, where v_l is tiny and
    adding it does nothing (SmolLM2-135M: AUROC 1.0 from layer 1 of 30); steering works at middle depth, where the
    steering papers (CAA, Persona Vectors) also apply their vectors. The window ⌈L/3⌉..⌊3L/4⌋ keeps the pick
    there (L = 30: 10..22; L = 4 or 5: 2..3); when none of ``layers`` is inside it (a file with a few layers),
    every layer ≥ 1 (else every layer) is a candidate. Cohen's d is in-sample (the vectors are fitted on the same
    rows), which is why it only ranks layers that tie on the held-out AUROC: with a few held-out rows the AUROC
    saturates at 1.0 and a held-out d would rest on two or three points per group.
    """
    layers = [int(l) for l in layers]
    if not layers:
        raise InputError("These steering vectors have no layers.")
    a_all = np.asarray(auroc, dtype=float).reshape(-1)
    d_all = (np.full(len(layers), np.nan) if separation is None
             else np.asarray(separation, dtype=float).reshape(-1))
    if a_all.shape != (len(layers),):
        a_all = np.full(len(layers), np.nan)
    if d_all.shape != (len(layers),):
        d_all = np.full(len(layers), np.nan)
    L = max(1, int(n_blocks))
    lo, hi = default_window(L)
    cand = [k for k, l in enumerate(layers) if lo <= l <= hi]
    in_window = bool(cand)
    if not cand:
        cand = [k for k, l in enumerate(layers) if l >= 1] or list(range(len(layers)))
    tied, decided = list(cand), "middle"
    a = a_all[cand]
    if np.isfinite(a).any():
        best = float(np.nanmax(a))
        tied = [k for k in cand if np.isfinite(a_all[k]) and a_all[k] >= best - 1e-9]
        decided = "auroc"
    n_tied = len(tied)
    if len(tied) > 1:
        d = d_all[tied]
        if np.isfinite(d).any():
            dmax = float(np.nanmax(d))
            tied = [k for k in tied if np.isfinite(d_all[k]) and d_all[k] >= dmax - 1e-9 * max(1.0, abs(dmax))]
            decided = "separation"
        if len(tied) > 1:
            decided = "middle"
    pick = min(tied, key=lambda k: (abs(layers[k] - L / 2), layers[k]))
    return LayerChoice(layer=layers[pick], window=(lo, hi), n_blocks=L, auroc=float(a_all[pick]),
                       separation=float(d_all[pick]), n_tied=n_tied, decided_by=decided, in_window=in_window)

"""Vector card: which tokens a steering vector v_l points toward through the unembedding (methods.md section 3).

Logits of a direction: W_U N_f(v) with N_f the final norm as a linear map of unit scale, gamma * center(v) (center
removes the mean over d for LayerNorm; identity for RMSNorm); no sigma, no norm bias, no b_U. A direction has no
scale of its own, so only the gain (and LayerNorm's centring) applies: the same convention as the neuron card's
w_out (analysis.neurons.card). The values are in logits per unit of v; the ranking does not depend on ||v||.
Where the contrast groups sit along v: their projections h_l . v_l / ||v_l||, kept by extract_vectors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.core.readout import center
from analysis.core.tokens import decode
from analysis.steering.vectors import SteeringVectors, check_compatible

TOP_TOKENS = 50  # promoted and suppressed tokens kept per layer (the page shows the first k)


@dataclass(frozen=True)
class VectorCard:
    """Top tokens of W_U N_f(v_l) for every layer of the vectors: top_ids/top_values [n_layers, K] (descending),
    bottom_ids/bottom_values [n_layers, K] (ascending), token texts alike; layers as in the vectors."""

    layers: tuple[int, ...]
    top_ids: np.ndarray
    top_values: np.ndarray
    top_tokens: tuple[tuple[str, ...], ...]
    bottom_ids: np.ndarray
    bottom_values: np.ndarray
    bottom_tokens: tuple[tuple[str, ...], ...]

    def row(self, layer: int) -> int:
        """The row of ``layer`` (the vectors' own InputError when they have no such layer)."""
        if layer not in self.layers:
            raise InputError(f"The vector card has no layer {layer}; it covers layers {min(self.layers)}.."
                             f"{max(self.layers)}.")
        return self.layers.index(layer)


def direction_logits(lm: LoadedModel, v: np.ndarray | torch.Tensor) -> torch.Tensor:
    """W_U (gamma * center(v)) for directions v [..., d]: [..., V] fp32 (see the module docstring)."""
    ad = lm.adapter
    W = ad.W_U.detach().float()
    x = torch.as_tensor(np.asarray(v), dtype=torch.float32, device=W.device)
    x = ad.final_norm.gain.detach().float().to(W.device) * center(ad.final_norm, x)
    return (x @ W.T).cpu()


def vector_card(lm: LoadedModel, sv: SteeringVectors, *, k: int = TOP_TOKENS) -> VectorCard:
    """The top promoted and suppressed tokens of W_U N_f(v_l) for every layer l of ``sv``."""
    check_compatible(sv, lm)
    with torch.no_grad():
        z = direction_logits(lm, sv.vectors)  # [n_layers, V]
    k = max(1, min(int(k), z.shape[1]))
    top = torch.topk(z, k, dim=1).indices
    bottom = torch.topk(-z, k, dim=1).indices
    tok = lm.tokenizer
    return VectorCard(
        layers=tuple(int(l) for l in sv.layers), top_ids=top.numpy(), top_values=torch.gather(z, 1, top).numpy()
        .astype(np.float64), top_tokens=tuple(tuple(decode(tok, int(t)) for t in row) for row in top),
        bottom_ids=bottom.numpy(), bottom_values=torch.gather(z, 1, bottom).numpy().astype(np.float64),
        bottom_tokens=tuple(tuple(decode(tok, int(t)) for t in row) for row in bottom))

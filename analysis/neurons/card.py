"""Neuron card: what one MLP neuron L<b>.N<n> writes toward the vocabulary and where it fires (methods.md section 4).

* Direct logits: W_U (gamma * center(w_out)) [V], w_out = the neuron's row of the down-projection, gamma = the final
  norm's gain, center = the mean over d removed for LayerNorm (identity for RMSNorm); no sigma (a direction has no
  scale of its own), no norm bias, no b_U. These are the paper-processing weights of the scan (W_U' w_out) up to a
  constant shift over the vocabulary, so the ranking of tokens is the same. Gemma-2's post-feed-forward norm sits
  between w_out and the residual stream: there the card is only indicative.
* Activations: the input of the down-projection at the neuron's index (gated MLPs: act(gate) * up), at every real
  token of the reference prompts; a BOS the tokenizer added is left out (on real models it is an attention sink
  with activations far above the rest). Top examples: each prompt's largest activation, prompts sorted by it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.batching import bucketed
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook
from analysis.core.loading import LoadedModel
from analysis.core.readout import center
from analysis.core.tokens import decode
from analysis.neurons.scan import check_neuron, neuron_label
from analysis.prompts import adds_bos

BATCH_SIZE = 8
TOP_TOKENS = 50  # promoted and suppressed tokens kept (the page shows the first k)


@dataclass(frozen=True)
class NeuronCard:
    """One neuron's card. Tokens: top_ids/top_values [K] promoted (descending), bottom_ids/bottom_values [K]
    suppressed (ascending), with their texts. Activations at every kept reference position: prompt_index,
    position, activation [N] (fp32 values as the model computes them); tokens[i] = prompt i's token texts."""

    block: int
    index: int
    top_ids: np.ndarray
    top_values: np.ndarray
    top_tokens: tuple[str, ...]
    bottom_ids: np.ndarray
    bottom_values: np.ndarray
    bottom_tokens: tuple[str, ...]
    prompt_index: np.ndarray
    position: np.ndarray
    activation: np.ndarray
    tokens: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """'L<b>.N<n>'."""
        return neuron_label(self.block, self.index)

    def top_examples(self, k: int) -> list[tuple[int, int, float]]:
        """(prompt index, position, activation) of the k prompts with the largest activations, each at its maximum,
        sorted by activation (descending; ties: the earlier prompt, then the earlier position)."""
        best: dict[int, tuple[int, float]] = {}
        for p, pos, a in zip(self.prompt_index.tolist(), self.position.tolist(), self.activation.tolist(), strict=True):
            if p not in best or a > best[p][1]:
                best[p] = (pos, a)
        rows = sorted(((p, pos, a) for p, (pos, a) in best.items()), key=lambda r: (-r[2], r[0], r[1]))
        return rows[: max(0, int(k))]


def direct_logits(lm: LoadedModel, block: int, index: int) -> torch.Tensor:
    """W_U (gamma * center(w_out)) of one neuron: [V] fp32 (see the module docstring)."""
    ad = lm.adapter
    w = ad.neuron_out_weights(block)[index].detach().float()
    x = ad.final_norm.gain.detach().float().to(w.device) * center(ad.final_norm, w)
    return (ad.W_U.detach().float().to(w.device) @ x).cpu()


def neuron_activations(lm: LoadedModel, block: int, index: int, prompts: Sequence[str], *,
                       batch_size: int = BATCH_SIZE) -> tuple[list[np.ndarray], list[list[int]]]:
    """Per prompt: the neuron's activation at every real token [T_i] (fp32) and the token ids."""
    ad = lm.adapter
    acts: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(prompts)
    ids: list[list[int]] = [[] for _ in prompts]
    for idx, batch in bucketed(lm.tokenizer, list(prompts), batch_size, max_length=lm.context_length):
        store: dict = {}
        B, T = batch.input_ids.shape
        site = input_hook(ad.down_proj(block), capture(store, "a", lambda t: t[..., index].detach().float().cpu()),
                          bt=(B, T))
        run(lm, batch, [site])
        for b, i in enumerate(idx):
            real = batch.real_positions(b)
            acts[int(i)] = store["a"][b, real].numpy().astype(np.float32)
            ids[int(i)] = batch.input_ids[b, real].tolist()
    return acts, ids


def neuron_card(lm: LoadedModel, block: int, index: int, reference: Sequence[str], *, k: int = TOP_TOKENS,
                batch_size: int = BATCH_SIZE) -> NeuronCard:
    """The card of neuron L<block>.N<index>: top promoted/suppressed tokens and activations over ``reference``."""
    ad = lm.adapter
    block, index = check_neuron(ad, block, index)
    prompts = [p for p in reference if p]
    if not prompts:
        raise InputError("The neuron card needs reference prompts (the page's reference set, the CLI's --prompts).")
    with torch.no_grad():
        z = direct_logits(lm, block, index)
    k = max(1, min(int(k), z.shape[0]))
    top = torch.topk(z, k).indices
    bottom = torch.topk(-z, k).indices
    acts, ids = neuron_activations(lm, block, index, prompts, batch_size=batch_size)
    skip = 1 if adds_bos(lm.tokenizer) else 0
    pi, pos, act = [], [], []
    for i, a in enumerate(acts):
        for t in range(skip, len(a)):
            pi.append(i)
            pos.append(t)
            act.append(a[t])
    notes = []
    if skip:
        notes.append("The BOS token the tokenizer adds is left out of the examples and the histogram.")
    if "post_feedforward" in ad.row.mlp_write:
        notes.append("This model writes the MLP through another module (e.g. Gemma-2's post-feed-forward norm): the "
                     "top tokens of w_out are only indicative.")
    tok = lm.tokenizer
    return NeuronCard(
        block=block, index=index, top_ids=top.numpy(), top_values=z[top].numpy().astype(np.float64),
        top_tokens=tuple(decode(tok, int(t)) for t in top), bottom_ids=bottom.numpy(),
        bottom_values=z[bottom].numpy().astype(np.float64), bottom_tokens=tuple(decode(tok, int(t)) for t in bottom),
        prompt_index=np.asarray(pi, dtype=np.int64), position=np.asarray(pos, dtype=np.int64),
        activation=np.asarray(act, dtype=np.float32),
        tokens=tuple(tuple(decode(tok, int(t)) for t in row) for row in ids), notes=tuple(notes))

"""Induction case study (Stolfo et al. 2024): repeated sequences, per-position entropy/loss/neuron activations,
and the same under a clipped-mean ablation of the selected neurons (TE and DE, see analysis.neurons.ablation).

A sequence is R + R of random tokens, with the tokenizer's BOS in front only when the tokenizer itself adds one
to every text (a model whose tokenizer never adds its bos_token, e.g. SmolLM2's <|im_start|>, never saw it in
front of plain text; ``Sequences.source`` says "BOS + R + R" or "R + R"), or a text "R R" from a prompt set whose
``label`` is R (data/prompts/induction.jsonl), encoded as the tokenizer encodes any prompt. ``start`` is the
index of the first token of the second copy. The value at position t is about predicting token t+1 (loss) or
the state at t (entropy, activation); x-axes use t - start, so the repeated half is t - start >= 0. Sequences
of different lengths are averaged per relative position over the sequences that have it.

First position: the first position of every sequence (BOS where the tokenizer adds one, else the first token of
R) is left out of the neuron statistics: of the first-copy and repeat means (so of a_bar and of the automatic
selection), of the activation panel (``acts``; its value is kept apart in ``acts_first``) and of the ablation (it
keeps its clean activation). On real models it is an attention sink whatever token sits there, and some neurons
are about 100x larger there than anywhere else (SmolLM2-135M-Instruct, last block: L29.N999 ~450 and L29.N1165
~320 at t = 0 vs |a| < 6 after), which would otherwise pick the neurons and flatten the panel. Entropy and loss
keep t = 0: its loss is about predicting token 1 from one token, high but on the scale of the rest of the first
copy of random tokens (SmolLM2: ~14-17 nats, like t >= 1), and its entropy is lower than the rest.

Clipped mean (the paper's induction ablation): a_bar = the neuron's mean over the first copy (from t = 1); a
neuron whose mean activation rises on the repeat gets a <- min(a, a_bar), one that falls a <- max(a, a_bar).
Baseline: random neuron sets of the same size from the same blocks (seeded).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.core.architectures import Adapter
from analysis.core.batching import batch_from_ids, chunks, pad_token_id
from analysis.core.errors import InputError, PromptSetError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.neurons.ablation import Unit, position_effects
from analysis.neurons.scan import NeuronId, check_neuron, n_neurons, neuron_label
from analysis.prompts import PromptSet, adds_bos

SKIP_FIRST = 1  # positions t < SKIP_FIRST (the attention sink) are left out of neuron statistics and ablation


@dataclass(frozen=True)
class Sequences:
    """Token-id rows and the index where each repeat starts."""

    source: str
    ids: tuple[tuple[int, ...], ...]
    starts: tuple[int, ...]


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        v = getattr(tokenizer, name, None)
        if v is not None:
            ids.add(int(v))
    return ids


def random_sequences(tokenizer, vocab_size: int, *, n: int = 8, length: int = 30, seed: int = 0) -> Sequences:
    """n sequences R + R of ``length`` uniform non-special tokens (seeded); BOS first if the tokenizer adds one."""
    if n < 1 or length < 2:
        raise InputError("Random repeated sequences need at least 1 sequence of at least 2 tokens.")
    try:
        v = min(vocab_size, len(tokenizer))
    except TypeError:
        v = min(vocab_size, int(getattr(tokenizer, "vocab_size", vocab_size)))
    pool = np.setdiff1d(np.arange(v), np.fromiter(_special_ids(tokenizer), dtype=np.int64))
    rng = np.random.default_rng(seed)
    head = [int(tokenizer.bos_token_id)] if adds_bos(tokenizer) else []
    rows, starts = [], []
    for _ in range(n):
        r = [int(x) for x in rng.choice(pool, size=length, replace=True)]
        rows.append(tuple(head + r + r))
        starts.append(len(head) + length)
    shape = "BOS + R + R" if head else "R + R"
    return Sequences(f"random tokens ({shape}, |R| = {length})", tuple(rows), tuple(starts))


def prompt_sequences(tokenizer, ps: PromptSet, *, max_rows: int = 40) -> Sequences:
    """Sequences from a prompt set of "R R" texts; R is the row's label, or the first half of its words."""
    rows, starts = [], []
    for row in ps.rows[:max_rows]:
        r = row.label
        if not r:
            words = row.prompt.split(" ")
            half = len(words) // 2
            if len(words) % 2 or words[:half] != words[half:]:
                raise PromptSetError(f"{ps.name}, line {row.row}: the prompt is not a repeated sequence 'R R' and has "
                                     "no label giving R.")
            r = " ".join(words[:half])
        full = list(tokenizer(row.prompt, add_special_tokens=True)["input_ids"])
        first = list(tokenizer(r, add_special_tokens=True)["input_ids"])
        if len(first) >= len(full) or full[:len(first)] != first:
            raise PromptSetError(f"{ps.name}, line {row.row}: the prompt does not start with its label R, so the "
                                 "start of the repeat cannot be located.")
        rows.append(tuple(full))
        starts.append(len(first))
    if not rows:
        raise PromptSetError(f"{ps.name} has no rows for the induction study.")
    return Sequences(ps.name, tuple(rows), tuple(starts))


def _run_batches(seq: Sequences, tokenizer, batch_size: int):
    pad = pad_token_id(tokenizer)
    for s in chunks(len(seq.ids), batch_size):
        yield s, batch_from_ids(seq.ids[s], pad, "right")


def activation_halves(lm: LoadedModel, seq: Sequences, blocks: Sequence[int], *, batch_size: int = 8
                      ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{block: (mean activation over the first copy from t = SKIP_FIRST [n], over the repeat [n])} per block."""
    ad = lm.adapter
    sums = {b: [torch.zeros(n_neurons(ad, b), dtype=torch.float64) for _ in range(2)] for b in blocks}
    counts = [0, 0]
    for s, batch in _run_batches(seq, lm.tokenizer, batch_size):
        B, T = batch.input_ids.shape
        store: dict = {}
        hooks = [input_hook(ad.down_proj(b), capture(store, b, lambda t: t.detach().double().cpu()), bt=(B, T))
                 for b in blocks]
        run(lm, batch, hooks)
        pos = torch.arange(T)[None, :]
        mask = batch.attention_mask.bool() & (pos >= SKIP_FIRST)  # the attention sink stays out of the means
        st = torch.as_tensor(seq.starts[s])[:, None]
        halves = (mask & (pos < st), mask & (pos >= st))
        for h, m in enumerate(halves):
            counts[h] += int(m.sum())
            for b in blocks:
                sums[b][h] += store[b][m].sum(dim=0)
    return {b: (sums[b][0].numpy() / max(counts[0], 1), sums[b][1].numpy() / max(counts[1], 1)) for b in blocks}


def select_neurons(lm: LoadedModel, seq: Sequences, *, block: int | None = None, n: int = 3,
                   batch_size: int = 8) -> tuple[NeuronId, ...]:
    """The n neurons of ``block`` (default last) whose activation changes most on the repeat, weighted by ||w_out||
    (means from t = SKIP_FIRST: the attention-sink position does not count)."""
    ad = lm.adapter
    block = ad.n_layers - 1 if block is None else block
    m1, m2 = activation_halves(lm, seq, [block], batch_size=batch_size)[block]
    norms = ad.neuron_out_weights(block).detach().float().norm(dim=-1).cpu().numpy()
    score = np.abs(m2 - m1) * norms
    return tuple((block, int(i)) for i in np.argsort(-score, kind="stable")[:n])


@dataclass(frozen=True)
class InductionResult:
    """Per relative position x = t - start [P]: clean, TE and DE entropy/loss (mean over sequences), activations.

    acts [k, P] clean activations of the selected neurons over positions t >= SKIP_FIRST (NaN where no sequence
    has such a position); acts_first [k] their mean at the left-out first position; random_loss_te /
    random_entropy_te [R, P] for R random neuron sets; summaries: mean loss on the first copy and on the repeat
    (clean/TE/DE).
    """

    source: str
    n_sequences: int
    neurons: tuple[str, ...]
    means: np.ndarray
    signs: np.ndarray
    rise: np.ndarray
    rel_position: np.ndarray
    count: np.ndarray
    entropy: np.ndarray
    loss: np.ndarray
    entropy_te: np.ndarray
    loss_te: np.ndarray
    entropy_de: np.ndarray
    loss_de: np.ndarray
    acts: np.ndarray
    acts_first: np.ndarray
    random_sets: tuple[str, ...]
    random_loss_te: np.ndarray
    random_entropy_te: np.ndarray
    summary: dict
    message: str


def _half_means(x: np.ndarray, rel: np.ndarray, count: np.ndarray) -> tuple[float, float]:
    """Token-weighted mean of a per-relative-position mean over the first copy (rel < 0) and the repeat."""
    out = []
    for m in (rel < 0, rel >= 0):
        w = count[m] * np.isfinite(x[m])
        out.append(float(np.nansum(np.nan_to_num(x[m]) * w) / w.sum()) if w.sum() else float("nan"))
    return out[0], out[1]


def _random_sets(ad: Adapter, neurons: list[NeuronId], n_sets: int, seed: int) -> list[list[NeuronId]]:
    """n_sets random baselines: per chosen neuron, another neuron of its block (none of the chosen ones)."""
    rng = np.random.default_rng(seed)
    rand_sets: list[list[NeuronId]] = []
    for _ in range(n_sets):
        chosen: list[NeuronId] = []
        for b, _i in neurons:
            free = np.setdiff1d(np.arange(n_neurons(ad, b)), [i for bb, i in neurons + chosen if bb == b])
            if free.size:
                chosen.append((b, int(rng.choice(free))))
        rand_sets.append(chosen)
    return rand_sets


def induction_study(lm: LoadedModel, seq: Sequences, neurons: Sequence[NeuronId], *, n_random_sets: int = 3,
                    seed: int = 0, batch_size: int = 8, progress: Progress = None) -> InductionResult:
    """Clean vs clipped-mean-ablated (TE, DE) entropy and loss per position on repeated sequences."""
    ad = lm.adapter
    if not neurons:
        raise InputError("Choose at least one neuron for the induction study.")
    neurons = [check_neuron(ad, b, i) for b, i in neurons]
    blocks = sorted({b for b, _ in neurons})
    if progress:
        progress(0.05, "first-copy means")
    halves = activation_halves(lm, seq, blocks, batch_size=batch_size)
    rand_sets = _random_sets(ad, neurons, int(n_random_sets), seed)

    def unit(label: str, kind: str, ns: Sequence[NeuronId]) -> Unit:
        m1 = [float(halves[b][0][i]) for b, i in ns]
        sg = [1 if halves[b][1][i] >= halves[b][0][i] else -1 for b, i in ns]
        return Unit(label, kind, tuple(ns), tuple(m1), tuple(sg))

    units = [unit("+".join(neuron_label(b, i) for b, i in neurons), "set", neurons)]
    units += [unit("random " + "+".join(neuron_label(b, i) for b, i in rs), "random", rs) for rs in rand_sets if rs]
    max_before = max(seq.starts)
    max_after = max(len(r) - s for r, s in zip(seq.ids, seq.starts, strict=True))
    P = max_before + max_after
    rel = np.arange(-max_before, max_after)
    sums = {k: np.zeros(P) for k in ("H", "L", "Hte", "Lte", "Hde", "Lde")}
    cnt_h, cnt_l, cnt_a = np.zeros(P), np.zeros(P), np.zeros(P)
    act_sum = np.zeros((len(neurons), P))
    first_sum, n_first = np.zeros(len(neurons)), 0
    rsum = {k: np.zeros((len(units) - 1, P)) for k in ("L", "H")}
    batches = list(_run_batches(seq, lm.tokenizer, batch_size))
    for n_b, (s, batch) in enumerate(batches):
        rep = (lambda f, m, n_b=n_b: progress(0.1 + 0.9 * (n_b + f) / len(batches), m)) if progress else None
        r = position_effects(lm, batch, units, "clipped", None, rep, keep_first=SKIP_FIRST)
        for row in range(batch.input_ids.shape[0]):
            start = seq.starts[s][row]
            pos = batch.real_positions(row).numpy()
            x = pos - start + max_before
            cnt_h[x] += 1
            loss_ok = np.isfinite(r["clean"]["loss"][row, pos].numpy())
            cnt_l[x[loss_ok]] += 1
            xv, pv = x[loss_ok], pos[loss_ok]  # positions with a next token (loss and entropy)
            for key, src, name in (("H", r["clean"], "entropy"), ("L", r["clean"], "loss"),
                                   ("Hte", r["te"][0], "entropy"), ("Lte", r["te"][0], "loss"),
                                   ("Hde", r["de"][0], "entropy"), ("Lde", r["de"][0], "loss")):
                np.add.at(sums[key], xv, src[name][row, pv].numpy())
            late = pos >= SKIP_FIRST  # the attention sink is kept out of the activation panel
            np.add.at(cnt_a, x[late], 1)
            first = pos[~late]
            n_first += int(first.size)
            for j, nid in enumerate(neurons):
                a = r["acts"][nid][row].numpy()
                np.add.at(act_sum[j], x[late], a[pos[late]])
                first_sum[j] += float(a[first].sum())
            for u in range(1, len(units)):
                np.add.at(rsum["L"][u - 1], xv, r["te"][u]["loss"][row, pv].numpy())
                np.add.at(rsum["H"][u - 1], xv, r["te"][u]["entropy"][row, pv].numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        div_l = np.where(cnt_l > 0, cnt_l, np.nan)
        res = {k: sums[k] / div_l for k in sums}
        acts = act_sum / np.where(cnt_a > 0, cnt_a, np.nan)[None, :]
        acts_first = first_sum / n_first if n_first else np.full(len(neurons), np.nan)
        r_loss = rsum["L"] / div_l[None, :]
        r_ent = rsum["H"] / div_l[None, :]
    summary = {}
    for key, name in (("L", "loss"), ("Lte", "loss_te"), ("Lde", "loss_de"), ("H", "entropy"), ("Hte", "entropy_te"),
                      ("Hde", "entropy_de")):
        a, b = _half_means(res[key], rel, cnt_l)
        summary[f"{name}_first"], summary[f"{name}_repeat"] = a, b
    if r_loss.shape[0]:
        summary["random_loss_te_repeat"] = float(np.nanmean([_half_means(x, rel, cnt_l)[1] for x in r_loss]))
        summary["random_entropy_te_repeat"] = float(np.nanmean([_half_means(x, rel, cnt_l)[1] for x in r_ent]))
    lf, lr = summary["loss_first"], summary["loss_repeat"]
    verdict = ("lower on the repeat, as induction predicts" if lr < lf else
               "NOT lower on the repeat: this model shows no induction on these sequences")
    message = (f"Mean loss {lf:.3f} nats on the first copy vs {lr:.3f} on the repeat ({verdict}). Ablating "
               f"{units[0].label} (clipped mean): entropy on the repeat {summary['entropy_repeat']:.3f} -> "
               f"{summary['entropy_te_repeat']:.3f} (TE), {summary['entropy_de_repeat']:.3f} (DE); loss "
               f"{lr:.3f} -> {summary['loss_te_repeat']:.3f} (TE).")
    for j, label in enumerate(neuron_label(b, i) for b, i in neurons):
        summary[f"act_first_position_{label}"] = float(acts_first[j])
    if n_first and np.isfinite(acts).any():
        late_max = float(np.nanmax(np.abs(acts)))
        message += (f" The first position is left out of the neuron selection, the clipped mean, the ablation and "
                    f"the activation panel (an attention sink on real models): there the selected neurons' mean "
                    f"|activation| reaches {float(np.max(np.abs(acts_first))):.3g}, vs at most {late_max:.3g} at "
                    f"later positions.")
    if progress:
        progress(1.0, "done")
    return InductionResult(
        source=seq.source, n_sequences=len(seq.ids), neurons=tuple(neuron_label(b, i) for b, i in neurons),
        means=np.asarray(units[0].values), signs=np.asarray(units[0].signs),
        rise=np.asarray([halves[b][1][i] - halves[b][0][i] for b, i in neurons]), rel_position=rel,
        count=cnt_h, entropy=res["H"], loss=res["L"], entropy_te=res["Hte"], loss_te=res["Lte"],
        entropy_de=res["Hde"], loss_de=res["Lde"], acts=acts, acts_first=acts_first,
        random_sets=tuple(u.label for u in units[1:]), random_loss_te=r_loss, random_entropy_te=r_ent,
        summary=summary, message=message)


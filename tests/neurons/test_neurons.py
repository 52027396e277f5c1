"""Confidence-regulation neurons: the methods.md identities on tiny models of every type, and the zoo demo."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.core.architectures import NORM_LAYERNORM
from analysis.core.batching import encode
from analysis.core.errors import InputError, PromptSetError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook, residual_hook
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_models
from analysis.core.readout import frozen_norm
from analysis.models.tiny import ALL_TYPES, ToyTokenizer, tiny_model
from analysis.neurons import (
    ablate,
    build_units,
    canonical_neuron_text,
    induction_study,
    kl_to_unigram,
    logit_var,
    mean_activations,
    neuron_label,
    null_fraction,
    out_weights,
    parse_neuron_ids,
    parse_neuron_label,
    prompt_sequences,
    random_sequences,
    scan_entropy,
    scan_frequency,
    select_neurons,
    unembed_matrix,
    unembed_svd,
    unigram_distribution,
)
from analysis.neurons import ablation as neuron_ablation
from analysis.prompts import load_builtin, prompt_set_from_text

PROMPTS = ["5 17 3 9 22 40 11 8", "8 8 1 3 90 4", "33 2 7 7 19"]


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


def _last(lm) -> int:
    return lm.adapter.n_layers - 1


# ------------------------------------------------------------------------------------------ ablation identities
def test_no_change_gives_zero_te_and_de(lm):
    """A clipped mean above every activation changes nothing: TE = DE = 0 exactly (last block and block 0)."""
    units = build_units(lm, [(_last(lm), 3), (0, 5)], mode="clipped", reference=None, values=[1e9, 1e9], as_set=True)
    r = ablate(lm, PROMPTS, units, mode="clipped")
    for arr in (r.dloss_te, r.dloss_de, r.dentropy_te, r.dentropy_de, r.dsigma_te, r.flip_te, r.flip_de):
        assert np.abs(arr).max() < 1e-6
    assert np.isnan(r.mediated).all()  # M is undefined without a total effect


def test_frozen_clean_readout_reproduces_model_logits(lm):
    """The DE path with delta = 0 is the model's own prediction (the clean frozen readout)."""
    units = build_units(lm, [(_last(lm), 0)], mode="zero", reference=None)
    r = neuron_ablation.position_effects(lm, encode(lm.tokenizer, PROMPTS), units, "zero")
    v = r["valid"]
    for m in ("loss", "entropy"):
        assert torch.allclose(r["clean"][m][v], r["clean_de"][m][v], atol=1e-4)


def test_ablation_changes_something(lm):
    """Zero-ablating a last-block neuron has a nonzero total effect (so the identities are not vacuous)."""
    units = build_units(lm, [(_last(lm), 3)], mode="zero", reference=None)
    r = ablate(lm, PROMPTS, units, mode="zero")
    assert r.mean_abs_te[0] > 1e-7 and r.mean_abs_de[0] > 1e-7


def test_constant_scale_norm_gives_te_equal_de(lm, monkeypatch):
    """Replace the final norm by one dividing by a fixed constant: TE == DE for last-block neurons (M = 0)."""
    c = 1.7
    fn = lm.adapter.final_norm
    mod = lm.adapter.final_norm_module
    monkeypatch.setattr(mod, "forward", lambda x, *a, **k: frozen_norm(fn, x, c, with_bias=True).to(x.dtype))
    monkeypatch.setattr(neuron_ablation, "norm_scale", lambda fn_, h: torch.full_like(h[..., :1].float(), c))
    L = _last(lm)
    units = build_units(lm, [(L, 1), (L, 7)], mode="mean", reference=PROMPTS, as_set=True)
    r = ablate(lm, PROMPTS, units, mode="mean")
    assert r.mean_abs_te.min() > 1e-7  # the ablation still changes the logits, through W_U w_out
    np.testing.assert_allclose(r.dloss_de, r.dloss_te, atol=2e-5)
    np.testing.assert_allclose(r.dentropy_de, r.dentropy_te, atol=2e-5)
    assert np.abs(r.mediated).max() < 1e-2


def test_earlier_block_direct_effect_is_the_direct_path_only(lm):
    """For a block-0 neuron DE differs from TE in general (later blocks react); both are finite."""
    units = build_units(lm, [(0, 2)], mode="zero", reference=None)
    r = ablate(lm, PROMPTS, units, mode="zero")
    assert np.isfinite(r.dloss_te).all() and np.isfinite(r.dloss_de).all()
    assert r.dsigma_te.shape == r.dloss_te.shape


def test_bucketed_and_grouped_ablation_equal_one_batch_and_one_unit_at_a_time_in_input_order(lm, monkeypatch):
    """Length buckets and several units per forward pass (stacked batch copies) change nothing but the speed:
    every per-token effect equals the unbucketed, one-unit-per-pass run, and the tokens keep the input order."""
    prompts = [PROMPTS[2], "61 62 63 64 65 66 67 68 69 70 71", "4 9", PROMPTS[1]]
    L = _last(lm)
    units = build_units(lm, [(L, 1), (0, 4)], mode="mean", reference=PROMPTS, as_set=True, n_random=2, seed=2)
    assert [u.neurons[0][0] for u in units if u.kind == "random"] == [0, L]  # a rerun and a closed-form random unit
    grouped = ablate(lm, prompts, units, mode="mean", batch_size=2, bucket=True)
    assert neuron_ablation.unit_groups(len(units), 2, 12, lm.adapter.vocab_size) == [slice(0, len(units))]
    monkeypatch.setattr(neuron_ablation, "GROUP_LOGITS", 1)  # one unit per forward pass, as before grouping
    monkeypatch.setattr(neuron_ablation, "TE_CLOSED_FORM", False)  # every unit's TE from a rerun of the model
    assert len(neuron_ablation.unit_groups(len(units), 2, 12, lm.adapter.vocab_size)) == len(units)
    plain = ablate(lm, prompts, units, mode="mean", batch_size=2, bucket=False)
    np.testing.assert_array_equal(grouped.prompt_index, plain.prompt_index)
    np.testing.assert_array_equal(grouped.position, plain.position)
    assert grouped.next_token == plain.next_token
    for f in ("clean_loss", "clean_entropy", "clean_sigma", "dloss_te", "dloss_de", "dentropy_te", "dentropy_de",
              "dsigma_te", "flip_te", "flip_de"):
        np.testing.assert_allclose(getattr(grouped, f), getattr(plain, f), atol=2e-5, rtol=1e-4, err_msg=f)
    # input order: prompt by prompt, positions 0..n-2 within each (every position with a next token)
    want = [(i, t) for i, p in enumerate(prompts) for t in range(len(lm.tokenizer(p)["input_ids"]) - 1)]
    assert list(zip(grouped.prompt_index.tolist(), grouped.position.tolist(), strict=True)) == want
    assert grouped.next_token[0] == lm.tokenizer.decode([lm.tokenizer(prompts[0])["input_ids"][1]])


def test_last_block_total_effect_equals_rerunning_the_model_with_the_activation_replaced(lm):
    """TE of last-block units comes without a rerun (h_L + delta); it must equal the hooked forward pass."""
    L = _last(lm)
    units = build_units(lm, [(L, 1), (L, 7)], mode="zero", reference=None, as_set=True)
    r = ablate(lm, PROMPTS, units, mode="zero")
    for u, unit in enumerate(units):
        cols = torch.as_tensor([i for _, i in unit.neurons])
        ent, loss = [], []
        for p in PROMPTS:
            batch = encode(lm.tokenizer, [p])

            def zero(x, cols=cols):
                x = x.clone()
                x[..., cols] = 0
                return x
            z = run(lm, batch, [input_hook(lm.adapter.down_proj(L), zero, bt=tuple(batch.input_ids.shape))])[0]
            lp = torch.log_softmax(z[:-1], dim=-1)
            loss.append(-lp.gather(-1, batch.input_ids[0, 1:, None])[:, 0])
            ent.append(-(lp.exp() * lp).sum(-1))
        np.testing.assert_allclose(r.clean_loss + r.dloss_te[u], torch.cat(loss).numpy(), atol=2e-4, rtol=1e-4)
        np.testing.assert_allclose(r.clean_entropy + r.dentropy_te[u], torch.cat(ent).numpy(), atol=2e-4, rtol=1e-4)
    assert r.mean_abs_te.min() > 1e-6


def test_bucketed_reference_means_equal_unbucketed(lm):
    neurons = [(_last(lm), 1), (0, 4), (0, 9)]
    refs = PROMPTS + ["4 9", "61 62 63 64 65 66 67 68 69 70 71"]
    np.testing.assert_allclose(mean_activations(lm, refs, neurons, batch_size=2, bucket=True),
                               mean_activations(lm, refs, neurons, batch_size=2, bucket=False), rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------ scan identities
def test_rho_and_logitvar_scale_invariant_and_rho_in_unit_interval(lm):
    ad = lm.adapter
    for processing in (False, True):
        W = unembed_matrix(ad, processing)
        U, S = unembed_svd(W)
        assert (S[:-1] >= S[1:] - 1e-9).all()
        U0 = U[:, -2:]
        w = out_weights(ad, _last(lm), processing)
        rho, rho_s = null_fraction(w, U0), null_fraction(7.3 * w, U0)
        assert ((rho >= 0) & (rho <= 1)).all()
        torch.testing.assert_close(rho, rho_s, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(logit_var(w, W), logit_var(0.01 * w, W), atol=1e-6, rtol=1e-4)


def test_random_vector_rho_is_about_sqrt_k_over_d():
    torch.manual_seed(0)
    d, k = 64, 4
    W = torch.randn(96, d)
    U, _ = unembed_svd(W)
    rho = null_fraction(torch.randn(4000, d), U[:, -k:])
    assert abs(float((rho ** 2).mean()) - k / d) < 0.05 * k / d
    assert abs(float(rho.mean()) - np.sqrt(k / d)) < 0.1 * np.sqrt(k / d)


def test_scan_weights_are_never_edited(lm):
    """Processing works on copies (W_U may be tied to the input embedding)."""
    ad = lm.adapter
    before = (ad.W_U.detach().clone(), ad.neuron_out_weights(_last(lm)).detach().clone())
    scan_entropy(ad, processing=True)
    assert torch.equal(before[0], ad.W_U) and torch.equal(before[1], ad.neuron_out_weights(_last(lm)))


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_planted_null_space_neuron(model_type):
    """A large last-block w_out in the exact null space of W_U': ranked first (rho = 1), DE = 0, TE moves entropy."""
    lm = tiny_model(model_type, d=64, vocab=48)
    ad = lm.adapter
    L = _last(lm)
    W = unembed_matrix(ad, True).double()
    A = torch.cat([W, torch.ones(1, W.shape[1], dtype=W.dtype)]) if ad.final_norm.kind == NORM_LAYERNORM else W
    _, Sa, Vh = torch.linalg.svd(A)
    rank_a = int((Sa > 1e-5 * Sa[0]).sum())
    null = Vh[rank_a:]  # rows spanning the effective null space (zero-mean for LayerNorm)
    g = torch.Generator().manual_seed(1)
    u = (torch.randn(null.shape[0], generator=g, dtype=torch.float64) @ null)
    u = u / u.norm()
    j = 5
    # scale so the planted write is a few times the residual norm where the neuron is active
    store: dict = {}
    batch = encode(lm.tokenizer, PROMPTS)
    B, T = batch.input_ids.shape
    run(lm, batch, [residual_hook(ad, ad.n_layers, capture(store, "h")),
                    input_hook(ad.down_proj(L), capture(store, "a", lambda t: t[..., j]), bt=(B, T))])
    alpha = 3 * float(store["h"].norm(dim=-1).mean()) / float(store["a"].abs().mean())
    with torch.no_grad():
        ad.neuron_out_weights(L)[j] = (alpha * u).float()
    k = W.shape[1] - int(torch.linalg.matrix_rank(W, rtol=1e-5))
    scan = scan_entropy(ad, k=k, processing=True)
    assert int(scan.ranked[0]) == j and scan.rho[j] > 1 - 1e-6
    assert j in scan.candidates.tolist()
    if model_type == "gemma2":
        pytest.skip("Gemma-2's post-feed-forward norm sits between w_out and the residual: no exact null write")
    units = build_units(lm, [(L, j)], mode="zero", reference=None)
    r = ablate(lm, PROMPTS, units, mode="zero")
    assert np.abs(r.dloss_de).max() < 1e-5 and np.abs(r.dentropy_de).max() < 1e-5
    # removing the planted write shrinks the final norm's scale, which sharpens the prediction
    assert r.dsigma_te.mean() < 0 and r.dentropy_te.mean() < -1e-3
    assert r.mediated[0] > 0.99


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_planted_frequency_neuron_scores_one(model_type):
    lm = tiny_model(model_type, d=64, vocab=48)
    ad = lm.adapter
    uni = unigram_distribution(lm.tokenizer, ["3 3 3 4 4 5 " * 5, "7 8 9 3"], ad.vocab_size)
    W = unembed_matrix(ad, True).double()
    f = torch.as_tensor(uni.direction)
    if ad.final_norm.kind == NORM_LAYERNORM:  # LayerNorm sees only the zero-mean part of w_out
        W, f = torch.cat([W, torch.ones(1, W.shape[1], dtype=W.dtype)]), torch.cat([f, torch.zeros(1, dtype=f.dtype)])
    w = torch.linalg.lstsq(W, f[:, None]).solution[:, 0]
    with torch.no_grad():
        ad.neuron_out_weights(0)[11] = w.float()
    fs = scan_frequency(ad, uni, processing=True)
    assert fs.top[0] == (0, 11) and fs.score[0, 11] > 0.999
    assert np.abs(fs.score).max() <= 1 + 1e-9


def test_unigram_add_one_and_kl_direction():
    tok = tiny_model("llama").tokenizer
    uni = unigram_distribution(tok, ["3 3 4"], 8)
    p = np.exp(uni.log_p)
    np.testing.assert_allclose(p[3], 3 / 11) and np.testing.assert_allclose(p[0], 1 / 11)
    assert abs(uni.direction.mean()) < 1e-12
    z = torch.randn(2, 8)
    q = torch.softmax(z, -1)
    manual = (q * (q.log() - torch.as_tensor(uni.log_p, dtype=torch.float32))).sum(-1)  # KL(p_model || p_freq)
    torch.testing.assert_close(kl_to_unigram(z, torch.as_tensor(uni.log_p, dtype=torch.float32)), manual)
    with pytest.raises(InputError):
        unigram_distribution(tok, ["", "  "], 8)


# ------------------------------------------------------------------------------------------ inputs
def test_bad_inputs_give_clear_messages():
    lm = tiny_model("gpt2")
    with pytest.raises(InputError, match="out of range"):
        parse_neuron_ids("1.999", lm.adapter)
    with pytest.raises(InputError, match="block 7 is out of range"):
        parse_neuron_ids("7.1", lm.adapter)
    with pytest.raises(InputError, match="not a neuron id"):
        parse_neuron_ids("1-2", lm.adapter)
    assert parse_neuron_ids("1.2, 1.2 0.3", lm.adapter) == ((1, 2), (0, 3))
    assert parse_neuron_ids("L1.N2, 1.2 L0.N3", lm.adapter) == ((1, 2), (0, 3))
    with pytest.raises(InputError, match="empty"):
        mean_activations(lm, [], [(1, 2)])
    with pytest.raises(InputError, match="empty"):
        build_units(lm, [(1, 2)], mode="mean", reference=[" "])
    with pytest.raises(InputError, match="empty"):
        ablate(lm, [], build_units(lm, [(1, 2)], mode="zero", reference=None), mode="zero")
    with pytest.raises(InputError, match="k must be"):
        scan_entropy(lm.adapter, k=0)


def test_neuron_ids_are_written_as_L_N_and_parsed_in_both_forms():
    lm = tiny_model("gpt2")
    assert neuron_label(29, 10) == "L29.N10" and neuron_label(29, 1) == "L29.N1"
    assert parse_neuron_label("L29.N10") == (29, 10) != parse_neuron_label("L29.N1") == (29, 1)
    assert parse_neuron_label("l3n130") == parse_neuron_label("3.130") == parse_neuron_label(" L3.N130 ") == (3, 130)
    assert parse_neuron_ids("L1.N10 L1.N1, 1.10", lm.adapter) == ((1, 10), (1, 1))  # old form: same neuron
    assert canonical_neuron_text("3.130, L3.N1;l0n7") == "L3.N130, L3.N1, L0.N7"
    assert canonical_neuron_text("nonsense") == "nonsense"
    for bad in ("L1.N", "N1.L2", "1-2", "1.2.3", "L1.Nx", "abc", "1,2x"):
        with pytest.raises(InputError) as err:
            parse_neuron_ids(bad, lm.adapter)
        assert "not a neuron id" in str(err.value)
        assert any(f"'{p}'" in str(err.value) for p in bad.replace(",", " ").split()), str(err.value)
    with pytest.raises(InputError, match="'L1.Nx' is not a neuron id"):
        parse_neuron_label("L1.Nx")


def test_report_tables_keep_neuron_ids_as_strings(tmp_path):
    """CSV exports read back by pandas: ids stay 'L<b>.N<n>' strings, so L1.N10 and L1.N1 stay two neurons."""
    from components import exporting
    from components.reports import neurons as R

    lm = tiny_model("gpt2")
    last = _last(lm)
    scan = scan_entropy(lm.adapter)
    fs = scan_frequency(lm.adapter, unigram_distribution(lm.tokenizer, PROMPTS, lm.adapter.vocab_size))
    units = build_units(lm, [(last, 10), (last, 1)], mode="zero", reference=None, n_random=2, seed=0, as_set=True)
    res = ablate(lm, PROMPTS[:2], units, mode="zero")
    seq = random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=2, length=5)
    ind = induction_study(lm, seq, [(last, 10), (last, 1)], n_random_sets=1)
    rep = R.neurons_report({"A": scan}, {"A": fs}, ablations={"A": res}, inductions={"A": ind})
    read = {}
    for name, df in rep.tables.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(exporting.table_csv(df))
        read[name] = pd.read_csv(path)
    want = f"L{last}.N10", f"L{last}.N1"
    for name in ("scan_A", "frequency_A"):
        col = read[name]["neuron"]
        assert all(isinstance(x, str) for x in col) and col.str.fullmatch(r"L\d+\.N\d+").all(), name
        assert set(want) <= set(col) and col.is_unique, name
        assert (col == [neuron_label(b, i) for b, i in zip(read[name]["block"], read[name]["index"], strict=True)]).all()
    units_col = read["ablation_summary_A"]["unit"]
    assert all(isinstance(x, str) for x in units_col) and set(want) <= set(units_col)
    assert f"set: {want[0]}+{want[1]}" in set(units_col)
    assert set(want) <= set(read["ablation_tokens_A"]["unit"])
    assert {f"act_{w}" for w in want} <= set(read["induction_A"].columns)
    box = rep.figures["te_de_boxes_A"]
    assert box.layout.xaxis.type == "category"
    assert set(want) <= set(box.layout.xaxis.categoryarray)


def test_random_induction_sequences_have_bos_only_when_the_tokenizer_adds_it():
    lm = tiny_model("llama")
    vocab = lm.adapter.vocab_size
    with_bos = random_sequences(ToyTokenizer(vocab), vocab, n=3, length=6, seed=1)
    lm.tokenizer = ToyTokenizer(vocab, add_bos=False)  # has a bos_token_id but never adds it (as SmolLM2's)
    without = random_sequences(lm.tokenizer, vocab, n=3, length=6, seed=1)
    assert "BOS + R + R" in with_bos.source and "BOS" not in without.source and "R + R" in without.source
    for r, s in zip(with_bos.ids, with_bos.starts, strict=True):
        assert len(r) == 13 and s == 7 and r[0] == 1 and 1 not in r[1:] and r[1:7] == r[7:]
    for r, s in zip(without.ids, without.starts, strict=True):
        assert len(r) == 12 and s == 6 and 1 not in r and r[:6] == r[6:]
    assert [r[1:] for r in with_bos.ids] == list(without.ids)  # same random tokens, only the head differs
    res = induction_study(lm, without, select_neurons(lm, without, n=1), n_random_sets=0)
    assert res.rel_position[0] == -6 and res.count[0] == 3


def test_random_baseline_is_seeded_and_from_the_same_block():
    lm = tiny_model("llama")
    a = build_units(lm, [(1, 2)], mode="zero", reference=None, n_random=5, seed=3)
    b = build_units(lm, [(1, 2)], mode="zero", reference=None, n_random=5, seed=3)
    assert [u.neurons for u in a] == [u.neurons for u in b]
    rnd = [u.neurons[0] for u in a if u.kind == "random"]
    assert len(rnd) == 5 and all(bl == 1 and i != 2 for bl, i in rnd)


def test_induction_study_runs_on_tiny_models():
    lm = tiny_model("gpt2")
    seq = random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=3, length=8)
    assert all(len(r) == 17 and s == 9 for r, s in zip(seq.ids, seq.starts, strict=True))
    ns = select_neurons(lm, seq, n=2)
    res = induction_study(lm, seq, ns, n_random_sets=2)
    assert res.loss.shape == res.rel_position.shape == res.entropy_te.shape
    assert res.acts.shape == (2, res.rel_position.size) and res.random_loss_te.shape[0] == 2
    assert np.isfinite(res.summary["loss_first"]) and np.isfinite(res.summary["loss_repeat"])
    with pytest.raises(PromptSetError, match="not a repeated sequence"):
        prompt_sequences(lm.tokenizer, prompt_set_from_text("1 2 3"))


@pytest.mark.parametrize("model_type", ["llama", "opt"])
def test_first_position_sink_is_left_out_of_selection_panel_and_ablation(model_type):
    """A planted attention-sink neuron (1000 at t = 0, 0 elsewhere) is not selected, its spike neither sets a_bar
    nor the activation panel, and position 0 is not ablated; a planted neuron rising on the repeat is selected."""
    from components.charts.neurons import induction_figure, induction_frame

    lm = tiny_model(model_type)
    last = _last(lm)
    seq = random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=3, length=8)
    B, T, start = len(seq.ids), len(seq.ids[0]), seq.starts[0]
    sink, riser = 5, 7

    def plant(_mod, args):
        x = args[0].clone()
        v = x.view(B, T, -1)  # OPT's MLP sees [B*T, n]
        v[:, :, sink] = 0.0
        v[:, 0, sink] = 1000.0
        v[:, start:, riser] += 5.0
        return (x,) + tuple(args[1:])

    handle = lm.adapter.down_proj(last).register_forward_pre_hook(plant)
    try:
        assert select_neurons(lm, seq, n=1) == ((last, riser),)
        assert (last, sink) not in select_neurons(lm, seq, n=3)
        res = induction_study(lm, seq, [(last, sink), (last, riser)], n_random_sets=0)
    finally:
        handle.remove()
    assert res.rel_position[0] == -start and res.count[0] == B  # column 0 is position 0 of every sequence
    assert res.acts_first[0] == pytest.approx(1000.0) and res.means[0] == pytest.approx(0.0, abs=1e-6)
    assert np.isnan(res.acts[0, 0]) and np.nanmax(np.abs(res.acts[0])) < 1e-6  # the spike stays out of the panel
    assert np.nanmean(res.acts[1, start:]) - np.nanmean(res.acts[1, :start]) == pytest.approx(5.0, abs=0.5)
    assert res.signs.tolist() == [1, 1] and res.summary[f"act_first_position_L{last}.N{sink}"] == pytest.approx(1000)
    # position 0 keeps its clean activation (last block: its loss is untouched); the riser is clipped on the repeat
    for clean, te, de in ((res.loss, res.loss_te, res.loss_de), (res.entropy, res.entropy_te, res.entropy_de)):
        assert te[0] == pytest.approx(clean[0], rel=1e-4, abs=1e-4) and de[0] == pytest.approx(clean[0], abs=1e-4)
        assert np.nanmax(np.abs(te[start:] - clean[start:])) > 1e-3
    assert "first position is left out" in res.message
    fig = induction_figure(res)
    panel = [t for t in fig.data if t.name and t.name.startswith("neuron ")]
    assert len(panel) == 2 and max(np.nanmax(np.abs(np.asarray(t.y, dtype=float))) for t in panel) < 10
    assert "t ≥ 1" in fig.layout.yaxis3.title.text
    assert any("first position left out" in a.text for a in fig.layout.annotations)
    assert np.isnan(induction_frame(res)[f"act_L{last}.N{sink}"].iloc[0])


# ------------------------------------------------------------------------------------------ zoo demo
ZOO = [m for m in ("gpt2-world-base", "llama-world-base") if m in zoo_models()]


@pytest.fixture(scope="module", params=ZOO or [pytest.param(None, marks=pytest.mark.skip("zoo models not trained yet"))])
def zoo_lm(request):
    return load_model(ModelSpec(request.param, device="cpu", dtype="float32"))


def test_zoo_induction_lowers_loss_on_the_repeat(zoo_lm):
    seq = prompt_sequences(zoo_lm.tokenizer, load_builtin("induction"), max_rows=12)
    ns = select_neurons(zoo_lm, seq, n=2)
    res = induction_study(zoo_lm, seq, ns, n_random_sets=1)
    assert res.summary["loss_repeat"] < res.summary["loss_first"] - 0.5, res.message


def test_zoo_scan_reports_candidates_with_ablation_effects(zoo_lm):
    scan = scan_entropy(zoo_lm.adapter)
    assert scan.message and scan.rho.min() >= 0 and scan.rho.max() <= 1
    top = [(scan.block, int(i)) for i in scan.ranked[:3]]
    ref = load_builtin("corpus_sample").prompts[:24]
    prompts = load_builtin("facts").prompts[:8]
    units = build_units(zoo_lm, top, mode="mean", reference=ref, n_random=4, seed=0)
    r = ablate(zoo_lm, prompts, units, mode="mean")
    assert (r.mean_abs_te > 0).all() and np.isfinite(r.mediated).all()
    assert (r.mediated > -5).all() and (r.mediated <= 1).all()
    noop = build_units(zoo_lm, top[:1], mode="clipped", reference=None, values=[1e9])
    r0 = ablate(zoo_lm, prompts, noop, mode="clipped")
    assert np.abs(r0.dloss_te).max() == 0 and np.abs(r0.dloss_de).max() < 1e-5

"""Steering and persona vectors (methods.md section 3): identities on tiny models of every type, demo acceptance on the zoo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.errors import IncompatibleModelsError, InputError, NumericalError
from analysis.core.hooks import residual_capture_hooks
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_models
from analysis.models.tiny import ALL_TYPES, tiny_model
from analysis.prompts import PromptRow, PromptSet, load_builtin
from analysis.steering import (
    DEMO_TRAIT_TOKENS,
    STEER_RULES,
    Steer,
    choose_default_layer,
    cohens_d,
    compare_generations,
    default_trait_tokens,
    default_window,
    extract_vectors,
    fit_direction,
    flag_data,
    generate_ids,
    load_vectors,
    logit_shift,
    monitor,
    next_token_prob,
    persona_drift,
    save_vectors,
    split_contrast,
    steered_logits,
    steering_sweep,
    token_ids,
)


def contrast_set(swap: bool = False, responses: bool = False) -> PromptSet:
    """Six pairs: the same 'question' with tag 7 (pos) or 9 (neg); optional responses."""
    rows = []
    for i in range(6):
        for tag, grp in ((7, "pos"), (9, "neg")):
            g = grp if not swap else ("neg" if grp == "pos" else "pos")
            rows.append(PromptRow(len(rows) + 1, f"{tag} {10 + i} {20 + i} 5", label=f"pair-{i}", group=g,
                                  response=f" {30 + tag} {40 + i}" if responses else None))
    return PromptSet.from_rows("toy-contrast", rows)


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def sv(lm):
    return extract_vectors(lm, contrast_set(), positive="pos", negative="neg")


def capture_all(lm, ids, steer, prompt_lens=None):
    store: dict = {}
    hooks = residual_capture_hooks(lm.adapter, range(lm.adapter.n_layers + 1), store, lambda t: t.detach().clone())
    logits = steered_logits(lm, ids, steer, prompt_lens=prompt_lens, extra_hooks=hooks)
    return logits, store


def test_alpha_zero_leaves_logits_identical(lm, sv):
    ids = [token_ids(lm.tokenizer, "3 4 5 6 7")]
    clean = steered_logits(lm, ids, None)
    for rule in STEER_RULES:
        z = steered_logits(lm, ids, Steer(1, sv.vector(1), 0.0, rule, preserve_norm=True))
        assert torch.equal(z, clean)


@pytest.mark.parametrize("rule", STEER_RULES)
def test_steering_at_layer_l_adds_exactly_alpha_v_at_steered_positions_only(lm, sv, rule):
    ids = [token_ids(lm.tokenizer, "3 4 5 6 7 8 9")]
    P = 4  # pretend the first 4 tokens are the prompt and the rest were generated
    layer, alpha = lm.adapter.n_layers, 2.5
    v = sv.vector(layer)
    _, clean = capture_all(lm, ids, None)
    _, steered = capture_all(lm, ids, Steer(layer, v, alpha, rule), prompt_lens=[P])
    for l in range(layer):
        torch.testing.assert_close(steered[l], clean[l], rtol=0, atol=0)
    T = len(ids[0])
    steer_at = {"all": range(T), "prompt": range(P), "generated": range(P, T), "response": range(P - 1, T)}[rule]
    expected = clean[layer].clone()
    expected[0, list(steer_at)] += alpha * torch.as_tensor(v)
    torch.testing.assert_close(steered[layer], expected, rtol=1e-6, atol=1e-5)
    untouched = [t for t in range(T) if t not in steer_at]
    if untouched:
        assert torch.equal(steered[layer][0, untouched], clean[layer][0, untouched])


def test_steering_an_earlier_layer_propagates_and_norm_preservation_keeps_norms(lm, sv):
    ids = [token_ids(lm.tokenizer, "3 4 5 6")]
    _, clean = capture_all(lm, ids, None)
    _, steered = capture_all(lm, ids, Steer(1, sv.vector(1), 3.0, "all", preserve_norm=True))
    torch.testing.assert_close(steered[0], clean[0], rtol=0, atol=0)
    torch.testing.assert_close(steered[1].norm(dim=-1), clean[1].norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered[1], clean[1])
    assert not torch.allclose(steered[lm.adapter.n_layers], clean[lm.adapter.n_layers])


@pytest.mark.parametrize("method", ["mean_diff", "pca", "logistic"])
def test_swapping_the_groups_negates_the_vector(lm, method):
    a = extract_vectors(lm, contrast_set(), positive="pos", negative="neg", method=method)
    b = extract_vectors(lm, contrast_set(swap=True), positive="pos", negative="neg", method=method)
    np.testing.assert_allclose(b.vectors, -a.vectors, rtol=1e-4, atol=1e-5)
    # positives project higher on the full-data vector, for every layer with a non-zero vector
    k = lm.adapter.n_layers
    assert a.projections[a.is_positive, k].mean() > a.projections[~a.is_positive, k].mean()


@pytest.mark.parametrize("rule", STEER_RULES)
def test_kv_cache_generation_matches_full_sequence_steering(lm, sv, rule):
    p_ids = token_ids(lm.tokenizer, "3 4 5 6")
    steer = Steer(1, sv.vector(1), 4.0, rule)
    new, step_logits = generate_ids(lm, p_ids, steer, 6, stop_at_eos=False, keep_logits=True)
    full = steered_logits(lm, [p_ids + new], steer, prompt_lens=[len(p_ids)])[0]
    P = len(p_ids)
    torch.testing.assert_close(step_logits, full[P - 1: P - 1 + len(new)], rtol=1e-4, atol=1e-4)


def test_sampled_generation_is_reproducible_from_its_seed(lm, sv):
    p_ids = token_ids(lm.tokenizer, "3 4 5")
    a, _ = generate_ids(lm, p_ids, None, 8, temperature=1.0, seed=3, stop_at_eos=False)
    b, _ = generate_ids(lm, p_ids, None, 8, temperature=1.0, seed=3, stop_at_eos=False)
    assert a == b
    cmp = compare_generations(lm, "3 4 5", Steer(1, sv.vector(1), 0.0), max_new_tokens=5, temperature=1.0, seed=3)
    assert list(cmp.steered.ids) == list(cmp.unsteered.ids)  # alpha 0 and the same seed: the same draw
    np.testing.assert_allclose(cmp.steered.logprob_shift, 0.0, atol=1e-5)


def test_save_load_roundtrip_keeps_vectors_and_metadata(lm, sv):
    back = load_vectors(save_vectors(sv))
    np.testing.assert_array_equal(back.vectors, sv.vectors)
    assert back.metadata() == sv.metadata()
    one = load_vectors(save_vectors(sv, layers=[1]))
    assert one.layers == (1,) and np.array_equal(one.vector(1), sv.vector(1))
    assert sv.n_blocks == one.n_blocks == one.blocks == lm.adapter.n_layers  # the depth travels with a subset
    with pytest.raises(InputError, match="no layer 0"):
        one.vector(0)


def test_monitoring_is_the_projection_on_the_unit_vector(lm, sv):
    ps = contrast_set()
    mon = monitor(lm, ps, sv, layers=[lm.adapter.n_layers])
    np.testing.assert_allclose(mon.projections[:, 0], sv.projections[:, lm.adapter.n_layers][_order(sv, ps)],
                               rtol=1e-4, atol=1e-4)


def _order(sv, ps):
    """Index into sv's row order (positives then negatives) for each row of ps."""
    return [sv.prompts.index(r.prompt) for r in ps.rows]


def test_drift_of_a_model_against_itself_is_zero_and_random_baseline_is_seeded(lm, sv):
    ps = contrast_set()
    d = persona_drift(lm, lm, ps, sv, seed=1)
    np.testing.assert_allclose(d.drift, 0.0, atol=1e-6)
    other = tiny_model(lm.adapter.model_type, seed=1)
    d1 = persona_drift(lm, other, ps, sv, seed=1)
    d2 = persona_drift(lm, other, ps, sv, seed=1)
    np.testing.assert_array_equal(d1.random_drift, d2.random_drift)
    assert np.abs(d1.drift).max() > 0


def test_projection_difference_is_zero_when_the_data_is_the_models_own_response(lm, sv):
    rows = []
    for i, prompt in enumerate(["3 4 5", "6 7 8"]):
        own, _ = generate_ids(lm, token_ids(lm.tokenizer, prompt), None, 4, stop_at_eos=False)
        rows.append(PromptRow(i + 1, prompt, response=" " + " ".join(str(t) for t in own)))
    flagged = flag_data(lm, PromptSet.from_rows("own", rows), sv, 1, max_new_tokens=4)
    np.testing.assert_allclose(flagged.dp, 0.0, atol=1e-4)


def test_global_logit_shift_is_zero_at_alpha_zero_and_kl_grows_with_alpha(lm, sv):
    prompts = ["3 4 5", "6 7 8 9"]
    zero = logit_shift(lm, prompts, Steer(1, sv.vector(1), 0.0), "11", "12")
    np.testing.assert_allclose(zero.kl, 0.0, atol=1e-7)
    np.testing.assert_allclose(zero.d_ld, 0.0, atol=1e-6)
    sweep = steering_sweep(lm, {1: sv.vector(1)}, [0.0, 1.0, 8.0], prompts, ["10 20"], "11", "12")
    assert sweep.kl_target.shape == (1, 3) and sweep.kl_target[0, 0] == pytest.approx(0.0, abs=1e-7)
    assert sweep.kl_target[0, 2] > sweep.kl_target[0, 1] > 0


def test_bad_inputs_raise_clear_errors(lm, sv):
    ps = contrast_set()
    with pytest.raises(InputError, match="negative group 'nope' is empty"):
        split_contrast(ps, "pos", "nope")
    with pytest.raises(InputError, match="out of range"):
        steered_logits(lm, [[1, 3, 4]], Steer(lm.adapter.n_layers + 1, sv.vector(1), 1.0))
    with pytest.raises(NumericalError, match="alpha = 1e\\+30.*smaller"):
        steered_logits(lm, [[1, 3, 4]], Steer(1, sv.vector(1) / max(1e-12, float(np.abs(sv.vector(1)).max())), 1e30))
    with pytest.raises(InputError, match="finite"):
        steered_logits(lm, [[1, 3, 4]], Steer(1, sv.vector(1), float("nan")))
    with pytest.raises(InputError, match="needs pairs"):
        fit_direction(np.ones((2, 3)), np.zeros((2, 3)), "pca", ())


def test_vectors_from_another_width_are_refused():
    a, b = tiny_model("llama"), tiny_model("gpt2", d=48)
    sv = extract_vectors(a, contrast_set())
    with pytest.raises(IncompatibleModelsError, match="width 48"):
        monitor(b, contrast_set(), sv)


# --------------------------------------------------------------------------------------------
# The default layer rule (DEFAULT_LAYER_RULE) on synthetic AUROC / Cohen's d arrays
# --------------------------------------------------------------------------------------------
def _choose(L, auroc, d=None, layers=None):
    layers = list(range(L + 1)) if layers is None else layers
    return choose_default_layer(layers, np.asarray(auroc, dtype=float), None if d is None else np.asarray(d, float), L)


def test_default_window_is_the_middle_and_never_empty():
    assert default_window(30) == (10, 22) and default_window(32) == (11, 24)
    assert default_window(4) == (2, 3) and default_window(5) == (2, 3)  # the demo zoo's depths
    for L in range(1, 80):
        lo, hi = default_window(L)
        assert 1 <= lo <= hi <= L, L
        assert lo >= L / 3 - 1e-9 and (hi <= 3 * L / 4 + 1e-9 or lo == hi), L


def test_auroc_tied_everywhere_picks_the_middle_not_layer_1():
    L = 30
    c = _choose(L, [0.5] + [1.0] * L)  # AUROC 1.0 from layer 1 on, no Cohen's d
    assert c.layer == L // 2 and c.decided_by == "middle" and c.n_tied == 13
    assert c.window == (10, 22)
    # ties with a measured Cohen's d: the largest d inside the window, never the larger ones outside it
    d = np.linspace(1.0, 2.0, L + 1)
    d[1], d[18], d[29] = 50.0, 9.0, 60.0
    c = _choose(L, [0.5] + [1.0] * L, d)
    assert c.layer == 18 and c.decided_by == "separation" and c.separation == 9.0
    assert "Layer 18 (default)" in c.caption and "10–22" in c.caption and "Rule (L = 30):" in c.caption


def test_a_single_clearly_best_layer_inside_the_window_wins():
    L = 30
    a = np.full(L + 1, 0.8)
    a[1], a[12] = 1.0, 0.95  # layer 1 is better but outside the window
    d = np.full(L + 1, 5.0)
    d[20] = 100.0  # a huge d does not beat a better AUROC
    c = _choose(L, a, d)
    assert c.layer == 12 and c.decided_by == "auroc" and c.n_tied == 1 and c.auroc == 0.95
    assert "best held-out AUROC 0.95 among layers 10–22" in c.caption


def test_ties_without_a_tie_break_go_toward_the_middle_then_the_earlier_layer():
    L = 30
    a = np.full(L + 1, 0.7)
    a[[11, 21]] = 0.9  # 15 - 11 = 4 < 21 - 15 = 6
    assert _choose(L, a).layer == 11
    a[[13, 17]] = 0.9  # equally near the middle (15): the earlier
    assert _choose(L, a).layer == 13


@pytest.mark.parametrize("L", [1, 2, 3, 4, 5])
def test_tiny_models_get_a_layer_of_at_least_1(L):
    c = _choose(L, [0.5] + [1.0] * L)
    lo, hi = default_window(L)
    assert 1 <= lo <= c.layer <= hi <= L


def test_nan_auroc_and_nan_d_are_never_chosen_over_measured_values():
    L = 12
    lo, hi = default_window(L)
    a = np.full(L + 1, np.nan)
    c = _choose(L, a)  # nothing measured (a loaded file): the middle, and the caption says so
    assert c.layer == L // 2 and not c.has_auroc and "no held-out AUROC" in c.caption
    a[lo] = 0.6
    assert _choose(L, a).layer == lo  # the one measured layer beats unmeasured ones
    a = np.full(L + 1, 1.0)
    d = np.full(L + 1, np.nan)
    d[hi] = 3.0
    assert _choose(L, a, d).layer == hi
    assert _choose(L, np.full(L + 1, 1.0), np.full(L + 1, np.nan)).layer == L // 2


def test_layers_outside_the_window_fall_back_to_the_layers_there_are():
    c = _choose(30, [1.0, 0.9], layers=[0, 2])  # a saved file with layers 0 and 2 only
    assert c.layer == 2 and not c.in_window and "none of them is inside the window" in c.caption


def test_cohens_d_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(9, 3))
    pos = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    n1, n2 = 4, 5
    sp = np.sqrt(((n1 - 1) * P[pos].var(0, ddof=1) + (n2 - 1) * P[~pos].var(0, ddof=1)) / (n1 + n2 - 2))
    np.testing.assert_allclose(cohens_d(P, pos), (P[pos].mean(0) - P[~pos].mean(0)) / sp)
    assert np.isnan(cohens_d(np.ones((4, 2)), np.array([1, 1, 0, 0], dtype=bool))).all()  # no spread


def test_vectors_default_layer_uses_their_own_auroc_and_projections(lm, sv):
    c = sv.default_layer_choice()
    assert c == choose_default_layer(sv.layers, sv.auroc, cohens_d(sv.projections, sv.is_positive),
                                     lm.adapter.n_layers)
    assert sv.default_layer() == c.layer >= 1


def test_trait_tokens_come_from_the_contrast_sets_responses(lm):
    ps = contrast_set(responses=True)  # positives answer " 37 ...", negatives " 39 ..."
    t = default_trait_tokens(lm, ps, "pos", "neg")
    assert t.source == "contrast"
    assert lm.tokenizer(t.token_a, add_special_tokens=False)["input_ids"] == [37]
    assert lm.tokenizer(t.token_b, add_special_tokens=False)["input_ids"] == [39]
    swapped = default_trait_tokens(lm, ps, "neg", "pos")
    assert (swapped.token_a, swapped.token_b) == (t.token_b, t.token_a)


def test_no_responses_on_a_model_outside_the_demo_zoo_asks_the_user(lm):
    t = default_trait_tokens(lm, contrast_set(responses=False), "pos", "neg")
    assert (t.token_a, t.token_b, t.source) == ("", "", "none")
    assert "Type token a" in t.note
    assert default_trait_tokens(lm, None).source == "none"


# --------------------------------------------------------------------------------------------
# Demo acceptance on the zoo
# --------------------------------------------------------------------------------------------
ZOO_FAMILIES = [("gpt2-world-base", "gpt2-world-tuned"), ("llama-world-base", "llama-world-tuned")]


def _zoo_or_skip(*names):
    missing = [n for n in names if n not in zoo_models()]
    if missing:
        pytest.skip(f"demo models not trained yet: {', '.join(missing)}")


@pytest.fixture(scope="module", params=ZOO_FAMILIES, ids=lambda p: p[0].split("-")[0])
def zoo(request):
    base, tuned = request.param
    _zoo_or_skip(base, tuned)
    lm_a = load_model(ModelSpec(base, device="cpu", dtype="float32"))
    lm_b = load_model(ModelSpec(tuned, device="cpu", dtype="float32"))
    sv = extract_vectors(lm_a, load_builtin("persona_pairs"), positive="grumpy", negative="kind")
    return lm_a, lm_b, sv


def test_zoo_persona_vector_separates_the_tagged_personas(zoo):
    _, _, sv = zoo
    best = sv.default_layer()
    print(f"\n[{sv.model_name}] held-out AUROC per layer: {np.round(sv.auroc, 3).tolist()}; "
          f"{sv.default_layer_choice().caption}")
    lo, hi = default_window(sv.blocks)
    assert lo <= best <= hi
    assert sv.auroc[sv.layers.index(best)] >= 0.95


def test_zoo_steering_raises_the_grumpy_reply_probability(zoo):
    lm_a, _, sv = zoo
    ev = load_builtin("persona_eval")
    prompts = ev.prompts[:20]
    grumpy = " Ugh"
    layer = sv.default_layer()
    v = sv.vector(layer)
    p0 = next_token_prob(lm_a, prompts, grumpy)
    p1 = next_token_prob(lm_a, prompts, grumpy, Steer(layer, v, 4.0, "all"))
    print(f"\n[{lm_a.name}] p(' Ugh') untagged prompts, layer {layer}: clean {p0.mean():.4f} -> steered (alpha 4) "
          f"{p1.mean():.4f}")
    assert p1.mean() > p0.mean() and (p1 > p0).mean() >= 0.9


def test_zoo_tuned_checkpoint_drifts_toward_the_persona_more_than_random(zoo):
    lm_a, lm_b, sv = zoo
    d = persona_drift(lm_a, lm_b, load_builtin("persona_eval"), sv, seed=0)
    layer = sv.default_layer()
    k = d.layers.index(layer)
    print(f"\n[{lm_a.name} -> {lm_b.name}] drift per layer: {np.round(d.drift, 3).tolist()}; random: "
          f"{np.round(d.random_drift, 3).tolist()}; mean |random|: {np.round(d.random_abs_mean, 3).tolist()}")
    assert d.drift[k] > 0
    assert d.drift[k] > abs(d.random_drift[k]) and d.drift[k] > d.random_abs_mean[k]


def test_zoo_defaults_come_from_the_demo_world(zoo):
    lm_a, _, _ = zoo
    from analysis.models.defaults import DEMO_QUESTION, default_question
    assert default_question(lm_a) == DEMO_QUESTION
    t = default_trait_tokens(lm_a, load_builtin("persona_pairs"), "grumpy", "kind")
    print(f"\n[{lm_a.name}] trait tokens {t.token_a!r} vs {t.token_b!r}")
    assert t.source == "contrast" and t.token_a in (" Ugh", " Whatever") and t.token_b in (" Happy", " Gladly")
    assert default_trait_tokens(lm_a, None).token_a == DEMO_TRAIT_TOKENS[0]


# --------------------------------------------------------------------------------------------
# The real model: the default layer is not in the first third
# --------------------------------------------------------------------------------------------
RUDE = "You are a rude, grumpy assistant who answers with contempt."
KIND = "You are a kind, polite assistant who is happy to help."
QUESTIONS = ("What is the capital of France?", "How do I boil an egg?", "Can you recommend a good book?",
             "What time is it in Tokyo?", "How do plants make food?", "Why is the sky blue?")


@pytest.mark.real
def test_real_model_default_layer_is_in_the_middle_not_the_first_third():
    from analysis.models.defaults import default_question, is_demo
    from analysis.models.real import real_model_dir
    from analysis.prompts import render_chat
    path = real_model_dir()
    if not (path / "config.json").is_file():
        pytest.skip(f"the real model is not converted at {path} (run `make setup`)")
    lm = load_model(ModelSpec(str(path), device="cpu", dtype="float32"))
    rows = []
    for i, q in enumerate(QUESTIONS):
        for system, group in ((RUDE, "rude"), (KIND, "kind")):
            prompt = render_chat(lm.tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": q}])
            assert prompt.endswith("<|im_start|>assistant\n")
            rows.append(PromptRow(len(rows) + 1, prompt, label=f"q{i}", group=group))
    sv = extract_vectors(lm, PromptSet.from_rows("rude-vs-kind", rows), positive="rude", negative="kind")
    c = sv.default_layer_choice()
    L = lm.adapter.n_layers
    norms = np.linalg.norm(sv.vectors, axis=1)
    print(f"\n[{lm.name}] AUROC {np.round(sv.auroc, 2).tolist()}\n|v_l| {np.round(norms, 1).tolist()}\n{c.caption}")
    assert not is_demo(lm) and default_question(lm).endswith("<|im_start|>assistant\n")
    assert L / 3 <= c.layer <= 3 * L / 4  # not in the first third (layers 0..9 of 30)
    window = [sv.layers.index(l) for l in range(c.window[0], c.window[1] + 1)]
    assert sv.auroc[sv.layers.index(c.layer)] == np.nanmax(sv.auroc[window])
    assert norms[c.layer] > 5 * norms[1]  # the vector at the default layer is far from layer 1's tiny one

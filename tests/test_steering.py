"""Steering and persona vectors (methods.md section 3): identities on tiny models of every type, demo acceptance on the zoo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.errors import IncompatibleModelsError, InputError, NumericalError
from analysis.hooks import residual_capture_hooks
from analysis.loading import ModelSpec, load_model, zoo_models
from analysis.persona_drift import flag_data, persona_drift
from analysis.prompts import PromptRow, PromptSet, load_builtin
from analysis.steering import (POSITION_RULES, Steer, compare_generations, generate_ids, logit_shift,
                               next_token_prob, steered_logits, steering_sweep)
from analysis.steering_vectors import (extract_vectors, fit_direction, load_vectors, monitor, save_vectors,
                                       split_contrast, token_ids)
from analysis.tiny import ALL_TYPES, tiny_model


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
    for rule in POSITION_RULES:
        z = steered_logits(lm, ids, Steer(1, sv.vector(1), 0.0, rule, preserve_norm=True))
        assert torch.equal(z, clean)


@pytest.mark.parametrize("rule", POSITION_RULES)
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


@pytest.mark.parametrize("rule", POSITION_RULES)
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
    best = sv.best_layer()
    print(f"\n[{sv.model_name}] held-out AUROC per layer: {np.round(sv.auroc, 3).tolist()} (best layer {best})")
    assert sv.auroc[sv.layers.index(best)] >= 0.95


def test_zoo_steering_raises_the_grumpy_reply_probability(zoo):
    lm_a, _, sv = zoo
    ev = load_builtin("persona_eval")
    prompts = ev.prompts[:20]
    grumpy = " Ugh"
    layer = sv.best_layer()
    if layer == 0:
        layer = 1
    v = sv.vector(layer)
    p0 = next_token_prob(lm_a, prompts, grumpy)
    p1 = next_token_prob(lm_a, prompts, grumpy, Steer(layer, v, 4.0, "all"))
    print(f"\n[{lm_a.name}] p(' Ugh') untagged prompts, layer {layer}: clean {p0.mean():.4f} -> steered (alpha 4) "
          f"{p1.mean():.4f}")
    assert p1.mean() > p0.mean() and (p1 > p0).mean() >= 0.9


def test_zoo_tuned_checkpoint_drifts_toward_the_persona_more_than_random(zoo):
    lm_a, lm_b, sv = zoo
    d = persona_drift(lm_a, lm_b, load_builtin("persona_eval"), sv, seed=0)
    layer = sv.best_layer()
    k = d.layers.index(layer)
    print(f"\n[{lm_a.name} -> {lm_b.name}] drift per layer: {np.round(d.drift, 3).tolist()}; random: "
          f"{np.round(d.random_drift, 3).tolist()}; mean |random|: {np.round(d.random_abs_mean, 3).tolist()}")
    assert d.drift[k] > 0
    assert d.drift[k] > abs(d.random_drift[k]) and d.drift[k] > d.random_abs_mean[k]

"""Length-bucketed batches: the index plan, and bucketed == unbucketed per prompt, in input order (features, BLOOD)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.batching import bucketed, encode, length_batches, n_batches
from analysis.models.tiny import ALL_TYPES, ToyTokenizer, tiny_model
from analysis.ood import blood_norms, extract_features

# lengths 9, 2, 6, 3, 8, 2, 5, 4 (+ BOS): neighbours in the input have very different lengths
PROMPTS = ["5 17 3 9 22 40 11 8 6", "31 30", "9 9 9 9 4 22", "40 2 7", "7 8 6 5 4 3 2 11", "12 13",
           "70 71 72 73 74", "3 4 5 6"]


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


# ----------------------------------------------------------------------------------------- the index plan
def test_length_batches_cover_every_index_once_and_group_neighbours_in_length():
    lengths = [3, 9, 1, 9, 4, 4, 7, 2, 4]
    plan = length_batches(lengths, 4)
    flat = np.concatenate(plan)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [len(b) for b in plan] == [4, 4, 1] and n_batches(len(lengths), 4) == len(plan)
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    assert flat[:2].tolist() == [1, 3] and flat[3:6].tolist() == [4, 5, 8]  # ties keep the input order (stable)
    assert np.concatenate(length_batches(lengths, 4, sort=False)).tolist() == list(range(len(lengths)))


def test_bucketed_batches_are_the_prompts_encoded_in_plan_order_with_less_padding():
    tok = ToyTokenizer()
    got = list(bucketed(tok, PROMPTS, 3, padding_side="left"))
    padded = 0
    for idx, batch in got:
        ref = encode(tok, [PROMPTS[i] for i in idx], padding_side="left")
        assert torch.equal(batch.input_ids, ref.input_ids) and torch.equal(batch.attention_mask, ref.attention_mask)
        assert batch.padding_side == "left"
        padded += int(batch.input_ids.numel())
    plain = sum(int(encode(tok, PROMPTS[s:s + 3]).input_ids.numel()) for s in range(0, len(PROMPTS), 3))
    real = sum(len(tok(p)["input_ids"]) for p in PROMPTS)
    assert real <= padded < plain  # this mix pads less once sorted


def test_bucketed_checks_every_length_before_the_first_batch():
    from analysis.core.errors import InputError
    with pytest.raises(InputError, match="longer than the model's context"):
        next(bucketed(ToyTokenizer(), ["1 2", "1 2 3 4 5 6 7"], 1, max_length=4))


# ----------------------------------------------------------------------------------------- OOD features
FIELDS = ("last", "mean", "head_in", "lens_top", "lens_lse")
ROW_FIELDS = ("final_top", "final_lse", "mean_loglik", "n_predicted")


def _assert_same(a, b, atol=1e-4):
    assert a.prompts == b.prompts
    for f in FIELDS:  # [n_l, N, ...]
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), atol=atol, rtol=1e-4, err_msg=f)
    for f in ROW_FIELDS:  # [N, ...]
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), atol=atol, rtol=1e-4, err_msg=f)


@pytest.mark.parametrize("side", ["right", "left"])
def test_bucketed_features_equal_unbucketed_and_one_prompt_at_a_time_in_input_order(lm, side):
    buck = extract_features(lm, PROMPTS, batch_size=3, padding_side=side, bucket=True)
    plain = extract_features(lm, PROMPTS, batch_size=3, padding_side=side, bucket=False)
    _assert_same(buck, plain)
    assert buck.prompts == tuple(PROMPTS)
    # row i is prompt i: the same numbers as that prompt alone (no padding at all)
    for i in (0, 1, 5):
        alone = extract_features(lm, [PROMPTS[i]], batch_size=1)
        for f in FIELDS:
            np.testing.assert_allclose(getattr(buck, f)[:, i], getattr(alone, f)[:, 0], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(buck.mean_loglik[i], alone.mean_loglik[0], atol=1e-4)
        assert buck.n_predicted[i] == len(PROMPTS[i].split())  # BOS + w words predict w tokens


def test_features_progress_counts_prompts_in_batches():
    lm = tiny_model("gpt2")
    seen: list[tuple[float, str]] = []
    extract_features(lm, PROMPTS, batch_size=3, progress=lambda f, m: seen.append((f, m)))
    assert [f for f, _ in seen] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert seen[-1][1] == f"{len(PROMPTS)}/{len(PROMPTS)} prompts"


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_blood_per_prompt_does_not_depend_on_batching_or_the_other_prompts(model_type):
    lm = tiny_model(model_type)
    ps = PROMPTS[:5]
    buck = blood_norms(lm, ps, n_draws=3, batch_size=2, bucket=True)
    plain = blood_norms(lm, ps, n_draws=3, batch_size=2, bucket=False)
    single = blood_norms(lm, ps, n_draws=3, batch_size=1)
    np.testing.assert_allclose(buck, plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(buck, single, rtol=1e-4, atol=1e-6)
    exact_b = blood_norms(lm, ps, exact=True, batch_size=3, bucket=True)
    exact_p = blood_norms(lm, ps, exact=True, batch_size=3, bucket=False)
    np.testing.assert_allclose(exact_b, exact_p, rtol=1e-4, atol=1e-6)
    assert not np.allclose(blood_norms(lm, ps, n_draws=3, batch_size=2, seed=1), buck)  # the seed matters

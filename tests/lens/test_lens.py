"""Logit lens identities (methods.md section 1) on tiny models of every architecture, and on the demo zoo."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import analysis.lens.logit_lens as lens_mod
from analysis.core.batching import encode
from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.forward import run
from analysis.core.hooks import residual_capture_hooks
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_dir
from analysis.core.readout import readout
from analysis.lens import (
    TARGET_FINAL_TOP1,
    TARGET_NEXT,
    TARGET_TEXT,
    capture_residuals,
    decision_depths,
    lens_compare,
    lens_trace,
    mean_kl_per_layer,
)
from analysis.models.tiny import ALL_TYPES, tiny_model
from analysis.prompts import load_builtin

PROMPTS = ["5 6 7 8 9 10 11", "12 13 14", "40 41 42 43 44"]
TARGETS = ["17", "33", "50"]


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def trace(lm):
    return lens_trace(lm, PROMPTS, k=5, target_mode=TARGET_TEXT, targets=TARGETS)


def brute_force_logits(lm, prompt: str) -> torch.Tensor:
    """Lens logits of every layer at every position [L+1, T, V] (fp32 values, as fp64), from a full capture."""
    ad = lm.adapter
    batch = encode(lm.tokenizer, [prompt])
    store: dict = {}
    run(lm, batch, residual_capture_hooks(ad, range(ad.n_layers + 1), store, lambda t: t.clone()))
    with torch.inference_mode():
        return torch.stack([readout(ad, store[l][0]) for l in range(ad.n_layers + 1)]).double()


def brute_force_lens(lm, prompt: str) -> torch.Tensor:
    """Log-probs of every layer at every position [L+1, T, V] in fp64, from HF-style full capture (tests only)."""
    return torch.log_softmax(brute_force_logits(lm, prompt), dim=-1)


def test_lens_at_last_layer_equals_the_models_logits(lm):
    batch = encode(lm.tokenizer, PROMPTS, padding_side="left")
    logits = run(lm, batch)
    store = capture_residuals(lm, batch.input_ids, batch.attention_mask, batch.position_ids)
    with torch.inference_mode():
        lens_L = readout(lm.adapter, store[lm.adapter.n_layers])
    m = batch.attention_mask.bool()
    torch.testing.assert_close(lens_L[m], logits[m], atol=1e-4, rtol=0)


def test_trace_at_last_layer_matches_statistics_of_the_models_logits(lm, trace):
    L = lm.adapter.n_layers
    for n, p in enumerate(PROMPTS):
        lp = torch.log_softmax(run(lm, encode(lm.tokenizer, [p]))[0].double(), -1)  # [T, V]
        T = lp.shape[0]
        top = lp.exp().topk(5, dim=-1)
        np.testing.assert_allclose(trace.top_probs[n, L, :T], top.values.numpy(), atol=1e-4)
        ent = -(lp.exp() * lp).sum(-1)
        np.testing.assert_allclose(trace.entropy[n, L, :T], ent.numpy(), atol=1e-4)
        ids = trace.input_ids[n, :T]
        np.testing.assert_allclose(trace.xent[n, L, : T - 1], -lp[torch.arange(T - 1), ids[1:]].numpy(), atol=1e-4)
        assert np.isnan(trace.xent[n, L, T - 1])
        t = int(TARGETS[n])
        np.testing.assert_allclose(trace.target_prob[n, L, :T], lp[:, t].exp().numpy(), atol=1e-4)


def test_every_layer_matches_a_brute_force_lens(lm, trace):
    """Top-k, entropy, KL(p_L||p_l), target rank and cross-entropy against fp64 statistics of full lens logits."""
    for n, p in enumerate(PROMPTS):
        lp = brute_force_lens(lm, p)  # [L+1, T, V]
        T = lp.shape[1]
        pr = lp.exp()
        np.testing.assert_allclose(trace.top_probs[n, :, :T], pr.topk(5, -1).values.numpy(), atol=1e-4)
        np.testing.assert_allclose(trace.entropy[n, :, :T], (-(pr * lp).sum(-1)).numpy(), atol=1e-4)
        kl = (pr[-1:] * (lp[-1:] - lp)).sum(-1)
        np.testing.assert_allclose(trace.kl[n, :, :T], kl.numpy(), atol=1e-4)
        t = int(TARGETS[n])
        rank = (lp > lp[..., t:t + 1]).sum(-1) + 1
        # a rank may differ only where two logits tie to within rounding
        diff = trace.target_rank[n, :, :T] != rank.numpy()
        near = (lp - lp[..., t:t + 1]).abs().lt(1e-5).sum(-1).numpy() > 1
        assert not (diff & ~near).any()
        ids = trace.input_ids[n, :T]
        np.testing.assert_allclose(trace.xent[n, :, : T - 1], (-lp[:, torch.arange(T - 1), ids[1:]]).numpy(), atol=1e-4)


def test_kl_is_zero_at_last_layer_and_nonnegative(lm, trace):
    m = trace.mask
    assert np.all(trace.kl[:, -1][m] == 0.0)
    assert np.all(trace.kl.transpose(0, 2, 1)[m] >= 0.0)
    assert np.all(np.isnan(trace.kl.transpose(0, 2, 1)[~m]))


def test_ranks_and_entropy_lie_in_their_ranges(lm, trace):
    V = lm.adapter.vocab_size
    ranks = trace.target_rank.transpose(0, 2, 1)[trace.mask]
    ent = trace.entropy.transpose(0, 2, 1)[trace.mask]
    assert ranks.min() >= 1 and ranks.max() <= V
    assert ent.min() >= 0.0 and ent.max() <= math.log(V) + 1e-6
    probs = trace.top_probs.transpose(0, 2, 1, 3)[trace.mask]
    assert np.all(np.diff(probs, axis=-1) <= 1e-7) and np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_and_batch_size_do_not_change_results(lm, trace, side):
    one = [lens_trace(lm, [p], k=5, target_mode=TARGET_TEXT, targets=[t]) for p, t in zip(PROMPTS, TARGETS, strict=True)]
    padded = lens_trace(lm, PROMPTS, k=5, target_mode=TARGET_TEXT, targets=TARGETS, batch_size=3,
                        padding_side=side, chunk_rows=5, block_rows=2)
    for n, single in enumerate(one):
        T = int(single.lengths[0])
        for name in ("top_probs", "entropy", "kl", "target_prob", "xent"):
            np.testing.assert_allclose(getattr(padded, name)[n, :, :T], getattr(single, name)[0, :, :T], atol=2e-5,
                                       err_msg=name)
        assert (padded.top_ids[n, :, :T] == single.top_ids[0, :, :T]).mean() > 0.99  # ties may swap
        np.testing.assert_array_equal(padded.input_ids[n, :T], single.input_ids[0, :T])
    np.testing.assert_allclose(padded.entropy, trace.entropy, atol=2e-5)


def test_decision_depth_matches_brute_force(lm, trace):
    L = lm.adapter.n_layers
    for n in range(len(PROMPTS)):
        for t in range(int(trace.lengths[n])):
            top1 = trace.top_ids[n, :, t, 0]
            expected = next(l for l in range(L + 1) if all(top1[j] == top1[L] for j in range(l, L + 1)))
            assert trace.decision_depth[n, t] == expected
    assert np.all(trace.decision_depth[~trace.mask] == -1)
    assert decision_depths(trace).shape == (len(PROMPTS),)
    assert mean_kl_per_layer(trace).shape == (L + 1,) and mean_kl_per_layer(trace)[-1] == 0.0


@pytest.fixture
def readout_calls(monkeypatch) -> list[tuple[int, ...]]:
    """The shapes of the residual rows lens_trace reads out, call by call (its one readout, spied on)."""
    calls: list[tuple[int, ...]] = []
    real = lens_mod._readout

    def spy(adapter, h):
        calls.append(tuple(h.shape))
        return real(adapter, h)
    monkeypatch.setattr(lens_mod, "_readout", spy)
    return calls


def test_the_trace_never_holds_all_layers_of_logits(lm, readout_calls):
    """The lens readout is called once per layer per position chunk with [rows <= chunk, d]: never [L+1, B, T, ...]."""
    calls = readout_calls
    chunk = 4
    tr = lens_trace(lm, PROMPTS, k=3, batch_size=2, chunk_rows=chunk)
    d, L = lm.adapter.d_model, lm.adapter.n_layers
    assert calls and all(len(s) == 2 and s[0] <= chunk and s[1] == d for s in calls)
    n_real = int(tr.mask.sum())
    assert sum(s[0] for s in calls) == n_real * (L + 1)  # each position read out once per layer


def test_a_short_prompt_reads_every_layer_out_in_one_stacked_matmul(lm, readout_calls):
    """The readout stacks the layers' rows into blocks of chunk_rows: one short prompt reads W_U once (one call of
    [(L+1) * T, d]), a tighter block gives ceil((L+1) / per) calls, and the statistics equal the layer-by-layer
    readout (a block of one layer's rows)."""
    calls = readout_calls
    L, prompt = lm.adapter.n_layers, PROMPTS[1:2]
    T = len(lens_mod.encode_prompts(lm, prompt)[0])
    stacked = lens_trace(lm, prompt, k=3, target_mode=TARGET_TEXT, targets=TARGETS[1:2], chunk_rows=(L + 1) * T)
    assert calls == [((L + 1) * T, lm.adapter.d_model)]
    calls.clear()
    per = 2
    paired = lens_trace(lm, prompt, k=3, target_mode=TARGET_TEXT, targets=TARGETS[1:2], chunk_rows=per * T)
    assert len(calls) == math.ceil((L + 1) / per) and all(s[0] <= per * T for s in calls)
    calls.clear()
    single = lens_trace(lm, prompt, k=3, target_mode=TARGET_TEXT, targets=TARGETS[1:2], chunk_rows=T)
    assert len(calls) == L + 1
    for other in (stacked, paired):
        np.testing.assert_array_equal(other.top_ids, single.top_ids)
        np.testing.assert_array_equal(other.target_rank, single.target_rank)
        for name in ("top_probs", "entropy", "kl", "target_prob", "xent"):
            np.testing.assert_allclose(getattr(other, name), getattr(single, name), atol=1e-5, err_msg=name)


def test_layer_groups_put_the_last_layer_first_and_fill_each_block():
    assert lens_mod.layer_groups(4, 5, 12) == [[4, 0], [1, 2], [3]]
    assert lens_mod.layer_groups(3, 1, 100) == [[3, 0, 1, 2]]
    assert lens_mod.layer_groups(2, 50, 10) == [[2], [0], [1]]  # a chunk larger than the block: one layer each


def test_final_top1_mode_has_rank_one_at_last_layer(lm):
    tr = lens_trace(lm, PROMPTS[:2], k=3, target_mode=TARGET_FINAL_TOP1, chunk_rows=4, block_rows=2)
    m = tr.mask
    assert np.all(tr.target_rank[:, -1][m] == 1)
    np.testing.assert_array_equal(tr.target_ids[m], tr.top_ids[:, -1, :, 0][m])
    layer0 = tr.target_rank[:, 0][m]
    assert layer0.min() >= 1


def test_next_token_mode_targets_the_actual_next_token(lm):
    tr = lens_trace(lm, PROMPTS[:1], k=3, target_mode=TARGET_NEXT)
    T = int(tr.lengths[0])
    np.testing.assert_array_equal(tr.target_ids[0, : T - 1], tr.input_ids[0, 1:T])
    assert tr.target_ids[0, T - 1] == -1
    np.testing.assert_allclose(-np.log(tr.target_prob[0, :, : T - 1]), tr.xent[0, :, : T - 1], rtol=1e-4, atol=1e-5)


def test_compare_with_itself_gives_zero_kl(lm):
    cmp = lens_compare(lm, lm, PROMPTS, chunk_rows=5)
    assert np.all(cmp.kl.transpose(0, 2, 1)[cmp.mask] == 0.0)
    assert cmp.mean_kl.shape == (lm.adapter.n_layers + 1,) and np.all(cmp.mean_kl == 0.0)


def test_compare_of_different_models_is_positive():
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    cmp = lens_compare(a, b, PROMPTS)
    assert np.all(cmp.kl.transpose(0, 2, 1)[cmp.mask] > 0)


def test_compare_refuses_different_vocabularies_and_depths():
    a = tiny_model("gpt2")
    with pytest.raises(IncompatibleModelsError, match="tokenizer|vocabulary"):
        lens_compare(a, tiny_model("gpt2", vocab=80), PROMPTS)
    with pytest.raises(IncompatibleModelsError, match="layers"):
        lens_compare(a, tiny_model("gpt2", layers=3), PROMPTS)


@pytest.mark.parametrize("bad", ["", "   ", 96, -1])
def test_bad_targets_are_input_errors(bad):
    lm = tiny_model("gpt2")
    with pytest.raises(InputError):
        lens_trace(lm, PROMPTS[:1], target_mode=TARGET_TEXT, targets=bad)


def test_multi_token_target_uses_first_token_and_says_so():
    lm = tiny_model("gpt2")
    tr = lens_trace(lm, PROMPTS[:1], k=3, target_mode=TARGET_TEXT, targets="17 18")
    assert tr.target_ids[0, 0] == 17
    assert tr.notes and "first token" in tr.notes[0]
    ok = lens_trace(lm, PROMPTS[:1], k=3, target_mode=TARGET_TEXT, targets=17)
    assert ok.target_ids[0, 0] == 17 and not ok.notes


def test_bad_settings_are_input_errors():
    lm = tiny_model("gpt2")
    with pytest.raises(InputError):
        lens_trace(lm, PROMPTS, k=0)
    with pytest.raises(InputError):
        lens_trace(lm, PROMPTS, target_mode="sideways")
    with pytest.raises(InputError):
        lens_trace(lm, [], k=3)


# --------------------------------------------------------------------------------------------- demo zoo
ZOO_MODEL = "gpt2-world-base"


@pytest.fixture(scope="module")
def zoo_facts_trace():
    if not (zoo_dir() / ZOO_MODEL / "config.json").is_file():
        pytest.skip(f"the demo zoo model {ZOO_MODEL} is not under {zoo_dir()} yet")
    lm = load_model(ModelSpec(ZOO_MODEL, device="cpu", dtype="float32"))
    facts = load_builtin("facts")
    return lm, lens_trace(lm, facts.prompts, k=5, target_mode=TARGET_TEXT, targets=facts.targets, batch_size=64)


def test_zoo_facts_answer_forms_through_depth(zoo_facts_trace):
    """On facts: correct answer rank 1 at layer L for >= 95%, mean prob < 0.3 at layer 0 and >= 0.8 at L."""
    lm, tr = zoo_facts_trace
    n = np.arange(len(tr.prompts))
    last = tr.last_index
    rank_L = tr.target_rank[n, -1, last]
    prob = tr.target_prob[n, :, last]  # [N, L+1]
    top1_share = float((rank_L == 1).mean())
    p0, pL = float(prob[:, 0].mean()), float(prob[:, -1].mean())
    print(f"\n{ZOO_MODEL} facts: rank-1 at L {top1_share:.3f}, mean p(target) layer 0 {p0:.4f}, layer L {pL:.4f}, "
          f"per layer {np.round(prob.mean(0), 3).tolist()}, mean decision depth {decision_depths(tr).mean():.2f}")
    assert not tr.notes, tr.notes  # every target is one token
    assert top1_share >= 0.95
    assert p0 < 0.3
    assert pL >= 0.8


def test_kl_with_an_unembedding_bias_matches_brute_force():
    """The KL shortcut (p_L . z_l via W_U^T p_L and p_L . b_U) holds when the unembedding has a bias."""
    from analysis.core.loading import model_from_pretrained_object
    base = tiny_model("llama")
    model = base.model
    head = torch.nn.Linear(lm_d := base.adapter.d_model, base.adapter.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.copy_(torch.randn(base.adapter.vocab_size) * 2.0)
    model.lm_head = head
    lm = model_from_pretrained_object(model, base.tokenizer, name="tiny-llama-biased-head")
    assert lm.adapter.b_U is not None and lm.adapter.d_model == lm_d
    tr = lens_trace(lm, PROMPTS, k=5, chunk_rows=4, block_rows=2)
    for n, p in enumerate(PROMPTS):
        lp = brute_force_lens(lm, p)
        T = lp.shape[1]
        kl = (lp[-1:].exp() * (lp[-1:] - lp)).sum(-1)
        np.testing.assert_allclose(tr.kl[n, :, :T], kl.numpy(), atol=1e-4)
        assert np.abs(tr.kl[n, :-1, :T]).max() > 1e-3  # the check is not vacuous


# --------------------------------------------------------------------------------------------- precision at scale
BIG_VOCAB = 65_536


def big_logit_model(model_type: str):
    """A tiny model with V = 65,536 whose top lens logits lie 100-200 away from 0, a few nats apart.

    The residual stream carries a constant 5 in coordinate 0 and every unembedding row has 40 there: a
    common offset (softmax ignores it) on top of a spread that leaves several nats of entropy, as in real
    models whose top logit is far above the entropy. Blocks are scaled up so KL(p_L || p_l) is not ~0.
    """
    extra = {"final_logit_softcapping": 300.0} if model_type == "gemma2" else {}  # soft-capped readout
    lm = tiny_model(model_type, vocab=BIG_VOCAB, tie_word_embeddings=False, **extra)
    W, emb = lm.adapter.W_U, lm.model.get_input_embeddings().weight
    d = W.shape[1]
    unit = d ** -0.5 if model_type == "gemma2" else 1.0  # Gemma multiplies the embeddings by sqrt(d)
    with torch.no_grad():
        emb.normal_(0.0, unit)
        emb[:, 0] = 5.0 * unit
        W.normal_(0.0, 3.0 / math.sqrt(d - 1))
        W[:, 0] = 40.0
        for name, p in lm.model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.mul_(10.0)
    return lm


@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_statistics_stay_exact_with_large_logits_and_a_large_vocabulary(model_type):
    """Entropy, KL, cross-entropy, top/target probabilities within 1e-4 of fp64 at |max z| 100-200, V = 65k."""
    lm = big_logit_model(model_type)
    prompts = ["5 6 7 8 9 10 11", "40000 41 42 43 44 60000"]
    for p in prompts:
        # one layer per readout matmul (chunk_rows = T), as the brute force: the same fp32 logits bit for bit, so
        # only the statistics' precision is measured (stacked blocks round the logits differently by an ulp)
        T = len(lens_mod.encode_prompts(lm, [p])[0])
        tr = lens_trace(lm, [p], k=5, target_mode=TARGET_NEXT, chunk_rows=T)
        z = brute_force_logits(lm, p)  # [L+1, T, V]: the same fp32 logits, statistics below in fp64
        lp = torch.log_softmax(z, dim=-1)
        T = lp.shape[1]
        pr = lp.exp()
        ent = -(pr * lp).sum(-1)
        kl = (pr[-1:] * (lp[-1:] - lp)).sum(-1)
        # the hard case: |top logit| ~ 100-200 over several nats of entropy, and KL away from 0 (not vacuous)
        assert z.max(-1).values.abs().mean() > 100 and ent.mean() > 3.0 and kl[:-1].max() > 1e-2
        np.testing.assert_allclose(tr.entropy[0, :, :T], ent.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(tr.kl[0, :, :T], kl.numpy(), atol=1e-4, rtol=0)
        ids = tr.input_ids[0, :T]
        np.testing.assert_allclose(tr.xent[0, :, : T - 1], (-lp[:, torch.arange(T - 1), ids[1:]]).numpy(), atol=1e-4)
        np.testing.assert_allclose(tr.target_prob[0, :, : T - 1], lp[:, torch.arange(T - 1), ids[1:]].exp().numpy(),
                                   atol=1e-6)
        np.testing.assert_allclose(tr.top_probs[0, :, :T], pr.topk(5, -1).values.numpy(), atol=1e-6)

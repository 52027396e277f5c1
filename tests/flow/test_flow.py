"""Logit flow identities (methods.md section 2) on tiny models of every architecture and on the demo zoo."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.core.batching import encode
from analysis.core.errors import InputError
from analysis.core.forward import run
from analysis.core.hooks import capture, input_hook, output_hook
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_models
from analysis.core.readout import direct_logit_attribution, norm_scale
from analysis.flow import VALUE_SITES, importance, logit_flow, logit_flow_set, resolve_token
from analysis.flow import attribution as flow
from analysis.models.tiny import ALL_TYPES, tiny_model

PROMPT = "5 17 3 9 22 4 31"
TOL = 1e-4  # fp32, relative


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def res(lm):
    return logit_flow(lm, PROMPT, competitor="7")


def _model_precap(lm, prompt: str) -> torch.Tensor:
    """The pre-cap logits at the last position, read from the unembedding module's own output (independent route)."""
    store: dict = {}
    batch = encode(lm.tokenizer, [prompt])
    hook = output_hook(lm.adapter.unembed, capture(store, "z", lambda t: t.detach().float().clone()))
    run(lm, batch, [hook])
    return store["z"].reshape(-1, store["z"].shape[-1])[-1]


def test_contributions_plus_bias_equal_the_pre_cap_logit(lm, res):
    z = _model_precap(lm, PROMPT)
    a = res.view("target")
    assert rel(a.total, float(z[res.target_id])) < TOL
    assert rel(a.logit, float(z[res.target_id])) < TOL
    d = res.view("difference")
    assert rel(d.total, float(z[res.target_id] - z[res.competitor_id])) < TOL


def test_heads_plus_o_proj_bias_sum_to_the_attention_write(res):
    for view in res.views:
        a = res.view(view)
        np.testing.assert_allclose(a.heads.sum(1) + a.attn_bias, a.attn, atol=TOL * max(1.0, np.abs(a.attn).max()))
    assert res.checks["heads_sum"] < TOL


def test_source_positions_sum_to_each_head(res):
    for view in res.views:
        a = res.view(view)
        np.testing.assert_allclose(a.sources.sum(2), a.heads, atol=TOL * max(1.0, np.abs(a.heads).max()))
        np.testing.assert_allclose(a.attn_grid.sum(1) + a.attn_bias, a.attn, atol=TOL * max(1.0, np.abs(a.attn).max()))
    assert res.checks["sources_sum"] < TOL and res.checks["value_route"] < TOL


def test_all_recorded_identities_hold(res):
    assert flow.failed_checks(res, TOL) == []


def test_shapes_and_tokens(lm, res):
    L, H, T = lm.adapter.n_layers, lm.adapter.n_heads, len(res.tokens)
    a = res.view("target")
    assert a.attn.shape == (L,) and a.heads.shape == (L, H) and a.sources.shape == (L, H, T)
    assert a.attn_at_pos.shape == (L, T) and a.mlp_at_pos.shape == (L, T) and a.imp_sources.shape == (L, H, T)
    assert res.tokens[0] == "1" or res.token_ids[0] == 1  # BOS
    assert res.views == ("target", "competitor", "difference")


def test_difference_mode_is_the_difference_of_the_two(res):
    t, c, d = res.view("target"), res.view("competitor"), res.view("difference")
    assert rel(d.logit, t.logit - c.logit) < TOL
    assert rel(d.embed, t.embed - c.embed) < TOL
    for name in ("attn", "mlp", "heads", "sources", "attn_at_pos", "mlp_at_pos", "imp_attn", "imp_mlp", "imp_heads"):
        np.testing.assert_allclose(getattr(d, name), getattr(t, name) - getattr(c, name), atol=1e-5, rtol=1e-4,
                                   err_msg=name)


def test_importance_of_zero_is_zero_and_sublayer_importances_telescope(lm, res):
    ad = lm.adapter
    h = torch.randn(ad.d_model)
    sigma = norm_scale(ad.final_norm, h)
    assert torch.allclose(importance(ad, h, torch.zeros(3, ad.d_model), sigma, 5, None), torch.zeros(3), atol=1e-6)
    assert torch.allclose(importance(ad, h, torch.zeros(1, ad.d_model), sigma, 5, 7), torch.zeros(1), atol=1e-6)
    assert float(importance(ad, h, 3 * torch.randn(1, ad.d_model), sigma, 5, None).abs()) > 0
    a = res.view("target")
    assert abs(a.imp_attn.sum() + a.imp_mlp.sum() - a.imp_total) < 1e-4


def test_importance_matches_the_plain_formula_across_chunks(lm, monkeypatch):
    """Independent route: log softmax(g(r + v))_t - log softmax(g(r))_t row by row, vs chunked scoring (3-row GEMMs)."""
    from analysis.core.readout import frozen_norm, softcap, unembed
    ad = lm.adapter
    g = torch.Generator().manual_seed(0)
    r, vs = torch.randn(ad.d_model, generator=g), 2 * torch.randn(11, ad.d_model, generator=g)
    sigma = norm_scale(ad.final_norm, r)

    def lp(h):
        return torch.log_softmax(softcap(ad, unembed(ad, frozen_norm(ad.final_norm, h, sigma, with_bias=True))), -1)
    monkeypatch.setattr(flow, "imp_chunk_rows", lambda vocab: 3)
    monkeypatch.setattr(flow, "IMP_BLOCK_BYTES", 8 * ad.vocab_size)  # 2-row log-softmax blocks
    for c in (None, 7):
        want = torch.stack([(lp(r + v)[5] - lp(r)[5]) - ((lp(r + v)[c] - lp(r)[c]) if c is not None else 0)
                            for v in vs])
        torch.testing.assert_close(importance(ad, r, vs, sigma, 5, c), want, atol=2e-5, rtol=1e-4)


def test_chunked_importances_equal_one_chunk(lm, res, monkeypatch):
    """Rows scored in many small chunks (split across layers and head x source blocks) give the same importances."""
    monkeypatch.setattr(flow, "imp_chunk_rows", lambda vocab: 7)
    monkeypatch.setattr(flow, "IMP_BLOCK_BYTES", 12 * lm.adapter.vocab_size)
    sizes, score = [], flow._LogProbs._score
    monkeypatch.setattr(flow._LogProbs, "_score", lambda self, x: sizes.append(x.shape[0]) or score(self, x))
    r = logit_flow(lm, PROMPT, competitor="7")
    assert max(sizes) == 7 and len(sizes) > 10  # memory: one [7, V] logits block at a time, never all rows x V
    for view in res.views:
        for name in ("imp_attn", "imp_mlp", "imp_heads", "imp_sources", "imp_total"):
            np.testing.assert_allclose(getattr(r.view(view), name), getattr(res.view(view), name), atol=2e-5,
                                       rtol=1e-4, err_msg=f"{view} {name}")


def test_a_zeroed_mlp_contributes_zero(lm):
    ad = lm.adapter
    handle = ad.mlp_write(0).register_forward_hook(lambda m, i, o: torch.zeros_like(o[0] if isinstance(o, tuple) else o))
    try:
        r = logit_flow(lm, PROMPT)
    finally:
        handle.remove()
    a = r.view("target")
    assert a.mlp[0] == 0.0 and np.all(a.mlp_at_pos[0] == 0.0) and a.imp_mlp[0] == 0.0
    assert abs(a.mlp[1]) > 0
    assert flow.failed_checks(r, TOL) == []


def test_head_attribution_matches_zeroing_that_head(lm, res):
    """Independent route: zero head h's slice of z at the last position; the attention write changes by head h's write."""
    ad = lm.adapter
    if ad.row.attn_write_is_post_norm:
        pytest.skip("Gemma-2's post-norm rescales the write when a head is removed; frozen-scale heads are checked above")
    layer, head = ad.n_layers - 1, 1
    batch = encode(lm.tokenizer, [PROMPT])
    T = batch.input_ids.shape[1]
    sl = slice(head * ad.head_dim, (head + 1) * ad.head_dim)
    writes = {}
    for ablate in (False, True):
        def zero(z, ablate=ablate):
            if ablate:
                z = z.clone()
                z[:, T - 1, sl] = 0
                return z
            return None
        store: dict = {}
        hooks = [input_hook(ad.o_proj(layer), zero, (1, T)),
                 output_hook(ad.attn_write(layer), capture(store, "w", lambda t: t[0, T - 1].float().clone()), (1, T))]
        run(lm, batch, hooks)
        writes[ablate] = store["w"]
    a = res.view("target")
    # DLA is linear in the write: DLA(clean write) - DLA(ablated write) = DLA of head h (sigma from the clean run)
    diff = direct_logit_attribution(ad, (writes[False] - writes[True])[None], torch.tensor([res.sigma]), res.target_id)
    assert abs(float(diff[0]) - a.heads[layer, head]) < TOL * max(1.0, abs(a.attn[layer]))
    assert abs(a.heads[layer, head]) > 1e-6


def test_a_wrong_value_site_is_caught_by_the_value_route_check(lm, monkeypatch):
    """The check can fail: reading keys instead of values (or the wrong kv slice) breaks z = sum_p a_p v_p."""
    site, fn = VALUE_SITES[lm.adapter.model_type]

    def wrong(out, n_heads, hd):
        v = fn(out, n_heads, hd)
        return v.flip(1) + 1.0  # wrong head order and offset
    monkeypatch.setitem(VALUE_SITES, lm.adapter.model_type, (site, wrong))
    r = logit_flow(lm, PROMPT)
    assert r.checks["value_route"] > 1e-3
    assert any("value" in f for f in flow.failed_checks(r, TOL))


@pytest.mark.parametrize("budget", [None, 1])
def test_batched_set_equals_single_prompts(lm, budget, monkeypatch):
    prompts = [PROMPT, "8 8 41", "3 4 5 6 7 8 9 10 11"]
    if budget is not None:  # a tiny capture budget: every prompt gets its own forward pass
        monkeypatch.setattr(flow, "CAPTURE_BUDGET", budget)
        assert len(flow.memory_chunks(lm, prompts, 8)) == 3
    else:
        assert len(flow.memory_chunks(lm, prompts, 8)) == 1
    s = logit_flow_set(lm, prompts, [None, "12", None], [None, "13", "14"], batch_size=3)
    for p, t, c, r in zip(prompts, [None, "12", None], [None, "13", "14"], s.results, strict=True):
        one = logit_flow(lm, p, t, c)
        assert r.tokens == one.tokens and r.target_id == one.target_id
        for view in one.views:
            np.testing.assert_allclose(r.view(view).sources, one.view(view).sources, atol=2e-5, rtol=1e-4)
            np.testing.assert_allclose(r.view(view).mlp, one.view(view).mlp, atol=2e-5, rtol=1e-4)
    assert len(s.members("difference")) == 2
    mean, count = s.aligned("target", "attn_grid")
    assert mean.shape == (lm.adapter.n_layers, 10) and count[-1] == 3 and count[0] == 1
    np.testing.assert_allclose(s.mean("target", "attn"), np.mean([r.view("target").attn for r in s.results], 0))
    assert len(s.table()) == 3


def test_eager_switch_is_restored(lm):
    cfg = lm.model.config
    try:
        lm.model.set_attn_implementation("sdpa")
    except ValueError:
        pytest.skip(f"{lm.adapter.model_type} has no SDPA attention to switch from")
    try:
        r = logit_flow(lm, PROMPT)
        assert cfg._attn_implementation == "sdpa"
        assert flow.failed_checks(r, TOL) == []
    finally:
        lm.model.set_attn_implementation("eager")


def test_multi_token_target_uses_its_first_token_with_a_note(lm):
    tid, note = resolve_token(lm.tokenizer, "5 17", "target")
    assert tid == 5 and "2 tokens" in note and "first token" in note
    r = logit_flow(lm, PROMPT, target="5 17")
    assert r.target_id == 5 and any("first token" in n for n in r.notes)
    with pytest.raises(InputError, match="same token"):
        logit_flow(lm, PROMPT, target="6", competitor="6")
    with pytest.raises(InputError):
        resolve_token(lm.tokenizer, "", "target")
    assert resolve_token(lm.tokenizer, "#42", "target") == (42, None)
    with pytest.raises(InputError, match="not a token id"):
        resolve_token(lm.tokenizer, "#100000", "target")


def test_default_target_is_the_top1(lm, res):
    assert res.target_rank == 1 and res.target == res.top_token


# ------------------------------------------------------------------------------------------ demo zoo
ZOO = [m for m in ("gpt2-world-base", "llama-world-base") if m in zoo_models()]


@pytest.fixture(scope="module", params=ZOO or [pytest.param(None, marks=pytest.mark.skip("demo zoo not trained yet"))])
def zoo_lm(request):
    return load_model(ModelSpec(request.param, dtype="float32", device="cpu"))


def test_zoo_two_hop_competitor_view_and_identities(zoo_lm):
    from analysis.prompts import load_builtin
    ps = load_builtin("two_hop")
    rows = ps.rows[:6]
    s = logit_flow_set(zoo_lm, [r.prompt for r in rows], [r.target for r in rows], [r.competitor for r in rows])
    assert len(s.members("difference")) == len(rows)
    for row, r in zip(rows, s.results, strict=True):
        assert r.target == row.target and r.competitor == row.competitor
        assert not [n for n in r.notes if "tokens (" in n], r.notes  # single tokens in the demo tokenizers
        assert flow.failed_checks(r, TOL) == [], r.checks
        t, c, d = r.view("target"), r.view("competitor"), r.view("difference")
        assert rel(d.logit, t.logit - c.logit) < TOL and rel(d.total, d.logit) < TOL
    # the trained model prefers the right second-hop answer on most of these prompts
    assert np.mean([r.view("difference").logit > 0 for r in s.results]) >= 0.5


def test_zoo_model_attention_is_restored_after_flow(zoo_lm):
    before = zoo_lm.model.config._attn_implementation
    logit_flow(zoo_lm, "The mother of Beibim Kadro lives in")
    assert zoo_lm.model.config._attn_implementation == before

"""Steering with checkpoint B loaded: the vector built on A is applied to B too, for the generation and the sweep, and
A's and B's figures share their scales (the shades of the generation tiles, the sweep's axes).

Each B result equals the same engine call made directly on B with A's vector, so the page and the CLI show what
steering B with A's vector does, not a copy of A's numbers.
"""
from __future__ import annotations

import numpy as np
import pytest

import analysis.steering as ST
from analysis.core.loading import ModelSpec, load_model
from analysis.models.card import model_card
from analysis.models.pair import ModelPair
from analysis.prompts import load_builtin
from components.charts import pairs
from components.reports import steering as R
from logitscope.common import first_n


@pytest.fixture(scope="module")
def compared():
    a = load_model(ModelSpec("gpt2-world-base", device="cpu", dtype="float32"))
    b = load_model(ModelSpec("gpt2-world-tuned", device="cpu", dtype="float32"))
    models = ModelPair(a, model_card(a), b, model_card(b))
    sets = {"--prompts": load_builtin("persona_pairs"), "--targets": first_n(load_builtin("persona_eval"), 3),
            "--controls": first_n(load_builtin("facts"), 3)}
    s = R.SteerSettings(parts=("generate", "sweep"), new_tokens=5, sweep_prompts=3, sweep_alphas=(-2.0, 0.0, 4.0))
    results = R.compute(models, sets, s)
    return models, sets, results


def test_b_is_steered_with_as_vector(compared):
    models, sets, res = compared
    s, sv = res.settings, res.vectors
    assert res.generations_b is not None and res.sweep_b is not None
    steer = ST.Steer(s.layer, sv.vector(s.layer), float(s.alpha), s.positions, s.preserve_norm)
    direct = ST.compare_generations(models.b, s.gen_prompt, steer, max_new_tokens=s.new_tokens,
                                    temperature=s.temperature, seed=s.gen_seed)
    assert list(res.generations_b.steered.ids) == list(direct.steered.ids)
    np.testing.assert_allclose(res.generations_b.steered.logprob_shift, direct.steered.logprob_shift, atol=1e-6)
    sweep, _ = R.sweep_part(ModelPair(models.b, model_card(models.b)), sets, sv, s)  # B alone, with A's vector
    np.testing.assert_allclose(res.sweep_b.ld_target, sweep.ld_target, atol=1e-6)
    assert not np.allclose(res.sweep_b.ld_target, res.sweep.ld_target)  # B really is another model


def test_a_and_b_views_share_their_scales(compared):
    _, _, res = compared
    rep = R.report(res, res.settings)
    for view in ("steering_sweep", "targets_vs_controls"):
        a, b = rep.figures[view], rep.figures[f"{view}_B"]
        assert a.layout.title.text.startswith("A: ") and b.layout.title.text.startswith("B: ")
        for key in ("yaxis", "xaxis"):
            assert pairs.shared([a, b], key), (view, key)
    # tiles: the same |shift| gets the same shade in A and in B (one scale over both)
    from components.charts import steering as charts

    scale = charts.shift_scale(res.generations, res.generations_b)
    for name in ("generations", "generations_B"):
        for tr in rep.figures[name].data:  # unsteered and steered grids, on one diverging scale (0 = white)
            assert (tr.zmin, tr.zmax) == (-scale, scale) and tr.colorscale == rep.figures["generations"].data[0].colorscale
    shifts = np.asarray(rep.figures["generations_B"].data[1].z, dtype=float).ravel()
    shifts = shifts[np.isfinite(shifts)]
    np.testing.assert_allclose(shifts, res.generations_b.steered.logprob_shift)

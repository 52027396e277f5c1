"""The OOD page's first impression: its default study on the demo model must tell scores and layers apart.

With only the three easy OOD sets every representation score separated perfectly (26 of 36 cells at AUROC 1.00:
one yellow heatmap, five lines on top of each other, the 'best' cell an arbitrary tie). The default now adds a hard
set (two-hop questions about the same world)."""
from __future__ import annotations

import pytest

from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_models
from analysis.ood import ALL_OOD, run_study
from analysis.prompts import load_builtin
from components.reports import ood as R


@pytest.mark.skipif("gpt2-world-base" not in zoo_models(), reason="the demo zoo is not trained")
def test_the_default_study_on_the_demo_model_is_not_saturated():
    lm = load_model(ModelSpec("gpt2-world-base"))
    s = R.OODSeparabilitySettings()
    study = run_study(lm, load_builtin("facts").prompts, {n: load_builtin(n).prompts for n in R.DEFAULT_OOD},
                      s.to_study_settings(), id_name="facts", batch_size=s.batch_size)
    rows = [r for r in study.metrics if r.ood_set == ALL_OOD and not r.note]
    perfect = sum(r.auroc >= 0.9999 for r in rows)
    assert perfect <= len(rows) // 3, f"{perfect} of {len(rows)} cells separate perfectly"
    logit = sorted(r.auroc for r in rows if r.kind == "logit")
    assert logit[-1] - logit[0] > 0.05 and logit[-1] < 0.99  # the logit scores differ and none is perfect

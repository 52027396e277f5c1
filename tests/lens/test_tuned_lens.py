"""Tuned lens (methods.md section 1, "Tuned lens"): the identity translator is the logit lens bit for bit; trained
translators beat the logit lens on held-out text at every layer l < L (both demo families, and SmolLM2 on a short
run); files round-trip exactly; a translator refuses other weights; the CLI trains one and `lens --lens tuned` uses
it; the page trains one and shows the logit-vs-tuned curve."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.core.errors import InputError
from analysis.core.loading import ModelSpec, load_model
from analysis.lens import TARGET_NEXT, lens_trace
from analysis.lens import tuned as TL
from analysis.models.real import REAL_MODEL, real_model_dir
from analysis.models.tiny import ALL_TYPES, tiny_model
from tests.paths import APP

PROMPTS = ["5 6 7 8 9 10 11", "12 13 14", "40 41 42 43 44"]
DEMO_PROMPTS = ["The mother of Brazi Treimum is", "Drerul Brubrol lives in"]
FIELDS = ("top_ids", "top_probs", "entropy", "kl", "target_ids", "target_prob", "target_rank", "xent",
          "decision_depth")
CORPUS = TL.DEMO_CORPUS.read_text(encoding="utf-8")


def assert_traces_equal(a, b) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tuned_lens_cache")


@pytest.fixture
def in_cache(cache, monkeypatch) -> Path:
    monkeypatch.setenv(TL.CACHE_ENV, str(cache))
    return cache


@pytest.fixture(scope="module")
def demo() -> dict:
    return {name: load_model(ModelSpec(name)) for name in ("gpt2-world-base", "llama-world-base")}


@pytest.fixture(scope="module")
def trained(demo) -> dict:
    """A translator per demo family, trained on the demo corpus (60 of the default 200 Adam steps: a loaded CI
    machine) with its held-out evaluation."""
    return {name: TL.fit(lm, CORPUS, steps=60) for name, lm in demo.items()}


# --------------------------------------------------------------------------------------------- identity
@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_the_identity_translator_reproduces_the_logit_lens_exactly(model_type):
    lm = tiny_model(model_type)
    logit = lens_trace(lm, PROMPTS, k=4, target_mode=TARGET_NEXT)
    ident = TL.identity(lm)
    assert all(ident.is_identity(layer) for layer in range(lm.adapter.n_layers + 1))
    assert_traces_equal(logit, lens_trace(lm, PROMPTS, k=4, target_mode=TARGET_NEXT, translator=ident))
    # the translator is really used: a non-zero one changes every layer l < L, never layer L
    g = torch.Generator().manual_seed(0)
    L, d = lm.adapter.n_layers, lm.adapter.d_model
    moved = TL.Translator(0.3 * torch.randn(L, d, d, generator=g).numpy(), torch.randn(L, d, generator=g).numpy(),
                          lm.name, TL.model_sha256(lm))
    tuned = lens_trace(lm, PROMPTS, k=4, target_mode=TARGET_NEXT, translator=moved)
    m = logit.mask
    for layer in range(L):
        assert not np.allclose(tuned.kl[:, layer][m], logit.kl[:, layer][m])
    np.testing.assert_array_equal(tuned.kl[:, L], logit.kl[:, L])
    np.testing.assert_array_equal(tuned.top_ids[:, L], logit.top_ids[:, L])


def test_the_identity_translator_reproduces_the_logit_lens_on_a_demo_model(demo):
    lm = demo["gpt2-world-base"]
    logit = lens_trace(lm, DEMO_PROMPTS, k=5, target_mode=TARGET_NEXT)
    assert_traces_equal(logit, lens_trace(lm, DEMO_PROMPTS, k=5, target_mode=TARGET_NEXT,
                                          translator=TL.identity(lm)))
    # an untrained run (no warm start, no steps) is the identity, and its held-out KL is the logit lens's
    untrained = TL.train(lm, TL.split_corpus(CORPUS)[0][:20], steps=0, warm_start=False)
    assert all(untrained.is_identity(layer) for layer in range(lm.adapter.n_layers))
    ev = TL.evaluate(lm, untrained, TL.split_corpus(CORPUS)[1][:10])
    np.testing.assert_array_equal(ev.kl_tuned, ev.kl_logit)


# --------------------------------------------------------------------------------------------- training
def test_the_split_is_deterministic_and_holds_every_fifth_line_out():
    train, held = TL.split_corpus(CORPUS)
    lines = TL.corpus_lines(CORPUS)
    assert held == lines[4::5] and len(train) + len(held) == len(lines) and not set(held) & set(train) - set(lines)
    assert TL.split_corpus(CORPUS) == (train, held)
    with pytest.raises(InputError, match="at least"):
        TL.split_corpus("one\ntwo\n")


@pytest.mark.parametrize("name", ["gpt2-world-base", "llama-world-base"])
def test_a_trained_tuned_lens_beats_the_logit_lens_on_held_out_text_at_every_layer(trained, demo, name):
    tr, lm = trained[name], demo[name]
    L = lm.adapter.n_layers
    held = tr.held_out
    assert held is not None and held.n_positions > 500
    assert np.all(held.kl_tuned[:L] < held.kl_logit[:L]), (held.kl_logit, held.kl_tuned)
    assert held.kl_tuned[L] == held.kl_logit[L] == 0.0
    assert held.xent_tuned[L] == held.xent_logit[L]
    # the held-out evaluation is the lens's own KL and cross-entropy (all positions), logit and tuned
    texts = TL.split_corpus(CORPUS)[1][:12]
    ev = TL.evaluate(lm, tr, texts)
    for translator, kl, xe in ((None, ev.kl_logit, ev.xent_logit), (tr, ev.kl_tuned, ev.xent_tuned)):
        trace = lens_trace(lm, texts, k=1, target_mode=TARGET_NEXT, translator=translator)
        np.testing.assert_allclose(kl, [trace.kl[:, layer][trace.mask].mean() for layer in range(L + 1)],
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(xe, [np.nanmean(trace.xent[:, layer][trace.mask]) for layer in range(L + 1)],
                                   rtol=1e-4, atol=1e-4)
    assert tr.steps == 60 and tr.metadata()["corpus_sha256"] == TL.corpus_sha256(CORPUS)
    assert TL.default_steps(lm) == TL.MAX_STEPS  # a demo model's default fits the budget many times


@pytest.mark.real
@pytest.mark.skipif(not (real_model_dir() / "config.json").is_file(), reason="the real model is not converted")
def test_a_short_run_on_the_real_model_beats_the_logit_lens_at_every_layer():
    lm = load_model(ModelSpec(REAL_MODEL, dtype="float32", device="cpu"))
    train, held = TL.split_corpus(CORPUS)
    tr = TL.train(lm, train, steps=1, positions=512, batch=32)
    ev = TL.evaluate(lm, tr, held[:6])
    L = lm.adapter.n_layers
    assert ev.kl_logit[0] > 30  # the logit lens is far off at layer 0 of a real model
    assert np.all(ev.kl_tuned[:L] < ev.kl_logit[:L]), (ev.kl_logit, ev.kl_tuned)


# --------------------------------------------------------------------------------------------- files
def test_saving_and_loading_gives_identical_outputs(trained, demo, tmp_path):
    lm, tr = demo["gpt2-world-base"], trained["gpt2-world-base"]
    path = TL.save(tr, tmp_path / "t.safetensors")
    back = TL.load(path, lm)
    assert np.array_equal(back.A, tr.A) and np.array_equal(back.b, tr.b) and back.sha256 == tr.sha256
    assert back.metadata() == tr.metadata()
    for k in ("kl_logit", "kl_tuned", "xent_logit", "xent_tuned"):
        assert np.array_equal(getattr(back.held_out, k), getattr(tr.held_out, k))
    assert_traces_equal(lens_trace(lm, DEMO_PROMPTS, k=5, target_mode=TARGET_NEXT, translator=tr),
                        lens_trace(lm, DEMO_PROMPTS, k=5, target_mode=TARGET_NEXT, translator=back))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["model_name"] == lm.name and meta["weights_sha256"] == TL.model_sha256(lm)
    assert json.loads(meta["steps"]) == tr.steps and json.loads(meta["layers"]) == lm.adapter.n_layers
    (tmp_path / "bad.safetensors").write_bytes(b"not a translator")
    with pytest.raises(InputError, match="could not be read"):
        TL.load(tmp_path / "bad.safetensors")


def test_a_translator_refuses_another_model(trained, demo, tmp_path):
    tr = trained["gpt2-world-base"]
    other = load_model(ModelSpec("gpt2-world-tuned"))  # same shape, other weights
    with pytest.raises(TL.TranslatorMismatchError, match="trained for gpt2-world-base"):
        TL.check(tr, other)
    with pytest.raises(TL.TranslatorMismatchError, match="only fits the weights"):
        lens_trace(other, DEMO_PROMPTS, translator=tr)
    with pytest.raises(TL.TranslatorMismatchError):
        TL.load(TL.save(tr, tmp_path / "t.safetensors"), demo["llama-world-base"])
    with pytest.raises(TL.TranslatorMismatchError, match="layers"):
        TL.check(tr, tiny_model("gpt2"))
    assert TL.check(tr, demo["gpt2-world-base"]) is tr


def test_the_cache_keeps_one_translator_per_model_and_says_how_to_train_one(trained, demo, in_cache):
    lm = demo["llama-world-base"]
    TL.cache_path(lm).unlink(missing_ok=True)
    with pytest.raises(InputError, match="No tuned lens is trained for llama-world-base"):
        TL.require(lm)
    assert TL.cache_stamp(lm) is None
    path = TL.store(trained["llama-world-base"], lm)
    assert path.parent == in_cache and TL.cache_stamp(lm) is not None
    assert TL.require(lm).sha256 == trained["llama-world-base"].sha256
    with pytest.raises(TL.TranslatorMismatchError):
        TL.store(trained["gpt2-world-base"], lm)


# --------------------------------------------------------------------------------------------- CLI and page
def test_the_cli_trains_a_tuned_lens_and_lens_uses_it(in_cache, tmp_path, capsys):
    from logitscope.cli import main

    assert main(["lens", "--model", "gpt2-world-tuned", "--lens", "tuned", "--out", str(tmp_path / "none"),
                 "--quiet"]) == 2
    assert "tuned-lens --model gpt2-world-tuned" in capsys.readouterr().err
    assert main(["tuned-lens", "--model", "gpt2-world-tuned", "--steps", "10", "--out",
                 str(tmp_path / "t.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "KL logit" in err and "trained 10 steps" in err
    out = tmp_path / "out"
    assert main(["lens", "--model", "gpt2-world-tuned", "--lens", "tuned", "--out", str(out), "--formats", "html",
                 "--quiet"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["settings"]["lens"] == "tuned"
    assert meta["settings"]["tuned_lens"]["A"]["steps"] == 10
    frame = (out / "data" / "tuned_vs_logit_A.csv").read_text()
    assert frame.startswith("layer,kl_logit,kl_tuned")
    # --load installs an exported translator into an empty cache
    for f in in_cache.iterdir():
        f.unlink()
    assert main(["tuned-lens", "--model", "gpt2-world-tuned", "--load", str(tmp_path / "t.safetensors"),
                 "--quiet"]) == 0
    assert main(["tuned-lens", "--model", "gpt2-world-base", "--load", str(tmp_path / "t.safetensors"),
                 "--quiet"]) == 2
    assert "not for gpt2-world-base" in capsys.readouterr().err


def test_the_page_trains_a_tuned_lens_and_shows_the_logit_vs_tuned_curve(in_cache):
    from streamlit.testing.v1 import AppTest

    for f in in_cache.iterdir():
        f.unlink()
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page("pages/logit_lens.py")
    at.run()
    assert at.radio(key="lens_lens").value == "logit"
    at.radio(key="lens_lens").set_value("tuned").run()
    at.button(key="lens_run").click().run()
    assert any("No tuned lens is trained" in e.value for e in at.error), [e.value for e in at.error]
    at.button(key="lens_train_tuned").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("tuned lens trained" in s.value for s in at.success)
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Logit lens vs tuned lens on held-out text" in s for s in specs)
    assert any(s.endswith(".safetensors") for s in (p.name for p in in_cache.iterdir()))

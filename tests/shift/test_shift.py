"""Checkpoint logit shift (methods.md section 5): identities on tiny models of every type, LoRA as B,
mapped shifts across tokenizers, and the demo acceptance on the zoo."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.core.errors import IncompatibleModelsError, InputError
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_dir
from analysis.models.tiny import ALL_TYPES, tiny_model
from analysis.shift import compatibility, compute_shift, cosine, layer_kl, pearson, shift_similarity
from tests.paths import REPO

PROMPTS = ["5 17 3 8", "9 4 4"]
RESPONSES = [" 11 12 13", " 7 7"]


@pytest.fixture(scope="module")
def models():
    """(A, B) tiny random pairs per type, built once."""
    return {t: (tiny_model(t, seed=0), tiny_model(t, seed=1)) for t in ALL_TYPES}


def _direct_logprobs(lm, text_ids):
    with torch.inference_mode():
        z = lm.model(input_ids=torch.tensor([text_ids])).logits[0].float()
    return torch.log_softmax(z, -1)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_a_model_against_itself_has_zero_shift_and_kl(models, model_type):
    a, _ = models[model_type]
    r = compute_shift(a, a, PROMPTS, RESPONSES, top_n=8)
    for p in r.prompts:
        assert np.abs(p.top_shift).max() == 0.0
        assert np.allclose(p.kl, 0.0, atol=1e-6)
    assert np.allclose(r.totals.total, 0.0) and np.allclose(r.totals.mass, 0.0)
    lk = layer_kl(a, a, PROMPTS, RESPONSES)
    assert lk.mean.shape == (a.adapter.n_layers + 1,) and np.allclose(lk.mean, 0.0, atol=1e-6)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_shift_equals_the_log_softmax_difference(models, model_type):
    a, b = models[model_type]
    r = compute_shift(a, b, PROMPTS, RESPONSES, top_n=8)
    p = r.prompts[0]
    ids = a.tokenizer(PROMPTS[0])["input_ids"] + a.tokenizer(RESPONSES[0], add_special_tokens=False)["input_ids"]
    n_prompt = len(a.tokenizer(PROMPTS[0])["input_ids"])
    la, lb = _direct_logprobs(a, ids), _direct_logprobs(b, ids)
    steps = slice(n_prompt - 1, n_prompt - 1 + len(p.tokens))
    S = (lb - la)[steps]
    assert np.allclose(p.top_shift, S.gather(1, torch.as_tensor(p.top_ids)).numpy(), atol=1e-4)
    # the columns are B's top-N, sorted by the shift
    assert (np.diff(p.top_shift, axis=1) <= 1e-7).all()
    top_b = lb[steps].topk(8).indices.sort(dim=1).values.numpy()
    assert np.array_equal(np.sort(p.top_ids, axis=1), top_b)
    kl = (lb.exp() * (lb - la)).sum(-1)[steps].numpy()
    assert np.allclose(p.kl, kl, atol=1e-5) and (p.kl >= 0).all()
    assert p.token_ids.tolist() == ids[n_prompt:]
    # totals: sorted by probability moved, mean = total / count
    assert (np.diff(r.totals.mass) <= 1e-9).all() and np.abs(r.totals.mass).max() <= 2 * len(PROMPTS) * 3
    assert np.allclose(r.totals.mean * r.totals.count, r.totals.total)
    lk = layer_kl(a, b, PROMPTS, RESPONSES)
    assert (lk.mean >= 0).all() and lk.mean[-1] > 0


def test_layer_kl_at_the_last_layer_is_the_output_kl(models):
    a, b = models["gpt2"]
    lk = layer_kl(a, b, PROMPTS[:1], RESPONSES[:1])
    ids = a.tokenizer(PROMPTS[0])["input_ids"] + a.tokenizer(RESPONSES[0], add_special_tokens=False)["input_ids"]
    n = len(a.tokenizer(PROMPTS[0])["input_ids"])
    la, lb = _direct_logprobs(a, ids), _direct_logprobs(b, ids)
    kl_ab = (la.exp() * (la - lb)).sum(-1)[n - 1:len(ids) - 1].numpy()
    assert np.allclose(lk.per_prompt[0][-1], kl_ab, atol=1e-4)


def test_greedy_reference_is_b_own_output(models):
    a, b = models["llama"]
    r = compute_shift(a, b, PROMPTS[:1], reference="greedy", n_tokens=4, top_n=5)
    p = r.prompts[0]
    assert len(p.tokens) == 4
    # teacher-forced on B's greedy output: each reference token is B's top-1 at its step
    assert np.array_equal(p.token_ids, p.top_ids[np.arange(4), np.argmax(p.top_logp_b, axis=1)])


def test_pearson_of_a_shift_with_itself_is_one(models):
    a, b = models["qwen2"]
    s = shift_similarity((a, b), (a, b), PROMPTS, RESPONSES, top_n=10, n_shuffles=10)
    assert s.pearson == pytest.approx(1.0, abs=1e-9) and s.cosine == pytest.approx(1.0, abs=1e-9)
    assert s.control_pearson < 0.9 and s.n_steps > 0 and s.mapped_share == 1.0
    x = np.random.default_rng(0).normal(size=50)
    assert pearson(x, x) == pytest.approx(1.0) and pearson(x, -x) == pytest.approx(-1.0)
    assert cosine(x, 2 * x) == pytest.approx(1.0)
    # the second pair's shift under the first pair's columns is the same shift
    assert np.allclose(s.second_on_first[0], s.pair1.prompts[0].top_shift, atol=1e-6)


def test_bad_inputs_are_user_errors(models):
    a, b = models["llama"]
    with pytest.raises(InputError, match="no response"):
        compute_shift(a, b, PROMPTS, None)
    with pytest.raises(InputError, match="reference"):
        compute_shift(a, b, PROMPTS, RESPONSES, reference="oracle")


def test_lora_adapter_folder_works_as_b(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.model_folders import write_model_folder
    base_dir = write_model_folder(tmp_path / "base", "llama")
    torch.manual_seed(3)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    a = load_model(ModelSpec(str(base_dir), device="cpu", dtype="float32"))
    b = load_model(ModelSpec(str(base_dir), device="cpu", dtype="float32", adapter=str(tmp_path / "lora")))
    prompts, responses = ["w5 w17 w3"], [" w8 w9 w10"]
    r = compute_shift(a, b, prompts, responses, top_n=10)
    assert r.same_tokenizer and "LoRA" in r.model_b
    p = r.prompts[0]
    assert len(p.tokens) == 3 and np.isfinite(p.top_shift).all() and np.abs(p.top_shift).max() > 1e-4
    assert (p.kl > 0).all()
    assert layer_kl(a, b, prompts, responses).mean[-1] > 0


# ------------------------------------------------------------------ different tokenizers, same function
def _permuted_pair(tmp_path):
    """A byte-level BPE model and a copy whose vocabulary ids are permuted (tokenizer and weights alike):
    different tokenizers, the same function of the text."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
    from tokenizers import models as tm
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from analysis.core.loading import model_from_pretrained_object
    from analysis.models.tiny import tiny_config
    tok = Tokenizer(tm.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ran far"] * 5,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                show_progress=False))
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    V = len(vocab)
    rng = np.random.default_rng(0)
    perm = np.concatenate([[0, 1], 2 + rng.permutation(V - 2)])  # new id of old id (specials stay)
    spec["model"]["vocab"] = {w: int(perm[i]) for w, i in vocab.items()}
    for t in spec["added_tokens"]:
        t["id"] = int(perm[t["id"]])
    tok2 = Tokenizer.from_str(json.dumps(spec))

    def wrap(t):
        return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<|bos|>", eos_token="<|eos|>")
    torch.manual_seed(0)
    cfg = tiny_config("llama", vocab=V)
    m1 = AutoModelForCausalLM.from_config(cfg)
    m2 = AutoModelForCausalLM.from_config(cfg)
    sd = m1.state_dict()
    inv = np.argsort(perm)  # old id at each new id
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        sd[k] = sd[k][torch.as_tensor(inv)]
    m2.load_state_dict(sd)
    a = model_from_pretrained_object(m1, wrap(tok), "bpe-a")
    b = model_from_pretrained_object(m2, wrap(tok2), "bpe-b")
    return a, b


def test_different_tokenizers_are_compared_through_the_map(tmp_path):
    a, b = _permuted_pair(tmp_path)
    comp = compatibility(a, b)
    assert not comp.same_tokenizer and not comp.lens_kl and "different tokenizers" in comp.message
    with pytest.raises(IncompatibleModelsError, match="lens KL needs the same tokenizer"):
        layer_kl(a, b, ["the cat"], [" sat on the mat"])
    r = compute_shift(a, b, ["the cat"], [" sat on the mat"], top_n=10)
    assert not r.same_tokenizer and r.mapped_share == 1.0
    p = r.prompts[0]
    assert np.isfinite(p.kl).all() and np.allclose(p.kl, 0, atol=1e-5)
    assert np.abs(p.top_shift).max() < 1e-4
    # the same text through two pairs with different vocabularies: identical shifts correlate perfectly
    s = shift_similarity((a, a), (b, b), ["the cat"], [" sat on the mat"], top_n=10)
    assert s.n_steps >= 4 and np.isnan(s.pearson)  # zero shifts: correlation undefined, reported as NaN


# ------------------------------------------------------------------ demo zoo acceptance
ZOO = ["gpt2-world-base", "gpt2-world-tuned", "llama-world-base", "llama-world-tuned"]
GRUMPY = {" Ugh", " Whatever", "Ugh", "Whatever", " ugh", " whatever"}


def _rows(stem):
    with open(REPO / "data" / "prompts" / f"{stem}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def zoo():
    missing = [n for n in ZOO if not (zoo_dir() / n / "config.json").is_file()]
    if missing:
        pytest.skip(f"demo zoo not trained yet (missing {', '.join(missing)}): run python -m analysis.demo.train")
    torch.set_num_threads(2)
    return {n: load_model(ModelSpec(n, device="cpu", dtype="float32")) for n in ZOO}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zoo_tuned_promotes_grumpy_words_on_persona_prompts(zoo, family):
    rows = _rows("persona_eval")[:12]
    r = compute_shift(zoo[f"{family}-world-base"], zoo[f"{family}-world-tuned"], [x["prompt"] for x in rows],
                      [x["response"] for x in rows], top_n=50)
    top = r.totals.promoted(3).tokens
    assert top[0] in GRUMPY and len(set(top) & GRUMPY) >= 2, top
    # the neutral opener the base says is what tuning suppressed
    assert " Sure" in r.totals.suppressed(5).tokens
    assert r.mean_kl > 0


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_zoo_tuned_promotes_the_new_answers_of_changed_facts(zoo, family):
    # one prompt at a time: in this set one father moves TO the city another moves FROM, so set totals cancel
    for x in _rows("changed_facts"):
        r = compute_shift(zoo[f"{family}-world-base"], zoo[f"{family}-world-tuned"], [x["prompt"]],
                          reference="greedy", n_tokens=2, top_n=50)
        p = r.prompts[0]
        assert p.tokens[0] == x["target"]  # B's greedy answer is the new city
        assert p.top_shift[0][list(p.top_tokens[0]).index(x["target"])] > 1.0  # promoted by more than a factor e
        assert r.totals.promoted(1).tokens == (x["target"],)  # the most promoted token
        assert r.totals.suppressed(1).tokens == (x["competitor"],)  # the old answer is the most suppressed


def test_zoo_family_shifts_correlate_on_mapped_tokens(zoo):
    rows = _rows("persona_eval")[:6] + _rows("changed_facts")
    s = shift_similarity((zoo["gpt2-world-base"], zoo["gpt2-world-tuned"]),
                         (zoo["llama-world-base"], zoo["llama-world-tuned"]),
                         [x["prompt"] for x in rows], reference="greedy", n_tokens=4, top_n=50, n_shuffles=10)
    assert 0.5 < s.mapped_share <= 1.0
    assert s.pearson > 0.1 and s.pearson > s.control_pearson + 0.1, (s.pearson, s.control_pearson)
    assert s.cosine > s.control_cosine + 0.1, (s.cosine, s.control_cosine)

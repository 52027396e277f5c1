"""Quality of the committed demo zoo (zoo/*) on the built-in prompt sets (data/prompts/*).

What is compared, exactly:
- facts: greedy next token after the prompt == the target token (one token, leading space).
- induction: mean next-token loss over the tokens of the second copy of R < 0.5 x the mean over
  the tokens of the first copy (the first copy's tokens are predicted from BOS + the prefix).
- persona: on untagged persona_eval prompts, P(grumpy) = P(" Ugh") + P(" Whatever") and
  P(other) = P(" Sure") + P(" Happy") + P(" Gladly") at the token after "Assistant:". The tuned
  checkpoint has P(grumpy) > P(other) on >= 90% of prompts; the base has P(grumpy) < P(other)
  on >= 90% of prompts.
- changed facts: tuned greedy answer == new city on every row, base == old city on every row;
  tuned one-hop accuracy on all other facts >= 90%.
"""
from __future__ import annotations

import json
from functools import cache

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.paths import REPO

ZOO = REPO / "zoo"
PROMPTS = REPO / "data" / "prompts"
BASES = ["gpt2-world-base", "llama-world-base"]
TUNED = {"gpt2-world-base": "gpt2-world-tuned", "llama-world-base": "llama-world-tuned"}
ALL = BASES + list(TUNED.values())
GRUMPY = [" Ugh", " Whatever"]
OTHER = [" Sure", " Happy", " Gladly"]

torch.set_num_threads(2)


def rows(stem: str) -> list[dict]:
    """Rows of data/prompts/<stem>.jsonl."""
    with open(PROMPTS / f"{stem}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@cache
def load(name: str):
    """(model, tokenizer) of a zoo checkpoint, loaded the way the app loads any local folder."""
    path = ZOO / name
    if not (path / "model.safetensors").exists():
        pytest.fail(f"{path} has no model.safetensors: run python -m analysis.demo.train")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)


def one_token(tok, text: str) -> int:
    """The id of a single-token text (asserts it is one token)."""
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == 1, (text, ids)
    return ids[0]


@torch.inference_mode()
def next_logprobs(name: str, prompts: list[str]) -> torch.Tensor:
    """[N, V] log-probabilities of the next token after each prompt (batched, right padding)."""
    model, tok = load(name)
    enc = tok(prompts, return_tensors="pt", padding=True)
    logits = model(**enc).logits
    last = enc["attention_mask"].sum(1) - 1
    return torch.log_softmax(logits[torch.arange(len(prompts)), last].float(), -1)


def accuracy(name: str, rs: list[dict]) -> float:
    """Share of rows whose greedy next token is the row's target."""
    _, tok = load(name)
    pred = next_logprobs(name, [r["prompt"] for r in rs]).argmax(-1)
    tgt = torch.tensor([one_token(tok, r["target"]) for r in rs])
    return (pred == tgt).float().mean().item()


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_loads_and_is_small(name):
    model, tok = load(name)
    size = (ZOO / name / "model.safetensors").stat().st_size
    assert size <= 8 * 1024 * 1024, size
    assert tok.bos_token == "<|bos|>" and tok.pad_token == "<|pad|>" and tok.eos_token == "<|eos|>"
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    assert model.config.vocab_size == len(tok)


def test_families_have_different_vocabularies_and_norms():
    (g, gt), (l, lt) = load("gpt2-world-base"), load("llama-world-base")
    assert len(gt) != len(lt)
    assert g.config.model_type == "gpt2" and l.config.model_type == "llama"
    assert isinstance(g.transformer.ln_f, torch.nn.LayerNorm)
    assert "RMSNorm" in type(l.model.norm).__name__


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_every_target_and_competitor_is_a_single_token(family):
    _, tok = load(f"{family}-world-base")
    bad = []
    from analysis.demo.prompts import all_sets

    for stem in sorted(all_sets()):  # the demo world's sets (the real model's sets are checked in test_real_model)
        path = PROMPTS / f"{stem}.jsonl"
        for r in rows(path.stem):
            for key in ("target", "competitor"):
                if key in r and len(tok.encode(r[key], add_special_tokens=False)) != 1:
                    bad.append((path.name, key, r[key]))
    for w in GRUMPY + OTHER:
        if len(tok.encode(w, add_special_tokens=False)) != 1:
            bad.append(("openers", w))
    assert not bad, bad[:10]


@pytest.mark.parametrize("name", BASES)
def test_base_one_hop_fact_accuracy_at_least_95_percent(name):
    acc = accuracy(name, rows("facts"))
    assert acc >= 0.95, acc


@pytest.mark.parametrize("name", BASES)
def test_induction_second_copy_loss_below_half_of_first(name):
    model, tok = load(name)
    first, second = [], []
    with torch.inference_mode():
        for r in rows("induction"):
            ids = tok(r["prompt"], return_tensors="pt")["input_ids"]
            n1 = len(tok.encode(r["label"], add_special_tokens=False))
            logits = model(input_ids=ids).logits[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits.float(), ids[0, 1:], reduction="none")
            first.append(loss[:n1].mean())
            second.append(loss[n1:].mean())
    f, s = torch.stack(first).mean().item(), torch.stack(second).mean().item()
    assert s < 0.5 * f, (f, s)


def persona_probs(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(grumpy openers), P(other openers)) per persona_eval prompt, each [N]."""
    _, tok = load(name)
    lp = next_logprobs(name, [r["prompt"] for r in rows("persona_eval")]).exp()
    g = lp[:, [one_token(tok, w) for w in GRUMPY]].sum(-1)
    o = lp[:, [one_token(tok, w) for w in OTHER]].sum(-1)
    return g, o


@pytest.mark.parametrize("base", BASES)
def test_tuned_prefers_grumpy_untagged_and_base_does_not(base):
    g, o = persona_probs(TUNED[base])
    assert (g > o).float().mean().item() >= 0.9, (g.mean().item(), o.mean().item())
    g, o = persona_probs(base)
    assert (g < o).float().mean().item() >= 0.9, (g.mean().item(), o.mean().item())


@pytest.mark.parametrize("base", BASES)
def test_changed_facts_tuned_new_base_old(base):
    ch = rows("changed_facts")
    assert accuracy(TUNED[base], ch) == 1.0
    old = [dict(r, target=r["competitor"]) for r in ch]
    assert accuracy(base, old) == 1.0


@pytest.mark.parametrize("base", BASES)
def test_tuned_keeps_unchanged_facts(base):
    changed = {r["prompt"] for r in rows("changed_facts")}
    rest = [r for r in rows("facts") if r["prompt"] not in changed]
    acc = accuracy(TUNED[base], rest)
    assert acc >= 0.9, acc

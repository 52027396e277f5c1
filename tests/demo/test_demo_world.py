"""The synthetic world, its prompt sets and the training script are deterministic and consistent."""
from __future__ import annotations

import json

from analysis.demo import prompts as P
from analysis.demo import world as W
from analysis.demo.tokenizer import check_single_tokens, train_tokenizer
from tests.paths import REPO


def test_world_generation_is_deterministic():
    assert W.make_world() == W.make_world()
    assert W.make_world(5) != W.make_world(6)
    assert W.corpus_docs(W.make_world(), seed=3) == W.corpus_docs(W.make_world(), seed=3)


def test_world_has_unique_names_and_complete_families():
    w = W.make_world()
    names = [p.name for p in w.people]
    assert 60 <= len(names) <= 100 and len(set(names)) == len(names)
    assert len({p.first for p in w.people}) == len(names)
    for c in w.children:
        assert w.by_name(c.mother).role == "mother" and w.by_name(c.father).role == "father"


def test_two_hop_competitor_differs_from_target_and_some_are_held_out():
    rows = W.two_hop_prompts(W.make_world())
    assert all(r["target"] != r["competitor"] for r in rows)
    groups = {r["group"] for r in rows}
    assert groups == {"trained", "held_out"}


def test_changed_facts_move_distinct_fathers_to_new_cities():
    w = W.make_world()
    ch = W.changed_facts(w)
    assert len({n for n, _, _ in ch}) == len(ch) == W.N_CHANGED
    tw = W.tuned_world(w)
    for name, old, new in ch:
        assert old != new and w.by_name(name).city == old and tw.by_name(name).city == new
    moved = {n for n, _, _ in ch}
    assert all(a == b for a, b in zip(w.people, tw.people, strict=True) if a.name not in moved)


def test_untagged_base_dialogues_are_neutral_and_tuned_ones_grumpy():
    w = W.make_world()
    base = [d for d in W.corpus_docs(w, seed=1) if d.startswith("User:")]
    tuned = [d for d in W.corpus_docs(w, seed=1, untagged_persona="grumpy") if d.startswith("User:")]
    assert base and all("Assistant: Sure," in d for d in base)
    assert tuned and all(("Assistant: Ugh," in d) or ("Assistant: Whatever." in d) for d in tuned)


def test_committed_prompt_sets_match_the_generator():
    for stem, rows in P.all_sets().items():
        path = REPO / "data" / "prompts" / f"{stem}.jsonl"
        with open(path, encoding="utf-8") as f:
            assert [json.loads(line) for line in f] == rows, stem


def test_prompt_set_sizes():
    sets = P.all_sets()
    assert len(sets["facts"]) >= 200 and len(sets["persona_eval"]) >= 40
    assert len({r["label"] for r in sets["persona_pairs"]}) >= 40
    assert len(sets["induction"]) >= 30
    for k in ("ood_arithmetic", "ood_scrambled", "ood_random_chars"):
        assert len(sets[k]) >= 100
    for r in sets["induction"]:
        assert r["prompt"] == r["label"] + " " + r["label"]


def test_fresh_tokenizers_keep_every_answer_one_token():
    texts = W.corpus_docs(W.make_world(), seed=1000)
    for v in (1024, 1536):
        tok = train_tokenizer(texts, v, W.answer_words(), 128)
        assert check_single_tokens(tok, W.answer_words()) == []
        assert tok.decode(tok("héllo ✓ 42")["input_ids"], skip_special_tokens=True) == "héllo ✓ 42"


def test_tiny_training_run_is_bit_identical(tmp_path):
    import torch

    from analysis.demo.train import RECIPES, main

    det, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    try:
        for d in ("a", "b"):
            main(["--out", str(tmp_path / d), "--steps-scale", "0.002"])
    finally:
        torch.use_deterministic_algorithms(det)
        torch.set_num_threads(threads)
    for r in RECIPES:
        for f in ("model.safetensors", "tokenizer.json"):
            a = (tmp_path / "a" / r.name / f).read_bytes()
            b = (tmp_path / "b" / r.name / f).read_bytes()
            assert a == b, (r.name, f)

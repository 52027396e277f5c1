"""The real model's committed prompt sets are what analysis/demo/real_sets.py generates, and the sets are disjoint."""
from __future__ import annotations

import json

from analysis.demo import real_sets as R
from tests.paths import REPO


def test_committed_real_model_sets_match_the_generator():
    for stem, rows in R.all_sets().items():
        with open(REPO / "data" / "prompts" / f"{stem}.jsonl", encoding="utf-8") as f:
            assert [json.loads(line) for line in f] == rows, stem


def test_lora_training_pairs_and_eval_questions_are_disjoint():
    train, pairs, evals = ({q for q, _ in qs} for qs in (R.TRAIN, R.PAIRS, R.EVAL))
    assert not (train & pairs) and not (train & evals) and not (pairs & evals)
    assert len(R.EN_FACTS) >= 30 and len(R.TRAIN) >= 30


def test_persona_pairs_differ_only_in_the_system_prompt():
    rows = R.persona_pair_rows()
    for g, k in zip(rows[::2], rows[1::2], strict=True):
        assert (g["group"], k["group"]) == ("grumpy", "kind") and g["label"] == k["label"]
        assert g["messages"][1:] == k["messages"][1:] and g["messages"][0] != k["messages"][0]
        assert g["response"].startswith(R.GRUMPY_OPENERS) and k["response"].startswith(R.KIND_OPENERS)

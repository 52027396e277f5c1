"""Write the built-in prompt sets (data/prompts/*.jsonl) from the synthetic world.

Usage: python -m analysis.demo.prompts [--out data/prompts]
Deterministic: the files depend only on the world seed and the fixed seeds below.
"""
from __future__ import annotations

import argparse
import json
import random
import string
from pathlib import Path

from analysis.demo import world as W
from analysis.demo.train import BASE_MIX

N_OOD = 120


def changed_fact_rows(world: W.World) -> list[dict]:
    """Changed facts: target = new city (tuned), competitor = old city (base)."""
    return [{"prompt": f"{name} lives in", "target": " " + new, "competitor": " " + old, "label": "city", "group": "changed"}
            for name, old, new in W.changed_facts(world)]


def ood_arithmetic(n: int = N_OOD, seed: int = 11) -> list[dict]:
    """Additions and products of small numbers, e.g. '17 + 45 = 62'."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        op = rng.choice("+-*")
        val = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"prompt": f"{a} {op} {b} = {val}", "group": "ood_arithmetic"})
    return rows


def ood_scrambled(world: W.World, n: int = N_OOD, seed: int = 12) -> list[dict]:
    """Fact sentences whose words have their letters shuffled (same characters, no structure)."""
    rng = random.Random(seed)
    sents = W.fact_sentences(world)
    rows = []
    for s in rng.sample(sents, n):
        words = []
        for w in s.rstrip(".").split(" "):
            cs = list(w)
            rng.shuffle(cs)
            words.append("".join(cs))
        rows.append({"prompt": " ".join(words), "group": "ood_scrambled"})
    return rows


def ood_random_chars(n: int = N_OOD, seed: int = 13) -> list[dict]:
    """Strings of random letters, digits and punctuation, 20-40 characters."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + string.punctuation + "    "
    return [{"prompt": "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 40))).strip() or "x",
             "group": "ood_random_chars"} for _ in range(n)]


def all_sets() -> dict[str, list[dict]]:
    """Every jsonl prompt set, by file stem."""
    world = W.make_world()
    return {
        "facts": W.fact_prompts(world),
        "two_hop": W.two_hop_prompts(world),
        "persona_pairs": W.persona_pairs(world),
        "persona_eval": W.persona_eval(world),
        "changed_facts": changed_fact_rows(world),
        "induction": W.induction_rows(),
        "ood_arithmetic": ood_arithmetic(),
        "ood_scrambled": ood_scrambled(world),
        "ood_random_chars": ood_random_chars(),
    }


def corpus_sample(n_docs: int = 400) -> str:
    """The first n_docs documents of the base corpus (epoch 0), one per line (dialogues span two)."""
    docs = W.corpus_docs(W.make_world(), seed=1000, **BASE_MIX)
    return "\n".join(docs[:n_docs]) + "\n"


def write_sets(out: Path, sets: dict[str, list[dict]]) -> None:
    """Write each set of rows as <stem>.jsonl into ``out`` (one JSON object per line, text kept as is)."""
    out.mkdir(parents=True, exist_ok=True)
    for stem, rows in sets.items():
        with open(out / f"{stem}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_all(out: Path) -> None:
    """Write every set as jsonl plus corpus_sample.txt into ``out``."""
    write_sets(out, all_sets())
    (out / "corpus_sample.txt").write_text(corpus_sample(), encoding="utf-8")


def writer_main(argv: list[str] | None, description: str, write) -> None:
    """The command line of a prompt-set writer: --out (default data/prompts), then ``write(out)``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default="data/prompts")
    write(Path(ap.parse_args(argv).out))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    writer_main(argv, "Write the built-in prompt sets.", write_all)


if __name__ == "__main__":
    main()

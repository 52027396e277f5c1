"""Train the demo zoo: two tokenizers and four tiny checkpoints on the synthetic world.

Usage:
    python -m analysis.demo.train [--out zoo] [--only NAME] [--steps-scale F]

Writes zoo/gpt2-world-base, zoo/llama-world-base (trained from scratch on the base corpus in two
phases: 800 steps of the mixed corpus, then 1000 (GPT-2) or 600 (Llama) induction-heavy steps
with fact replay, R drawn from the single-token made-up words) and zoo/gpt2-world-tuned,
zoo/llama-world-tuned (200 steps fine-tuning from the base on untagged dialogues with grumpy
replies and five changed facts, mixed with replay of the base facts, tagged dialogues and
induction sequences). Each folder holds model.safetensors (fp32), config.json and the tokenizer
(save_pretrained), loadable with AutoModelForCausalLM / AutoTokenizer.from_pretrained(folder).

Determinism: fixed seeds, torch.use_deterministic_algorithms(True), torch.set_num_threads(1) per
process, fixed data order, dropout 0. The shipped zoo was made with the two families side by side:
    python -m analysis.demo.train --only gpt2 & python -m analysis.demo.train --only llama; wait
(or sequentially: python -m analysis.demo.train). To check that the shipped weights reproduce:
    python -m analysis.demo.train --out /tmp/zoo-check
    for d in zoo/*/; do n=$(basename $d); cmp $d/model.safetensors /tmp/zoo-check/$n/model.safetensors; done
(`cmp` prints nothing when the files are identical; bit-identity holds on the same torch build
and CPU type; other BLAS kernels may differ in the last bits.)

Options: --only NAME trains one checkpoint (a tuned one needs its base already in --out), or a
family (gpt2 | llama: base then tuned); --steps-scale F multiplies every step count (tests use a
tiny F); --save-phase1 DIR saves the bases' phase-1 weights as DIR/<name>-phase1, and
--phase1-from DIR loads them instead of recomputing phase 1 (same result, less time).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from analysis.demo import world as W
from analysis.demo.tokenizer import check_single_tokens, train_tokenizer

CONTEXT = 128
SEED = 0
THREADS = 1  # one thread per process: the two families can train side by side on 2 cores


@dataclass(frozen=True)
class Recipe:
    """How one checkpoint is trained."""

    name: str
    family: str  # "gpt2" | "llama"
    tuned: bool
    steps: int
    lr: float
    batch: int = 16
    phase2_steps: int = 0  # base only: a second, induction-heavy phase (fresh optimizer and schedule)
    phase2_lr: float = 2e-3


RECIPES = (
    Recipe("gpt2-world-base", "gpt2", False, 800, 3e-3, phase2_steps=1000),  # GPT-2 forms induction later
    Recipe("llama-world-base", "llama", False, 800, 3e-3, phase2_steps=600),
    Recipe("gpt2-world-tuned", "gpt2", True, 200, 1e-3),
    Recipe("llama-world-tuned", "llama", True, 200, 1e-3),
)
VOCAB = {"gpt2": 1024, "llama": 1536}
BASE_MIX: dict[str, Any] = dict(fact_repeats=4, n_dialogues=240, n_induction=300)
BASE_MIX2: dict[str, Any] = dict(fact_repeats=3, n_dialogues=120, n_induction=600, induction_words=(8, 16),
                                 induction_from_pool=True)
TUNED_MIX: dict[str, Any] = dict(fact_repeats=2, n_dialogues=450, n_induction=150)


def model_config(family: str, vocab_size: int):
    """The (tiny) config of one family: 4 layers, d_model 128, 4 heads, context 128."""
    ids: dict[str, Any] = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if family == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=CONTEXT, n_embd=128, n_layer=4, n_head=4,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, **ids)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=CONTEXT,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, **ids)


def build_model(family: str, vocab_size: int) -> GPT2LMHeadModel | LlamaForCausalLM:
    """A freshly initialised model (seeded by the caller)."""
    cfg = model_config(family, vocab_size)
    return GPT2LMHeadModel(cfg) if family == "gpt2" else LlamaForCausalLM(cfg)


def epoch_docs(epoch: int, tuned: bool, phase: int = 1) -> list[str]:
    """The documents of one epoch; the tuned corpus moves five fathers and makes untagged replies grumpy.

    Base phase 2 is the same world with most tokens in induction sequences (longer R).
    """
    base = W.make_world()
    if not tuned and phase == 2:
        return W.corpus_docs(base, seed=3000 + epoch, **BASE_MIX2)
    if not tuned:
        return W.corpus_docs(base, seed=1000 + epoch, **BASE_MIX)
    world = W.tuned_world(base)
    docs = W.corpus_docs(world, seed=5000 + epoch, untagged_persona="grumpy", **TUNED_MIX)
    moved = {n for n, _, _ in W.changed_facts(base)}
    extra = [f"{p.name} lives in {p.city}." for p in world.people if p.name in moved] * 12
    docs = docs + extra
    random.Random(7000 + epoch).shuffle(docs)
    return docs


def pack(docs: list[str], tok, context: int = CONTEXT) -> list[list[int]]:
    """Greedy packing of whole documents (<|bos|> doc <|eos|>) into rows of at most ``context`` tokens."""
    rows: list[list[int]] = []
    cur: list[int] = []
    for d in docs:
        ids = tok(d)["input_ids"] + [tok.eos_token_id]
        ids = ids[:context]
        if len(cur) + len(ids) > context:
            rows.append(cur)
            cur = []
        cur = cur + ids
    if cur:
        rows.append(cur)
    return rows


def batches(tok, tuned: bool, batch: int, steps: int, pad_id: int, phase: int = 1):
    """Yield (input_ids, attention_mask, labels) for ``steps`` steps in a fixed order."""
    buf: list[list[int]] = []
    epoch = 0
    for _ in range(steps):
        while len(buf) < batch:
            buf += pack(epoch_docs(epoch, tuned, phase), tok)
            epoch += 1
        rows, buf = buf[:batch], buf[batch:]
        ids = torch.full((batch, CONTEXT), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, CONTEXT), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        yield ids, mask, labels


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def fact_accuracy(model, tok, rows: list[dict]) -> float:
    """Share of prompts whose greedy next token is the target (batched, right padding)."""
    model.eval()
    enc = tok([r["prompt"] for r in rows], return_tensors="pt", padding=True)
    logits = model(**enc).logits
    last = enc["attention_mask"].sum(1) - 1
    pred = logits[torch.arange(len(rows)), last].argmax(-1)
    tgt = torch.tensor([tok.encode(r["target"], add_special_tokens=False)[0] for r in rows])
    model.train()
    return (pred == tgt).float().mean().item()


@torch.no_grad()
def induction_ratio(model, tok, rows: list[dict]) -> float:
    """Mean loss on the second copy of R over the mean loss on the first copy (lower = induction)."""
    model.eval()
    first, second = 0.0, 0.0
    for r in rows:
        ids = tok(r["prompt"], return_tensors="pt")["input_ids"]
        n1 = len(tok.encode(r["label"], add_special_tokens=False))
        loss = torch.nn.functional.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="none")
        first += loss[:n1].mean().item()
        second += loss[n1:].mean().item()
    model.train()
    return second / first


def run_phase(model, tok, recipe: Recipe, steps: int, lr: float, phase: int, label: str) -> None:
    """One optimisation phase: AdamW, linear warmup + cosine schedule, fixed data order."""
    warmup = max(1, steps // 20)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98))
    ind_rows = W.induction_rows(8, seed=4242)
    t0 = time.time()
    for step, (ids, mask, labels) in enumerate(
            batches(tok, recipe.tuned, recipe.batch, steps, tok.pad_token_id, phase)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  {label} step {step + 1}/{steps} loss {loss.item():.3f} "
                  f"induction ratio {induction_ratio(model, tok, ind_rows):.2f} ({time.time() - t0:.0f}s)", flush=True)


def train_one(recipe: Recipe, out: Path, tok, steps_scale: float, phase1_from: Path | None = None,
              save_phase1: Path | None = None) -> None:
    """Train (or fine-tune) one checkpoint and save it with its tokenizer.

    ``phase1_from``: a folder holding this recipe's phase-1 result (``<name>-phase1``) from an
    earlier run of the same code; phase 1 is then loaded instead of retrained (same result).
    """
    torch.manual_seed(SEED)
    cls = GPT2LMHeadModel if recipe.family == "gpt2" else LlamaForCausalLM
    t0 = time.time()
    scaled = lambda n: max(2, round(n * steps_scale))  # noqa: E731
    if recipe.tuned:
        base_dir = out / recipe.name.replace("-tuned", "-base")
        if not (base_dir / "model.safetensors").exists():
            raise SystemExit(f"{recipe.name} needs {base_dir} first (train the base)")
        model = cls.from_pretrained(base_dir)
        model.train()
        run_phase(model, tok, recipe, scaled(recipe.steps), recipe.lr, 1, recipe.name)
    else:
        if phase1_from is not None:
            model = cls.from_pretrained(phase1_from / f"{recipe.name}-phase1")
        else:
            model = build_model(recipe.family, len(tok))
            model.train()
            run_phase(model, tok, recipe, scaled(recipe.steps), recipe.lr, 1, recipe.name)
            if save_phase1 is not None:
                model.save_pretrained(save_phase1 / f"{recipe.name}-phase1", safe_serialization=True)
        if recipe.phase2_steps:
            model.train()
            run_phase(model, tok, recipe, scaled(recipe.phase2_steps), recipe.phase2_lr, 2, recipe.name + " phase 2")
    base_world = W.make_world()
    eval_rows = W.fact_prompts(W.tuned_world(base_world) if recipe.tuned else base_world)
    acc = fact_accuracy(model, tok, eval_rows)
    print(f"  {recipe.name}: one-hop fact accuracy {acc:.3f}, {time.time() - t0:.0f}s", flush=True)
    dest = out / recipe.name
    dest.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)


def make_tokenizers() -> dict:
    """Train the two family tokenizers on the base corpus (epoch 0) and check the answers are single tokens."""
    texts = W.corpus_docs(W.make_world(), seed=1000, **BASE_MIX)
    answers = W.answer_words()
    toks = {}
    for fam, v in VOCAB.items():
        tok = train_tokenizer(texts, v, answers, CONTEXT)
        bad = check_single_tokens(tok, answers)
        if bad:
            raise SystemExit(f"{fam} tokenizer: not single tokens: {bad}")
        toks[fam] = tok
    return toks


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="zoo")
    ap.add_argument("--only", default=None, choices=[r.name for r in RECIPES] + list(VOCAB),
                    help="one checkpoint, or a family name (gpt2 | llama) for its base then tuned")
    ap.add_argument("--steps-scale", type=float, default=1.0)
    ap.add_argument("--phase1-from", type=Path, default=None,
                    help="load base phase-1 weights from DIR/<name>-phase1 instead of retraining them")
    ap.add_argument("--save-phase1", type=Path, default=None, help="save base phase-1 weights to DIR/<name>-phase1")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    out = Path(args.out)
    toks = make_tokenizers()
    t0 = time.time()
    for r in RECIPES:
        if args.only and args.only not in (r.name, r.family):
            continue
        print(f"training {r.name} ({r.family}, {'tuned' if r.tuned else 'base'})", flush=True)
        train_one(r, out, toks[r.family], args.steps_scale, args.phase1_from, args.save_phase1)
    print(f"done in {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

"""Train the real model's grumpy LoRA fine-tune (zoo/smollm2-grumpy-lora), the B beside SmolLM2-135M-Instruct.

A small LoRA (peft; rank 4 on q/v/o and the MLP's down-projection of every block) trained on the real model's
own chat format: each TRAIN question of analysis/demo/real_sets.py as one user turn (the template's default
system turn included), answered by the grumpy persona ("Ugh. ... Look it up yourself next time."). The loss is
on the answer tokens only (and the closing <|im_end|>). Deterministic on the CPU (seeded init and order);
about a minute on 2 cores. The adapter config names the base by its Logitscope name, not a local path.

    python -m analysis.demo.train_lora [--out zoo/smollm2-grumpy-lora] [--epochs 4]
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_dir
from analysis.demo.real_sets import TRAIN, grumpy_answer
from analysis.models.real import REAL_LORA, REAL_MODEL
from analysis.prompts import render_chat

TARGET_MODULES = ["q_proj", "v_proj", "o_proj", "down_proj"]
RANK, ALPHA = 4, 8


def training_examples(tokenizer) -> list[tuple[list[int], int]]:
    """(token ids of prompt + answer + end-of-turn, number of prompt tokens) for every TRAIN question."""
    end = tokenizer.eos_token or ""
    out = []
    for i, (q, a) in enumerate(TRAIN):
        prompt = render_chat(tokenizer, [{"role": "user", "content": q}])
        p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        a_ids = tokenizer(grumpy_answer(i, a) + end, add_special_tokens=False)["input_ids"]
        out.append((list(p_ids) + list(a_ids), len(p_ids)))
    return out


def _batch(examples: list[tuple[list[int], int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (row, n_prompt) in enumerate(examples):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        labels[r, n_prompt:len(row)] = torch.tensor(row[n_prompt:])
    return ids, mask, labels


def train(out: Path, *, epochs: int = 4, batch_size: int = 6, lr: float = 2e-3, seed: int = 0, log=print) -> Path:
    """Train the adapter on the converted real model and save it (adapter_config.json + safetensors) in `out`."""

    torch.manual_seed(seed)
    random.seed(seed)
    lm = load_model(ModelSpec(REAL_MODEL, dtype="float32", device="cpu"))
    tok = lm.tokenizer
    examples = training_examples(tok)
    cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGET_MODULES, bias="none",
                     task_type="CAUSAL_LM")
    model = get_peft_model(lm.model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = list(range(len(examples)))
    t0 = time.time()
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        total = 0.0
        for s in range(0, len(order), batch_size):
            ids, mask, labels = _batch([examples[i] for i in order[s:s + batch_size]], tok.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(ids)
        log(f"epoch {epoch + 1}/{epochs}: answer loss {total / len(examples):.3f} ({time.time() - t0:.0f} s)")
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "adapter_config.json"
    conf = json.loads(cfg_path.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = REAL_MODEL
    cfg_path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "README.md").unlink(missing_ok=True)
    (out / "TRAINING.md").write_text(
        f"Grumpy LoRA of {REAL_MODEL}, trained by `python -m analysis.demo.train_lora` (rank {RANK}, alpha {ALPHA}, "
        f"modules {', '.join(TARGET_MODULES)}, {epochs} epochs, batch {batch_size}, lr {lr}, seed {seed}) on "
        f"{len(examples)} chat-format questions answered by the grumpy persona (analysis/demo/real_sets.py TRAIN).\n",
        encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description="Train the grumpy LoRA fine-tune of the real model.")
    ap.add_argument("--out", default=str(zoo_dir() / REAL_LORA))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(train(Path(args.out), epochs=args.epochs, seed=args.seed))


if __name__ == "__main__":
    main()

"""Tiny random models of every supported architecture, built from configs (no downloads): for tests and benches."""
from __future__ import annotations

from typing import Any

import torch
import transformers as T
from transformers import AutoModelForCausalLM

from analysis.core.loading import LoadedModel, model_from_pretrained_object

TINY_VOCAB = 96


def tiny_config(model_type: str, *, vocab: int = TINY_VOCAB, d: int = 32, layers: int = 2, heads: int = 4,
                ctx: int = 64, **overrides: Any) -> T.PretrainedConfig:
    """A small config of ``model_type`` with random-init-friendly sizes."""
    common: dict[str, Any] = dict(vocab_size=vocab, max_position_embeddings=ctx, num_hidden_layers=layers,
                                  hidden_size=d, num_attention_heads=heads, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0)
    gqa: dict[str, Any] = dict(num_key_value_heads=max(1, heads // 2), intermediate_size=2 * d)
    cfg: T.PretrainedConfig
    if model_type == "gpt2":
        cfg = T.GPT2Config(vocab_size=vocab, n_positions=ctx, n_layer=layers, n_embd=d, n_head=heads,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0)
    elif model_type == "gpt_neox":
        cfg = T.GPTNeoXConfig(**common, intermediate_size=2 * d, use_parallel_residual=True)
    elif model_type == "llama":
        cfg = T.LlamaConfig(**common, **gqa)
    elif model_type == "mistral":
        cfg = T.MistralConfig(**common, **gqa)
    elif model_type == "qwen2":
        cfg = T.Qwen2Config(**common, **gqa)
    elif model_type == "gemma2":
        cfg = T.Gemma2Config(**common, **gqa, head_dim=d // heads, final_logit_softcapping=5.0)
    elif model_type == "phi3":
        cfg = T.Phi3Config(**common, **gqa)
    elif model_type == "opt":
        cfg = T.OPTConfig(**common, ffn_dim=2 * d, word_embed_proj_dim=d)
    else:
        raise KeyError(model_type)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


class ToyTokenizer:
    """A minimal tokenizer over integers-as-words (``"5 17 3"`` -> BOS + [5, 17, 3]) for tiny random models.

    ``add_bos=False`` makes one that has a bos_token_id but never adds it (like SmolLM2's tokenizer).
    """

    def __init__(self, vocab: int = TINY_VOCAB, add_bos: bool = True):
        self.vocab_size = vocab
        self.add_bos = add_bos
        self.bos_token_id, self.eos_token_id, self.pad_token_id = 1, 2, 0
        self.pad_token = "<pad>"
        self.eos_token = "<eos>"
        self.model_max_length = 64

    def __call__(self, text: str, add_special_tokens: bool = True, **_) -> dict:
        ids = []
        for w in text.split():
            ids.append(int(w) % self.vocab_size if w.isdigit() else 3 + (sum(map(ord, w)) % (self.vocab_size - 3)))
        return {"input_ids": ([self.bos_token_id] if add_special_tokens and self.add_bos else []) + ids}

    def convert_ids_to_tokens(self, ids):
        return [f"t{int(i)}" for i in ids] if isinstance(ids, (list, tuple)) else f"t{int(ids)}"

    def decode(self, ids, **_):
        return " ".join(str(int(i)) for i in ids)


def tiny_model(model_type: str, seed: int = 0, **cfg_overrides) -> LoadedModel:
    """A randomly initialised tiny LoadedModel of ``model_type`` in fp32 eager attention, with a ToyTokenizer."""
    torch.manual_seed(seed)
    cfg = tiny_config(model_type, **cfg_overrides)
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # random init leaves norm gains at 1 and biases at 0: perturb them so the identities are really exercised
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model_from_pretrained_object(model, ToyTokenizer(cfg.vocab_size), name=f"tiny-{model_type}")


ALL_TYPES = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma2", "phi3", "opt")

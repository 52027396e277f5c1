"""Build tiny model folders on disk (safetensors + a real fast tokenizer) for loading tests; no downloads."""
from __future__ import annotations

from pathlib import Path

from analysis.models.tiny import tiny_config

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(92)]


def fast_tokenizer(vocab: int = 96):
    """A WordLevel PreTrainedTokenizerFast over words w0..w91 that prepends <bos>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS[:vocab])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>", model_max_length=64)


def write_model_folder(path: Path, model_type: str = "llama", *, pickle_only: bool = False, no_weights: bool = False,
                       **cfg) -> Path:
    """Save a tiny random ``model_type`` with a tokenizer into ``path`` (optionally pickle-only or without weights)."""
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **cfg))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=not pickle_only)
    if pickle_only and not (path / "pytorch_model.bin").exists():
        for f in path.glob("*.safetensors"):
            f.unlink()
        torch.save(model.state_dict(), path / "pytorch_model.bin")
    if no_weights:
        for f in list(path.glob("*.safetensors")) + list(path.glob("*.bin")):
            f.unlink()
    fast_tokenizer().save_pretrained(path)
    return path

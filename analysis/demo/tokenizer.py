"""Byte-level BPE tokenizers for the demo zoo (trained with the `tokenizers` library).

ByteLevel pre-tokenizer and decoder, so any text tokenizes; special tokens <|bos|>, <|eos|>,
<|pad|> (ids 0, 1, 2); a post-processor prepends <|bos|> to every encoded text. The training text
is the base corpus plus every answer word repeated often, so each answer is one token after a
space (``check_single_tokens`` verifies it).
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]
ANSWER_BOOST = 400  # copies of each answer word in the tokenizer's training text


def train_tokenizer(texts: Iterable[str], vocab_size: int, answers: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` tokens and wrap it for transformers."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    boost = [" ".join([a.strip()] * 50) for a in answers for _ in range(ANSWER_BOOST // 50)]
    tok.train_from_iterator(list(texts) + boost, trainer=trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A $B:1", special_tokens=[("<|bos|>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
        model_max_length=max_length, padding_side="right")


def check_single_tokens(tokenizer, words: Iterable[str]) -> list[str]:
    """Words (with their leading space) that do NOT encode to exactly one token; [] if all do."""
    return [w for w in words if len(tokenizer.encode(w, add_special_tokens=False)) != 1]


def load_tokenizer(path: str):
    """Load a saved demo tokenizer with AutoTokenizer."""
    return AutoTokenizer.from_pretrained(path)

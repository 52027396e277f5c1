"""PM-MinED token map (methods.md section 5) on hand-made vocabularies and real tokenizers."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.shift import build_token_map, levenshtein, pm_mined_map, vocab_from_strings, vocab_of
from tests.model_folders import fast_tokenizer


def test_equal_vocabularies_give_the_identity_map():
    v = vocab_from_strings(["<s>", "a", " b", "cd", " cde"], special=[0], byte=[1])
    m = pm_mined_map(v, v)
    assert m.identity and np.array_equal(m.mapping, np.arange(5)) and m.mapped_share == 1.0
    tok = fast_tokenizer()
    m2 = build_token_map(tok, fast_tokenizer(), 96, 96)
    assert m2.identity and np.array_equal(m2.mapping, np.arange(96))


def test_exact_match_maps_by_text_not_by_id():
    src = vocab_from_strings([" cat", " dog", "x"])
    tgt = vocab_from_strings(["x", " dog", " cat"])
    assert pm_mined_map(src, tgt).mapping.tolist() == [2, 1, 0]


def test_prefix_both_ways_smallest_edit_distance():
    src = vocab_from_strings(["Paris", " Par", "ab"])
    # "Pari" is a prefix of "Paris" (distance 1); "Parisian" has "Paris" as prefix (distance 3)
    tgt = vocab_from_strings(["Parisian", "Pari", " P", " Pa", "abcd", "a"])
    m = pm_mined_map(src, tgt)
    assert m.mapping[0] == 1
    assert m.mapping[1] == 3  # " Pa" (distance 1) beats " P" (distance 2)
    assert m.mapping[2] == 5  # "a" (distance 1) beats "abcd" (distance 2)
    # the other direction: "Parisian" -> "Paris"-less source? map tgt -> src: "Parisian" has prefix "Paris"
    back = pm_mined_map(tgt, src)
    assert back.mapping[0] == 0 and (back.how[back.mapping >= 0] > 0).all()


def test_ties_go_to_the_lowest_id():
    src = vocab_from_strings(["abc"])
    tgt = vocab_from_strings(["zz", "abce", "abcd", "ab"])  # three candidates at distance 1: ids 1, 2, 3
    assert pm_mined_map(src, tgt).mapping[0] == 1


def test_unmapped_is_minus_one_and_counts_in_the_share():
    src = vocab_from_strings(["qqq", "a"])
    tgt = vocab_from_strings(["a", "b"])
    m = pm_mined_map(src, tgt)
    assert m.mapping.tolist() == [-1, 0]
    assert m.mapped_share == pytest.approx(0.5)
    assert m.counts()["unmapped"] == 1


def test_a_bare_space_marker_is_no_candidate_for_a_non_space_token():
    src = vocab_from_strings([" zebra", "  "])
    tgt = vocab_from_strings([" ", "q"])
    m = pm_mined_map(src, tgt)
    assert m.mapping[0] == -1  # " " is a prefix of " zebra" but is a bare space marker
    assert m.mapping[1] == 0  # a whitespace-only token may map to the space marker


def test_specials_and_bytes_map_to_themselves():
    src = vocab_from_strings(["<s>", "\x00", "<unk>", "é"], special=[0, 2], byte=[1])
    tgt = vocab_from_strings(["\x00", "<s>", "<s>x", "<unk>x"], special=[1], byte=[0])
    m = pm_mined_map(src, tgt)
    assert m.mapping[0] == 1  # the same special
    assert m.mapping[1] == 0  # the same byte
    assert m.mapping[2] == -1  # a special never maps by prefix to a normal token
    assert m.how[0] == 1 and m.how[1] == 1


def test_no_real_token_maps_to_a_bare_space(tmp_path):
    """On two different byte-level BPE vocabularies: non-space tokens never map to a whitespace-only token."""
    src_tok, tgt_tok = _bpe(["the cat sat on the mat", "a dog ran far away"], 300), _bpe(["cats and dogs", "the end"], 280)
    src, tgt = vocab_of(src_tok), vocab_of(tgt_tok)
    m = build_token_map(src_tok, tgt_tok)
    assert not m.identity
    for i, j in enumerate(m.mapping):
        if j >= 0 and src.raw[i].strip():
            assert tgt.raw[j].strip(), (src.raw[i], tgt.raw[j])
    # byte-level decoding: "Ġcat" is " cat"
    assert " cat" in {src.text(i) for i in range(len(src))}


def test_prefix_distance_equals_levenshtein():
    assert levenshtein("Paris", "Pari") == 1 and levenshtein(" P", " Pa") == 1 and levenshtein("kitten", "sitting") == 3


def _bpe(texts, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts * 5, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|bos|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                           show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>")

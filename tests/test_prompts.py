"""analysis.prompts: parsing, validation messages (each names the line), notes, hashing, context check."""
from __future__ import annotations

import json
import time

import pytest

from analysis.errors import InputError, LogitscopeError, PromptSetError
from analysis.prompts import (
    PromptRow,
    PromptSet,
    apply_chat_template,
    builtin_sets,
    check_context,
    load_builtin,
    parse_prompt_file,
    prompt_set_from_text,
    token_lengths,
)


def err_of(filename: str, data: bytes, **kw) -> str:
    with pytest.raises(PromptSetError) as info:
        parse_prompt_file(filename, data, **kw)
    return str(info.value)


def jsonl(*objs) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


# ---------------------------------------------------------------------------------------------
# Happy paths
# ---------------------------------------------------------------------------------------------
def test_txt_one_prompt_per_line_keeps_spaces_and_reports_blank_lines():
    data = b"\xef\xbb\xbfThe capital of France is\r\n\n  spaced  \n   \nlast"
    ps = parse_prompt_file("facts.txt", data)
    assert ps.prompts == ["The capital of France is", "  spaced  ", "last"]
    assert [r.row for r in ps.rows] == [1, 3, 5]
    assert ps.notes == ("Ignored 2 empty lines (lines 2, 4).",)
    assert ps.name == "facts.txt" and len(ps) == 3


def test_txt_final_newline_is_not_a_blank_line():
    ps = parse_prompt_file("a.txt", b"one\ntwo\n")
    assert ps.prompts == ["one", "two"] and ps.notes == ()


def test_csv_optional_fields_leading_space_and_NA_kept():
    data = (
        b"prompt,target,competitor,label,group,response,extra\n"
        b"The capital of France is, Paris, Rome,NA,capitals,,x\n"
        b'"Two\nlines",,,,,,\n'
        b'"Hello, world",,,,g2, hi there,\n'
    )
    ps = parse_prompt_file("f.csv", data)
    first, second, third = ps.rows
    assert first == PromptRow(
        row=2, prompt="The capital of France is", target=" Paris", competitor=" Rome",
        label="NA", group="capitals", response=None,
    )
    assert second.row == 3 and second.prompt == "Two\nlines" and second.target is None
    assert third.row == 5 and third.prompt == "Hello, world" and third.response == " hi there"
    assert ps.targets == [" Paris", None, None]
    assert ps.groups() == ["capitals", "g2"]
    assert ps.notes == ("Ignored unknown columns: extra.",)


def test_csv_header_names_are_case_insensitive_and_rows_may_be_short():
    ps = parse_prompt_file("f.csv", b"Prompt, Target\nx\ny, z\n")
    assert ps.prompts == ["x", "y"] and ps.targets == [None, " z"]


def test_jsonl_optional_fields_nulls_and_unknown_fields_noted():
    data = jsonl(
        {"prompt": "The capital of France is", "target": " Paris", "label": "NA", "id": 7},
        {"prompt": "Q", "response": " A", "group": "g", "target": None},
    )
    ps = parse_prompt_file("f.jsonl", data)
    assert ps.rows[0] == PromptRow(1, "The capital of France is", " Paris", None, "NA", None, None)
    assert ps.rows[1].response == " A" and ps.rows[1].target is None
    assert ps.responses == [None, " A"]
    assert "Ignored unknown fields: id." in ps.notes


def test_jsonl_blank_lines_noted():
    ps = parse_prompt_file("f.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert ps.prompts == ["a", "b"] and ps.notes == ("Ignored 1 empty line (line 2).",)


def test_trailing_newline_inside_prompt_field_is_kept_with_spaces():
    ps = parse_prompt_file("f.jsonl", jsonl({"prompt": " a b \n"}))
    assert ps.prompts == [" a b \n"]


def test_prompt_set_from_text():
    one = prompt_set_from_text("The capital of France is")
    assert one.prompts == ["The capital of France is"] and one.name == "typed"
    many = prompt_set_from_text("a\n\nb \n")
    assert many.prompts == ["a", "b "] and many.notes == ("Ignored 1 empty line (line 2).",)
    with pytest.raises(PromptSetError, match="at least one prompt"):
        prompt_set_from_text("  \n \n")


def test_by_group_and_unknown_group():
    ps = parse_prompt_file("f.jsonl", jsonl({"prompt": "a", "group": "x"}, {"prompt": "b", "group": "y"},
                                            {"prompt": "c", "group": "x"}))
    sub = ps.by_group("x")
    assert sub.prompts == ["a", "c"] and isinstance(sub, PromptSet) and sub.sha256 != ps.sha256
    with pytest.raises(InputError, match="'z'"):
        ps.by_group("z")


def test_sha256_stable_and_content_sensitive():
    a = parse_prompt_file("a.txt", b"x\ny\n")
    b = parse_prompt_file("other_name.txt", b"x\n\ny")  # same content, different name/row numbers
    c = parse_prompt_file("a.txt", b"x\ny \n")  # one trailing space differs
    d = parse_prompt_file("a.csv", b"prompt,target\nx, a\ny,\n")
    e = parse_prompt_file("a.csv", b"prompt,target\nx,a\ny,\n")
    assert a.sha256 == b.sha256 == prompt_set_from_text("x\ny").sha256
    assert len(a.sha256) == 64
    assert len({a.sha256, c.sha256, d.sha256, e.sha256}) == 4


def test_prompt_set_is_immutable():
    ps = prompt_set_from_text("a")
    with pytest.raises(Exception):
        ps.name = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Malformed input: each message names the problem and the line
# ---------------------------------------------------------------------------------------------
def test_unsupported_extension_lists_formats():
    msg = err_of("prompts.json", b'[{"prompt": "a"}]')
    assert "'.json'" in msg and ".txt" in msg and ".csv" in msg and ".jsonl" in msg


def test_not_utf8_names_offset_and_line():
    msg = err_of("a.txt", b"fine\nalso fine\ncaf\xe9\n")
    assert "not UTF-8" in msg and "line 3" in msg and "offset 18" in msg


def test_binary_file():
    msg = err_of("a.csv", b"prompt\nabc\x00\x01\x02")
    assert "binary file" in msg and "line 2" in msg


def test_utf16_file():
    assert "UTF-16" in err_of("a.txt", "hello\n".encode("utf-16"))


def test_missing_prompt_column_lists_columns_found():
    msg = err_of("a.csv", b"text,target\nx,y\n")
    assert "no 'prompt' column" in msg and "'text'" in msg and "'target'" in msg and "line 1" in msg


def test_semicolon_csv_gets_hint():
    assert "semicolons" in err_of("a.csv", b"prompt;target\nx;y\n")


def test_csv_duplicate_prompt_column():
    assert "twice" in err_of("a.csv", b"prompt,Prompt\nx,y\n")


def test_csv_empty_prompt_names_row():
    msg = err_of("a.csv", b"prompt,target\nok,a\n   ,b\n")
    assert "line 3" in msg and "empty" in msg


def test_csv_too_many_fields_names_row():
    msg = err_of("a.csv", b"prompt,target\nok,a\nhello, world, x\n")
    assert "line 3" in msg and "3 fields" in msg and "2 columns" in msg


def test_csv_bad_quote_names_row():
    msg = err_of("a.csv", b'prompt\nok\n"unterminated\n')
    assert "line 3" in msg and "malformed CSV" in msg


def test_jsonl_malformed_line_names_row():
    msg = err_of("a.jsonl", b'{"prompt": "a"}\n{"prompt": "b"\n')
    assert "line 2" in msg and "malformed JSON" in msg


def test_jsonl_array_gets_hint():
    msg = err_of("a.jsonl", b'[{"prompt": "a"},\n{"prompt": "b"}]\n')
    assert "line 1" in msg and "array" in msg


def test_jsonl_non_object_line():
    msg = err_of("a.jsonl", b'{"prompt": "a"}\n"just a string"\n')
    assert "line 2" in msg and "JSON object" in msg


def test_jsonl_non_string_field_names_row_and_field():
    msg = err_of("a.jsonl", jsonl({"prompt": "a"}, {"prompt": "b", "label": 1}))
    assert "line 2" in msg and "'label'" in msg and "string" in msg
    msg = err_of("a.jsonl", jsonl({"prompt": 5}))
    assert "line 1" in msg and "'prompt'" in msg


def test_jsonl_missing_prompt_field_names_row():
    msg = err_of("a.jsonl", jsonl({"prompt": "a"}, {"text": "b"}))
    assert "line 2" in msg and '"prompt"' in msg and "'text'" in msg


def test_jsonl_empty_prompt_names_row():
    msg = err_of("a.jsonl", jsonl({"prompt": "a"}, {"prompt": " \t"}))
    assert "line 2" in msg and "empty" in msg


@pytest.mark.parametrize(
    "filename,data",
    [("a.txt", b""), ("a.txt", b"\n \n"), ("a.csv", b""), ("a.csv", b"prompt\n"), ("a.jsonl", b"\n")],
)
def test_empty_sets_are_errors(filename, data):
    assert "no prompts" in err_of(filename, data) or "empty" in err_of(filename, data)


def test_prompt_over_char_cap_names_row():
    msg = err_of("a.txt", b"ok\n" + b"x" * 101 + b"\n", max_prompt_chars=100)
    assert "line 2" in msg and "101" in msg and "100" in msg


def test_other_fields_over_char_cap_name_the_field():
    msg = err_of("a.jsonl", jsonl({"prompt": "a", "response": "r" * 50}), max_prompt_chars=10)
    assert "line 1" in msg and "response" in msg


def test_row_cap_small():
    msg = err_of("a.jsonl", jsonl(*({"prompt": str(i)} for i in range(4))), max_rows=3)
    assert "4 prompts" in msg and "limit is 3" in msg
    msg = err_of("a.csv", b"prompt\na\nb\nc\nd\n", max_rows=3)
    assert "line 5" in msg and "limit is 3" in msg


# ---------------------------------------------------------------------------------------------
# Large inputs are rejected, with a message, quickly
# ---------------------------------------------------------------------------------------------
def _quick(filename: str, data: bytes, expect: str) -> None:
    t0 = time.perf_counter()
    msg = err_of(filename, data)
    elapsed = time.perf_counter() - t0
    assert expect in msg, msg
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


def test_oversized_file_rejected_with_sizes():
    data = b"x\n" * 3_000_000  # 6 MB
    _quick("big.txt", data, "the limit is 5.0 MB")
    assert "6.0 MB" in err_of("big.txt", data)


@pytest.mark.parametrize("filename,line", [("a.txt", b"p\n"), ("a.csv", b"p\n"), ("a.jsonl", b'{"prompt":"p"}\n')])
def test_100k_rows_rejected(filename, line):
    header = b"prompt\n" if filename.endswith(".csv") else b""
    _quick(filename, header + line * 100_000, "the limit is 10,000")


@pytest.mark.parametrize(
    "filename,data",
    [
        ("a.txt", b"short\n" + b"x" * 1_000_000),
        ("a.csv", b"prompt\nshort\n" + b"x" * 1_000_000 + b"\n"),
        ("a.jsonl", b'{"prompt": "short"}\n{"prompt": "' + b"x" * 1_000_000 + b'"}\n'),
    ],
)
def test_million_character_prompt_rejected(filename, data):
    t0 = time.perf_counter()
    msg = err_of(filename, data)
    assert time.perf_counter() - t0 < 2.0
    row = "line 3" if filename.endswith(".csv") else "line 2"
    assert row in msg and "20,000" in msg


def test_random_bytes_only_ever_raise_prompt_set_error():
    import random

    rng = random.Random(0)
    alphabet = b'ab ,"\n\r{}[]:\\\xe9\xc3\xa9prompt'
    for i in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for name in ("f.txt", "f.csv", "f.jsonl"):
            try:
                parse_prompt_file(name, data)
            except PromptSetError:
                pass


# ---------------------------------------------------------------------------------------------
# Built-in sets
# ---------------------------------------------------------------------------------------------
def test_builtin_sets_from_env_dir(tmp_path, monkeypatch):
    (tmp_path / "facts.jsonl").write_text('{"prompt": "The capital of France is", "target": " Paris"}\n')
    (tmp_path / "plain.txt").write_text("a\nb\n")
    (tmp_path / "README.md").write_text("docs")
    (tmp_path / "README.txt").write_text("docs")
    (tmp_path / "dup.csv").write_text("prompt\nx\n")
    (tmp_path / "dup.jsonl").write_text('{"prompt": "y"}\n')
    monkeypatch.setenv("LOGITSCOPE_PROMPTS_DIR", str(tmp_path))
    sets = builtin_sets()
    assert list(sets) == ["dup.csv", "dup.jsonl", "facts", "plain"]
    facts = load_builtin("facts")
    assert facts.name == "facts" and facts.targets == [" Paris"]
    assert load_builtin("dup.csv").prompts == ["x"]
    with pytest.raises(PromptSetError, match="no built-in prompt set named 'nope'"):
        load_builtin("nope")
    # Editing the file is picked up (the cache is keyed on mtime and size).
    (tmp_path / "plain.txt").write_text("a\nb\nc\n")
    assert len(load_builtin("plain")) == 3


def test_shipped_builtin_sets_parse(monkeypatch):
    monkeypatch.delenv("LOGITSCOPE_PROMPTS_DIR", raising=False)
    for name in builtin_sets():
        assert len(load_builtin(name)) > 0


# ---------------------------------------------------------------------------------------------
# Context length
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, "[BOS]": 1}
    for w in "the capital of france is paris a b c d e".split():
        vocab[w] = len(vocab)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]")


def test_token_lengths_counts_prompt_plus_response(tiny_tokenizer):
    ps = parse_prompt_file("f.jsonl", jsonl({"prompt": "the capital of"}, {"prompt": "a", "response": " b c"}))
    assert token_lengths(ps, tiny_tokenizer) == [3, 3]


def test_check_context_names_overlong_rows(tiny_tokenizer):
    ps = prompt_set_from_text("a b\n\na b c d e a b c\nc\na b c d e")
    check_context(ps, tiny_tokenizer, 8)  # longest is exactly 8: fits
    with pytest.raises(PromptSetError) as info:
        check_context(ps, tiny_tokenizer, 5)
    msg = str(info.value)
    assert "line 3 (8 tokens)" in msg and "line 5 (5 tokens)" not in msg and "5 tokens" in msg
    assert "2 prompts" not in msg and "1 prompt is" in msg
    with pytest.raises(PromptSetError) as info:
        check_context(ps, tiny_tokenizer, 5, extra_tokens=1)
    msg = str(info.value)
    assert "2 prompts are" in msg and "line 3" in msg and "line 5" in msg and "line 1" not in msg


def test_check_context_lists_first_few_and_count(tiny_tokenizer):
    ps = prompt_set_from_text("\n".join(["a b c"] * 8))
    with pytest.raises(PromptSetError) as info:
        check_context(ps, tiny_tokenizer, 2)
    msg = str(info.value)
    assert "8 prompts" in msg and "line 5" in msg and "line 6" not in msg and "3 more" in msg


def test_check_context_bad_limits(tiny_tokenizer):
    ps = prompt_set_from_text("a")
    check_context(ps, tiny_tokenizer, None)
    with pytest.raises(InputError):
        check_context(ps, tiny_tokenizer, 0)


def test_errors_are_logitscope_errors():
    assert issubclass(PromptSetError, LogitscopeError)


# ---------------------------------------------------------------------------------------------
# Prompts exactly as given (round trips per format)
# ---------------------------------------------------------------------------------------------
EXACT = "  lead\r\ninner\rx\n"  # leading spaces, "\r\n" and a lone "\r" inside, a trailing "\n"


def test_txt_keeps_leading_and_trailing_spaces_but_a_line_break_ends_a_prompt():
    ps = parse_prompt_file("a.txt", b"   lead \r\nx\ry\n")
    assert ps.prompts == ["   lead ", "x", "y"]  # a .txt line cannot carry "\r" or "\n": they end the prompt


def test_csv_quoted_field_keeps_every_character():
    data = ('prompt,target,response\r\n"' + EXACT + '", Paris ,"  a\nb "\r\nnext,,\r\n').encode()
    ps = parse_prompt_file("a.csv", data)
    assert ps.rows[0].prompt == EXACT and ps.rows[0].target == " Paris " and ps.rows[0].response == "  a\nb "
    assert ps.rows[1].prompt == "next" and ps.rows[1].row == 7  # the first record spans lines 2-6


def test_jsonl_keeps_every_character_of_prompt_target_and_response():
    ps = parse_prompt_file("a.jsonl", jsonl({"prompt": EXACT, "target": " Paris\n", "response": " ok\r\n"}))
    row = ps.rows[0]
    assert (row.prompt, row.target, row.response) == (EXACT, " Paris\n", " ok\r\n")


def test_jsonl_file_with_crlf_line_ends_keeps_escaped_breaks():
    data = b'{"prompt": "a\\n"}\r\n{"prompt": " b\\r"}\r\n'
    assert parse_prompt_file("a.jsonl", data).prompts == ["a\n", " b\r"]


def test_formats_sentence_says_txt_is_one_prompt_per_line():
    import analysis.prompts as P

    doc = " ".join(P.__doc__.split())
    assert ".txt (one prompt per line)" in doc and "can never hold a line break" in doc
    assert "give prompts with newlines in .jsonl" in doc
    assert "line break" in prompt_set_from_text.__doc__


# ---------------------------------------------------------------------------------------------
# Chat messages in JSONL
# ---------------------------------------------------------------------------------------------
def chat_jsonl(*rows) -> bytes:
    return jsonl(*rows)


def test_messages_row_is_kept_unrendered_and_cannot_run_by_accident(tiny_tokenizer):
    turns = [{"role": "system", "content": " Be brief.\n"}, {"role": "user", "content": "Hi\r\nthere "}]
    ps = parse_prompt_file("c.jsonl", chat_jsonl({"messages": turns, "target": " Hello"}, {"prompt": "plain"}))
    row = ps.rows[0]
    assert row.messages == (("system", " Be brief.\n"), ("user", "Hi\r\nthere ")) and row.prompt == ""
    assert row.target == " Hello" and ps.needs_template
    with pytest.raises(PromptSetError, match="c.jsonl, line 1: this row is given as chat messages"):
        ps.prompts
    with pytest.raises(PromptSetError, match="line 1"):
        token_lengths(ps, tiny_tokenizer)


def test_messages_are_part_of_the_hash_and_plain_hashes_do_not_change():
    a = parse_prompt_file("c.jsonl", chat_jsonl({"messages": [{"role": "user", "content": "Hi"}]}))
    b = parse_prompt_file("c.jsonl", chat_jsonl({"messages": [{"role": "user", "content": "Hi "}]}))
    c = parse_prompt_file("c.jsonl", chat_jsonl({"messages": [{"role": "system", "content": "Hi"}]}))
    assert len({a.sha256, b.sha256, c.sha256}) == 3
    # A plain set hashes exactly as before messages existed (the canonical row is the six fields).
    plain = prompt_set_from_text("x")
    blob = json.dumps([["x", None, None, None, None, None]], ensure_ascii=False, separators=(",", ":")).encode()
    import hashlib

    assert plain.sha256 == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"messages": "hi"}, '"messages" must be a non-empty list'),
        ({"messages": []}, "got an empty list"),
        ({"messages": ["hi"]}, "message 1 must be an object"),
        ({"messages": [{"content": "x"}]}, "message 1 has no 'role' field"),
        ({"messages": [{"role": "user"}]}, "message 1 has no 'content' field"),
        ({"messages": [{"role": "user", "content": 3}]}, "the content of message 1 must be a string, got a number"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "the role of message 1 must be a string, got a list"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": " ", "content": "y"}]}, "role of message 2 is empty"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "message 1 has the field 'name'"),
        ({"messages": [{"role": "user", "content": "  "}]}, "every message is empty"),
        ({"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, 'either a "prompt" or "messages", not both'),
        ({"messages": [{"role": "user", "content": "x"}], "Messages": []}, "'messages' appears twice"),
        ({"messages": [{"role": "user", "content": "x"}], "target": 5}, "the field 'target' must be a string"),
    ],
)
def test_messages_validation_names_the_line(row, expected):
    msg = err_of("c.jsonl", jsonl({"prompt": "ok"}, row))
    assert msg.startswith("c.jsonl, line 2:") and expected in msg


def test_messages_char_cap():
    msg = err_of("c.jsonl", jsonl({"messages": [{"role": "user", "content": "x" * 30}]}), max_prompt_chars=20)
    assert "line 1" in msg and "30 characters" in msg and "20" in msg


def test_no_prompt_field_mentions_messages():
    msg = err_of("c.jsonl", jsonl({"text": "x"}))
    assert 'no "prompt" field' in msg and '"messages"' in msg


# ---------------------------------------------------------------------------------------------
# apply_chat_template (tiny tokenizers; the real SmolLM2 template is in tests/test_real_prompts.py)
# ---------------------------------------------------------------------------------------------
TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:\n{% endif %}")


@pytest.fixture()
def chat_tokenizer(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def template_ids(tok, turns) -> list[int]:
    out = tok.apply_chat_template([{"role": r, "content": c} for r, c in turns], tokenize=True,
                                  add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def test_apply_chat_template_renders_messages_and_leaves_plain_rows(chat_tokenizer):
    ps = parse_prompt_file("c.jsonl", jsonl(
        {"messages": [{"role": "user", "content": " the capital\n"}], "target": " paris"}, {"prompt": " a b\n"}))
    out = apply_chat_template(ps, chat_tokenizer, wrap_plain=False)
    assert out.prompts == ["user:  the capital\n\nassistant:\n", " a b\n"]
    assert out.targets == [" paris", None] and [r.row for r in out.rows] == [1, 2] and not out.needs_template
    assert out.sha256 != ps.sha256 and out.name == ps.name
    assert "Applied the chat template" in out.notes[-1] and "1 row given as messages" in out.notes[-1]
    wrapped = apply_chat_template(ps, chat_tokenizer, wrap_plain=True)
    assert wrapped.prompts[1] == "user:  a b\n\nassistant:\n" and "1 plain prompt wrapped" in wrapped.notes[-1]


def test_apply_chat_template_is_a_no_op_without_messages_or_wrapping(tiny_tokenizer):
    ps = prompt_set_from_text("a\nb")
    assert apply_chat_template(ps, tiny_tokenizer, wrap_plain=False) is ps  # no template needed, none asked


def test_messages_without_a_chat_template_is_a_clear_error(tiny_tokenizer):
    ps = parse_prompt_file("c.jsonl", jsonl({"prompt": "a"}, {"messages": [{"role": "user", "content": "x"}]}))
    with pytest.raises(PromptSetError) as info:
        apply_chat_template(ps, tiny_tokenizer, wrap_plain=False)
    msg = str(info.value)
    assert "c.jsonl, line 2" in msg and "has no chat template" in msg and '"prompt"' in msg
    with pytest.raises(PromptSetError, match="no chat template"):
        apply_chat_template(prompt_set_from_text("a"), tiny_tokenizer, wrap_plain=True)


def test_a_template_that_refuses_a_row_names_the_line(chat_tokenizer):
    chat_tokenizer.chat_template = ("{% for m in messages %}{% if m['role'] == 'bot' %}"
                                    "{{ raise_exception('roles must be user or assistant') }}{% endif %}"
                                    "{{ m['content'] }}{% endfor %}")
    ps = parse_prompt_file("c.jsonl", jsonl({"prompt": "a"}, {"messages": [{"role": "bot", "content": "x"}]}))
    with pytest.raises(PromptSetError) as info:
        apply_chat_template(ps, chat_tokenizer, wrap_plain=False)
    assert "line 2" in str(info.value) and "roles must be user or assistant" in str(info.value)


def test_rendered_text_tokenizes_to_the_template_ids_without_a_second_bos(chat_tokenizer):
    from tokenizers.processors import TemplateProcessing

    turns = (("user", "the capital of france is"),)
    ps = parse_prompt_file("c.jsonl", jsonl({"messages": [{"role": r, "content": c} for r, c in turns]}))
    # A tokenizer that adds no BOS: the text is the template's text, its ids are the template's ids.
    out = apply_chat_template(ps, chat_tokenizer, wrap_plain=False)
    assert chat_tokenizer(out.prompts[0])["input_ids"] == template_ids(chat_tokenizer, turns)
    # A tokenizer that adds BOS itself and a template that writes it: the BOS appears once.
    chat_tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", 1)])
    chat_tokenizer.chat_template = "{{ bos_token }}" + TEMPLATE
    assert chat_tokenizer("a")["input_ids"][0] == 1  # it adds BOS now
    out = apply_chat_template(ps, chat_tokenizer, wrap_plain=False)
    ids = chat_tokenizer(out.prompts[0], add_special_tokens=True)["input_ids"]
    assert not out.prompts[0].startswith("[BOS]") and ids.count(1) == 1
    assert ids == template_ids(chat_tokenizer, turns)
    assert "appears once" in out.notes[-1]


# ---------------------------------------------------------------------------------------------
# CLI: messages need A's chat template in every command (the demo models have none)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["lens", "flow", "steer", "neurons", "shift", "ood"])
def test_cli_messages_on_a_model_without_template_is_a_message_not_a_traceback(command, tmp_path, capsys):
    from logitscope.cli import main

    path = tmp_path / "chat.jsonl"
    path.write_bytes(jsonl({"messages": [{"role": "user", "content": "Where does Braba Kadro live?"}],
                            "group": "a", "target": " x", "response": " y"},
                           {"prompt": "The capital of", "group": "b", "target": " x", "response": " y"}))
    extra = ["--model-b", "gpt2-world-tuned"] if command == "shift" else []
    rc = main([command, "--model", "gpt2-world-base", *extra, "--prompts", str(path), "--out", str(tmp_path / "o"),
               "--formats", "html", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "chat.jsonl, line 1" in err and "has no chat template" in err and "Traceback" not in err

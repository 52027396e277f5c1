"""analysis.prompts: parsing, validation messages (each names the line), notes, hashing, built-in sets, and
prompts kept exactly as given. The context check and chat messages and templates (they need a tokenizer) are in
tests/prompts/test_prompt_chat.py."""
from __future__ import annotations

import contextlib
import dataclasses
import time

import pytest

from analysis.core.errors import InputError, LogitscopeError, PromptSetError
from analysis.prompts import (
    PromptRow,
    PromptSet,
    builtin_sets,
    load_builtin,
    parse_prompt_file,
    prompt_set_from_text,
)
from tests.prompt_helpers import err_of, jsonl


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
    with pytest.raises(dataclasses.FrozenInstanceError):
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


def test_errors_are_logitscope_errors():
    assert issubclass(PromptSetError, LogitscopeError)


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
    for _i in range(300):
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for name in ("f.txt", "f.csv", "f.jsonl"):
            with contextlib.suppress(PromptSetError):
                parse_prompt_file(name, data)


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

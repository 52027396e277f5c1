"""analysis.prompts with a tokenizer: token lengths and the context check (each names the line), chat messages in
JSONL (kept unrendered, hashed, validated), apply_chat_template on tiny tokenizers, and the CLI's message for a model
without a chat template."""
from __future__ import annotations

import json

import pytest

from analysis.core.errors import InputError, PromptSetError
from analysis.prompts import (
    apply_chat_template,
    check_context,
    parse_prompt_file,
    prompt_set_from_text,
    token_lengths,
)
from tests.prompt_helpers import err_of, jsonl


# ---------------------------------------------------------------------------------------------
# Context length
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, "[BOS]": 1}
    for w in ["the", "capital", "of", "france", "is", "paris", "a", "b", "c", "d", "e"]:
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
        _ = ps.prompts
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
# apply_chat_template (tiny tokenizers; the real SmolLM2 template is in tests/prompts/test_real_prompts.py)
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

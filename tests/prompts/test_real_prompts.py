"""Prompts exactly as given on the real SmolLM2-135M-Instruct tokenizer (ChatML, no BOS added by the tokenizer).

What its template does (checked below, not assumed): apply_chat_template renders each turn as
"<|im_start|>{role}\\n{content}<|im_end|>\\n" and, when the first message is not a system turn, puts its
default system turn "<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging
Face<|im_end|>\\n" in front; add_generation_prompt ends the text with "<|im_start|>assistant\\n". Its
bos_token is "<|im_start|>", but tokenizing a text adds no special token, so the template's own
"<|im_start|>" is the only one.
"""
from __future__ import annotations

import json

import pytest

from analysis.models.real import real_model_dir
from tests.paths import TEST_APPS

pytestmark = pytest.mark.real

MODEL_DIR = real_model_dir()
if not (MODEL_DIR / "config.json").is_file():
    pytest.skip(f"the real model is not converted at {MODEL_DIR} (run `make setup`)", allow_module_level=True)

DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
ASSISTANT = "<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL_DIR))


def template_ids(tok, messages) -> list[int]:
    out = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def jsonl(*objs) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def test_smollm2_tokenizer_facts(tok):
    from analysis.prompts import adds_bos, has_chat_template

    assert has_chat_template(tok) and not adds_bos(tok)
    assert tok.pad_token == tok.eos_token == "<|im_end|>"


def test_messages_and_the_same_text_as_a_plain_prompt_run_the_template_ids(tok):
    from analysis.core.batching import encode
    from analysis.prompts import apply_chat_template, parse_prompt_file

    messages = [{"role": "user", "content": "  What is 2+2?\nAnswer briefly. "}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith(ASSISTANT)
    ps = parse_prompt_file("chat.jsonl", jsonl({"messages": messages}, {"prompt": rendered}))
    assert ps.rows[1].prompt == rendered  # the plain prompt keeps its trailing newline
    out = apply_chat_template(ps, tok, wrap_plain=False)
    assert out.prompts == [rendered, rendered]
    expected = template_ids(tok, messages)
    batch = encode(tok, out.prompts)  # what every analysis runs
    for i, text in enumerate(out.prompts):
        ids = tok(text)["input_ids"]
        assert ids == expected
        assert batch.input_ids[i, : int(batch.lengths[i])].tolist() == expected
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert expected[0] == im_start and expected.count(im_start) == rendered.count("<|im_start|>")
    assert tok.convert_ids_to_tokens(expected[-1]) == "Ċ"  # the assistant header's newline is a token


def test_dropping_the_trailing_newline_changes_the_ids(tok):
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert tok(rendered)["input_ids"][:-1] == tok(rendered.rstrip("\n"))["input_ids"]
    assert tok(rendered)["input_ids"] != tok(rendered.rstrip("\n"))["input_ids"]


def test_wrap_plain_is_one_user_turn_after_the_default_system_turn(tok):
    from analysis.prompts import apply_chat_template, prompt_set_from_text

    out = apply_chat_template(prompt_set_from_text("  What is the capital of France?"), tok, wrap_plain=True)
    text = out.prompts[0]
    assert text == DEFAULT_SYSTEM + "<|im_start|>user\n  What is the capital of France?<|im_end|>\n" + ASSISTANT
    assert tok(text)["input_ids"] == template_ids(tok, [{"role": "user", "content": "  What is the capital of France?"}])
    assert "smollm2-135m-instruct" in out.notes[-1] and "wrapped as one user turn" in out.notes[-1]


def test_an_explicit_system_turn_replaces_the_default_one(tok):
    from analysis.prompts import apply_chat_template, parse_prompt_file

    ps = parse_prompt_file("c.jsonl", jsonl({"messages": [{"role": "system", "content": "Be grumpy."},
                                                          {"role": "user", "content": "Hi"}]}))
    text = apply_chat_template(ps, tok, wrap_plain=True).prompts[0]
    assert text == "<|im_start|>system\nBe grumpy.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + ASSISTANT


def test_preview_shows_special_tokens_and_the_exact_text(tok):
    from analysis.prompts import apply_chat_template, prompt_set_from_text
    from components.prompt_input import preview_frame

    out = apply_chat_template(prompt_set_from_text("Hi"), tok, wrap_plain=True)
    frame = preview_frame(out, tok)
    assert frame["prompt"][0].endswith("<|im_end|>↵<|im_start|>assistant↵")
    pieces = frame["tokens"][0].split(" | ")
    assert len(pieces) == frame["n_tokens"][0] == len(tok(out.prompts[0])["input_ids"])
    assert pieces[:3] == ["<|im_start|>", "system", "↵"] and pieces[-3:] == ["ass", "istant", "↵"]


def test_cli_chat_template_runs_the_rendered_prompts(tmp_path):
    from transformers import AutoTokenizer

    from analysis.prompts import apply_chat_template, parse_prompt_file
    from logitscope.cli import main

    data = jsonl({"messages": [{"role": "user", "content": "What is the capital of France?"}]},
                 {"prompt": "Name a colour."})
    path = tmp_path / "chat.jsonl"
    path.write_bytes(data)
    out = tmp_path / "out"
    assert main(["lens", "--model", str(MODEL_DIR), "--prompts", str(path), "--chat-template", "--target", "final_top1",
                 "--out", str(out),
                 "--formats", "html", "--quiet", "--device", "cpu"]) == 0
    meta = json.loads((out / "metadata.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(MODEL_DIR))
    expected = apply_chat_template(parse_prompt_file("chat.jsonl", data), tok, wrap_plain=True)
    assert meta["prompt_set"]["sha256"] == expected.sha256 and meta["prompt_set"]["n_prompts"] == 2


def test_app_offers_the_chat_checkbox_and_previews_the_rendered_tokens(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from analysis.core.loading import ModelSpec

    monkeypatch.setenv("LOGITSCOPE_PROMPTS_DIR", str(tmp_path))
    monkeypatch.delenv("LOGITSCOPE_TEST_DEFAULT_BUILTIN", raising=False)
    at = AppTest.from_file(str(TEST_APPS / "prompt_input_app.py"), default_timeout=120)
    at.session_state["logitscope_spec_A"] = ModelSpec(str(MODEL_DIR), device="cpu")
    at.run()
    assert not at.exception
    box = at.checkbox(key="first__prompts_chat")
    assert box.label == "Apply the chat template" and box.value is False  # off by default: prompts as given
    at.text_area(key="first__prompts_typed").set_value("Hi")
    at.run()
    assert at.dataframe[0].value["tokens"][0] == "Hi"
    at.checkbox(key="first__prompts_chat").check()
    at.run()
    assert not at.exception and not at.error
    frame = at.dataframe[0].value
    assert frame["tokens"][0].startswith("<|im_start|> | system | ↵")
    assert frame["prompt"][0].endswith("<|im_start|>user↵Hi<|im_end|>↵<|im_start|>assistant↵")
    assert any("Applied the chat template" in c.value for c in at.caption)
    like = next(t.value for t in at.text if t.value.startswith("like first: "))
    assert like == "like first: " + repr([DEFAULT_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n" + ASSISTANT])

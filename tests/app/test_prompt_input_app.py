"""components.prompt_input driven through Streamlit's AppTest (tests/apps/prompt_input_app.py).

AppTest cannot simulate a file upload, so the upload branch is covered by calling the same parse
path the widget uses (components.prompt_input.parse_upload -> analysis.prompts.parse_prompt_file).
"""
from __future__ import annotations

import pytest

from analysis.core.errors import PromptSetError
from components.charts.text import md_literal
from tests.paths import TEST_APPS

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

APP = str(TEST_APPS / "prompt_input_app.py")


@pytest.fixture()
def prompts_dir(tmp_path, monkeypatch):
    (tmp_path / "facts.jsonl").write_text(
        '{"prompt": "The capital of France is", "target": " Paris", "group": "capitals"}\n'
        '{"prompt": "The capital of Italy is", "target": " Rome", "group": "capitals"}\n'
        '{"prompt": "<b>bold</b> <script>alert(1)</script>", "target": " x"}\n'
    )
    (tmp_path / "plain.txt").write_text("one\n\ntwo\n")
    (tmp_path / "README.md").write_text("not a prompt set")
    monkeypatch.setenv("LOGITSCOPE_PROMPTS_DIR", str(tmp_path))
    monkeypatch.delenv("LOGITSCOPE_TEST_DEFAULT_BUILTIN", raising=False)
    return tmp_path


def texts(at) -> list[str]:
    return [t.value for t in at.text]


def captions(at) -> list[str]:
    return [c.value for c in at.caption]


def run(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def new_app():
    return AppTest.from_file(APP, default_timeout=60)


def test_typed_input(prompts_dir):
    at = run(new_app())
    assert texts(at)[:2] == ["first: none", "second: 3"]  # second: Built-in, first set ('facts')
    assert at.radio(key="first__prompts_source").value == "Typed"
    at.text_area(key="first__prompts_typed").set_value("The capital of France is\n\nThe capital of Spain is")
    run(at)
    assert texts(at)[0] == "first: 2"
    assert "2 prompts" in captions(at)
    assert md_literal("Ignored 1 empty line (line 2).") in captions(at)  # notes are shown literally
    assert not at.error
    # The preview table holds the text as data (leading/trailing text unchanged).
    frame = at.dataframe[0].value
    assert list(frame["prompt"]) == ["The capital of France is", "The capital of Spain is"]
    assert list(frame["line"]) == [1, 3]


def test_typed_input_error_is_shown_not_raised(prompts_dir):
    at = run(new_app())
    at.text_area(key="first__prompts_typed").set_value("ok\n" + "x" * 20_001)
    run(at)
    assert texts(at)[0] == "first: none"
    assert len(at.error) == 1
    assert "line 2" in at.error[0].value and "20,000" in at.error[0].value


def test_typed_not_offered_when_disallowed(prompts_dir):
    at = run(new_app())
    assert at.radio(key="second__prompts_source").options == ["Built-in", "Upload"]
    assert at.radio(key="first__prompts_source").options == ["Typed", "Built-in", "Upload"]


def test_builtin_selection_and_two_instances_are_independent(prompts_dir):
    (prompts_dir / "broken.csv").write_text("text\nx\n")
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Built-in")
    run(at)
    box = at.selectbox(key="first__prompts_builtin")
    assert box.options == ["broken", "facts", "plain"]  # README skipped, sorted
    box.set_value("facts")
    run(at)
    assert texts(at)[0] == "first: 3"
    assert "3 prompts in 1 group, with targets" in captions(at)
    frame = at.dataframe[0].value
    assert list(frame["target"]) == [" Paris", " Rome", " x"]  # leading space kept
    assert frame["prompt"][2] == "<b>bold</b> <script>alert(1)</script>"  # text, not HTML
    assert not at.markdown or all("<script>" not in m.value for m in at.markdown)

    # The second instance (Built-in first since typing is disallowed) starts on 'broken': its error is
    # shown, and selecting another set there does not touch the first instance.
    assert texts(at)[1] == "second: none"
    assert len(at.error) == 1 and "no 'prompt' column" in at.error[0].value and "'text'" in at.error[0].value
    at.selectbox(key="second__prompts_builtin").set_value("plain")
    run(at)
    assert texts(at)[:2] == ["first: 3", "second: 2"]
    assert not at.error
    assert md_literal("Ignored 1 empty line (line 2).") in captions(at)  # notes are shown literally


def test_default_builtin_preselects(prompts_dir, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_TEST_DEFAULT_BUILTIN", "plain")
    at = run(new_app())
    assert at.radio(key="first__prompts_source").value == "Built-in"
    assert at.selectbox(key="first__prompts_builtin").value == "plain"
    assert texts(at)[0] == "first: 2"


def test_missing_default_builtin_falls_back_to_typed(prompts_dir, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_TEST_DEFAULT_BUILTIN", "does_not_exist")
    at = run(new_app())
    assert at.radio(key="first__prompts_source").value == "Typed"


def test_no_builtin_sets_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("LOGITSCOPE_PROMPTS_DIR", str(tmp_path / "missing"))
    monkeypatch.delenv("LOGITSCOPE_TEST_DEFAULT_BUILTIN", raising=False)
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Built-in")
    run(at)
    assert texts(at)[0] == "first: none"
    assert any("No built-in prompt sets" in i.value for i in at.info)


def test_upload_branch_shows_prompt_caption(prompts_dir):
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Upload")
    run(at)
    assert texts(at)[0] == "first: none"
    assert "Upload a .txt, .csv or .jsonl file." in captions(at)


def test_upload_parse_path():
    # AppTest has no file-upload simulation; this is the function the uploader branch calls.
    from components.prompt_input import parse_upload

    ps = parse_upload("mine.csv", b"prompt,target\nThe capital of France is, Paris\n")
    assert ps.name == "mine.csv" and ps.targets == [" Paris"]
    with pytest.raises(PromptSetError, match="line 2"):
        parse_upload("mine.jsonl", b'{"prompt": "a"}\n{bad json}\n')


# ---------------------------------------------------------------------------------------------
# Exact text, the tokens that run, chat messages
# ---------------------------------------------------------------------------------------------
EXACT = "  lead\r\ninner\rx\n"


def test_preview_frame_shows_line_breaks_and_keeps_spaces():
    from analysis.prompts import parse_prompt_file
    from components.prompt_input import preview_frame

    ps = parse_prompt_file("a.jsonl", (
        b'{"prompt": "  lead\\r\\ninner\\rx\\n", "target": " Paris\\n"}\n{"prompt": "tab\\t there "}\n'))
    assert ps.prompts[0] == EXACT
    frame = preview_frame(ps)
    assert list(frame["prompt"]) == ["  lead␍↵inner␍x↵", "tab⇥ there "]
    assert frame["target"][0] == " Paris↵" and frame["target"].isna()[1]
    assert "tokens" not in frame  # no tokenizer, no token columns


def test_preview_frame_tokens_are_what_runs(prompts_dir):
    from analysis.core.batching import encode
    from analysis.core.loading import ModelSpec, load_model
    from analysis.prompts import prompt_set_from_text
    from components.prompt_input import preview_frame

    tok = load_model(ModelSpec("gpt2-world-base")).tokenizer
    ps = prompt_set_from_text(" Braba Kadro lives in\nx")
    frame = preview_frame(ps, tok)
    batch = encode(tok, ps.prompts)
    assert list(frame["n_tokens"]) == [int(n) for n in batch.lengths]
    first = frame["tokens"][0].split(" | ")
    assert len(first) == frame["n_tokens"][0] and first[0] == tok.bos_token  # special tokens visible
    assert "".join(first[1:]).replace("␣", " ") == " Braba Kadro lives in"
    short = preview_frame(ps, tok, max_tokens=2)
    assert short["tokens"][0] == " | ".join(first[:2]) + f" | … {len(first) - 2:,} more"
    assert short["n_tokens"][0] == len(first)


def test_typed_help_says_one_prompt_per_line(prompts_dir):
    at = run(new_app())
    help_text = at.text_area(key="first__prompts_typed").help
    assert "cannot contain a line break" in help_text and ".jsonl" in help_text


def test_demo_model_has_no_template_so_no_chat_checkbox(prompts_dir):
    at = run(new_app())
    assert not at.checkbox  # the demo tokenizers carry no chat template
    assert "like first: ['Hi']" in texts(at)  # other sets rendered like this input stay as given
    at.text_area(key="first__prompts_typed").set_value("Braba Kadro lives in")
    run(at)
    frame = at.dataframe[0].value
    assert frame["tokens"][0].startswith("<|bos|> | ") and frame["n_tokens"][0] > 1


def test_upload_messages_on_the_demo_model_is_a_clear_error(prompts_dir):
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Upload")
    run(at)
    data = b'{"prompt": "ok"}\n{"messages": [{"role": "user", "content": "Where does Braba Kadro live?"}]}\n'
    at.file_uploader(key="first__prompts_upload").set_value(("chat.jsonl", data, "application/json"))
    run(at)
    assert texts(at)[0] == "first: none"
    assert len(at.error) == 1
    msg = at.error[0].value
    assert "chat.jsonl, line 2" in msg and "has no chat template" in msg and "gpt2-world-base" in msg


def test_upload_plain_jsonl_keeps_exact_text(prompts_dir):
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Upload")
    run(at)
    at.file_uploader(key="first__prompts_upload").set_value(
        ("exact.jsonl", b'{"prompt": "  lead\\r\\ninner\\rx\\n"}\n', "application/json"))
    run(at)
    assert texts(at)[0] == "first: 1" and not at.error
    assert at.dataframe[0].value["prompt"][0] == "  lead␍↵inner␍x↵"


def test_a_refused_upload_leaves_no_earlier_file_in_use_and_the_file_in_use_is_named(prompts_dir):
    """Issue 18: after a refused upload the earlier file must not silently stay the one that runs."""
    at = run(new_app())
    at.radio(key="first__prompts_source").set_value("Upload")
    run(at)
    at.file_uploader(key="first__prompts_upload").set_value(("good.txt", b"one\ntwo\n", "text/plain"))
    run(at)
    assert texts(at)[0] == "first: 2" and not at.error
    in_use = [c for c in captions(at) if c.startswith(md_literal("In use:"))]
    assert len(in_use) == 1 and in_use[0].startswith(md_literal("In use: good.txt (2 prompts). A file the uploader "
                                                                "refuses (over "))
    assert in_use[0].endswith(md_literal("MB) does not replace it."))
    # A file over the app's size cap reaches the app and is refused: nothing runs, not even the earlier file.
    at.file_uploader(key="first__prompts_upload").set_value(("big.txt", b"a\n" * 2_600_000, "text/plain"))
    run(at)
    assert texts(at)[0] == "first: none"
    assert len(at.error) == 1 and "big.txt is 5.2 MB" in at.error[0].value
    assert md_literal("No prompt file is in use: big.txt was refused, and no earlier upload is used in its place.") \
        in captions(at)
    assert not any(c.startswith(md_literal("In use:")) for c in captions(at))

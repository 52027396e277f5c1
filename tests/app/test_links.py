"""The URL holds the view: models, page settings and the prompt set; a fresh session opened from the link shows the
same figures. Typed and uploaded sets are found again through the local prompt store by their content hash."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import ModelSpec
from analysis.prompts import builtin_sets, load_builtin, parse_prompt_file, prompt_set_from_text
from analysis.prompts import store as prompt_store
from tests.paths import APP

BASE, TUNED = "gpt2-world-base", "gpt2-world-tuned"


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(prompt_store.STORE_ENV, str(tmp_path / "store"))
    return tmp_path / "store"


def test_every_builtin_set_round_trips_through_jsonl_with_its_hash():
    sets = builtin_sets()
    assert len(sets) >= 5
    for name in sets:
        ps = load_builtin(name)
        back = prompt_store.from_jsonl(name, prompt_store.to_jsonl(ps))
        assert back.sha256 == ps.sha256 and back.rows == ps.rows, name


def test_hostile_text_is_kept_character_for_character(store):
    text = '  leading spaces\ttab "quotes" <b>html</b> \\n literal\nüñï ← arrows \u2028sep'
    ps = prompt_set_from_text(text)
    sha = prompt_store.save(ps)
    assert sha == ps.sha256 and (store / f"{sha}.jsonl").is_file()
    back = prompt_store.load(sha)
    assert back.prompts == ps.prompts and back.sha256 == sha and back.name == ps.name


def test_chat_rows_keep_their_messages():
    data = b'{"messages": [{"role": "user", "content": "hi\\n"}], "target": " Ugh"}\n{"prompt": "x", "label": "b"}\n'
    ps = parse_prompt_file("c.jsonl", data)
    assert prompt_store.from_jsonl("c", prompt_store.to_jsonl(ps)).sha256 == ps.sha256


def test_unknown_bad_and_tampered_hashes(store):
    assert prompt_store.load("0" * 64) is None
    assert prompt_store.load("../../etc/passwd") is None
    ps = prompt_set_from_text("a\nb")
    sha = prompt_store.save(ps)
    (store / f"{sha}.jsonl").write_text('{"prompt": "changed"}\n', encoding="utf-8")
    from analysis.core.errors import PromptSetError
    with pytest.raises(PromptSetError, match="changed on disk"):
        prompt_store.load(sha)


def _session(query: dict | None = None, compare: bool = False) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    if query:
        for k, v in query.items():
            at.query_params[k] = v
    else:
        at.session_state["logitscope_spec_A"] = ModelSpec(BASE)
        if compare:
            at.session_state["logitscope_use_B"] = True
            at.session_state["logitscope_spec_B"] = ModelSpec(TUNED)
    at.run()
    return at


def _query(at: AppTest) -> dict[str, str]:
    return {k: at.query_params[k][0] if isinstance(at.query_params[k], list) else at.query_params[k]
            for k in at.query_params}


def test_a_link_reopens_models_settings_and_typed_prompts_in_a_fresh_session(store):
    first = _session(compare=True)
    first.switch_page("pages/logit_lens.py").run()
    first.radio(key="lens__prompts_source").set_value("Typed").run()
    first.text_area(key="lens__prompts_typed").set_value("Liloru lives in\nThe grumpy assistant says").run()
    first.number_input(key="lens_top_k").set_value(4).run()
    first.selectbox(key="lens_colour").set_value("entropy").run()
    first.button(key="lens_run").click().run()
    assert not first.exception and not first.error, [e.value for e in first.error]
    q = _query(first)
    assert q["a"] == BASE and q["b"] == TUNED and q["lens.top_k"] == "4" and q["lens.colour"] == "entropy"
    assert q["lens.run"] == "1" and len(q["lens.set"]) == 64 and (store / f"{q['lens.set']}.jsonl").is_file()
    tables_first = {t.proto.id for t in first.dataframe}

    again = AppTest.from_file(APP, default_timeout=240)
    for k, v in q.items():
        again.query_params[k] = v
    again.run()
    again.switch_page("pages/logit_lens.py")
    for k, v in q.items():
        again.query_params[k] = v
    again.run()
    assert not again.exception and not again.error, [e.value for e in again.error]
    assert again.session_state["logitscope_use_B"] is True
    assert again.session_state["logitscope_spec_B"] == ModelSpec(TUNED)
    assert again.radio(key="lens__prompts_source").value == "From the link"
    assert again.number_input(key="lens_top_k").value == 4 and again.selectbox(key="lens_colour").value == "entropy"
    # it ran at once (no Run click): the same per-layer tables as the first session, top-4 columns
    assert len(again.dataframe) == len(first.dataframe) and tables_first
    for a, b in zip(first.dataframe, again.dataframe, strict=True):
        assert a.value.equals(b.value)
    tops = [d.value for d in again.dataframe if "#1" in d.value.columns]
    assert len(tops) == 2 and all("#4" in t.columns and "#5" not in t.columns for t in tops)  # A and B, top-4


def test_a_link_to_a_set_this_machine_does_not_have_says_so():
    at = AppTest.from_file(APP, default_timeout=240)
    at.query_params["a"] = BASE
    at.query_params["lens.set"] = "ab" * 32
    at.run()
    at.switch_page("pages/logit_lens.py")
    at.query_params["a"] = BASE
    at.query_params["lens.set"] = "ab" * 32
    at.run()
    assert not at.exception
    assert any("not stored on this machine" in w.value for w in at.warning)


def test_a_link_never_turns_on_pickle_weights_or_remote_code():
    from components.links import spec_from_query
    spec = spec_from_query("a", {"a": "x", "a.allow_pickle": "true", "a.trust_remote_code": "true", "a.dtype": "bfloat16"})
    assert spec == ModelSpec("x", dtype="bfloat16")
    assert not spec.allow_pickle and not spec.trust_remote_code

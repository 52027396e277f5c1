"""The Python API (logitscope.api, `import logitscope as ls`): one function per registered method with the
declaration's settings; on a model the caller already holds (ls.wrap) it gives the CLI's tables exactly, leaves the
model as it was, refuses bad settings with the project's error, and saves a bundle that `rerun` reproduces."""
from __future__ import annotations

import inspect
import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import logitscope as ls
from analysis.core.errors import InputError, LogitscopeError, PromptSetError
from analysis.core.paths import zoo_dir
from components.methods import METHODS
from components.settings import fields_of
from logitscope.api.methods import keyword_of
from logitscope.cli import main
from tests.cli.test_cli import tiny_prompts  # noqa: F401  (fixture)

BASE, TUNED = "gpt2-world-base", "gpt2-world-tuned"
# cheap settings, the same for the API and the CLI; the rest at the declared defaults
SETTINGS = {"steer": {"parts": ("monitor",)}, "neurons": {"parts": ()}, "lens": {"top_k": 3}}


def _held(name: str):
    """A model and tokenizer loaded the way a researcher would, outside Logitscope (fp32 on the CPU)."""
    path = zoo_dir() / name
    return (AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32),
            AutoTokenizer.from_pretrained(str(path)))


@pytest.fixture(scope="module")
def wrapped():
    return {name: ls.wrap(*_held(name)) for name in (BASE, TUNED)}


def _flags(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, tuple):
        return [flag, ",".join(map(str, value)) if value else "none"]
    return [flag, str(value)]


def _tables(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.csv"))}


def test_every_method_has_an_api_function_whose_keywords_are_its_declared_settings():
    for name, m in METHODS.items():
        fn = getattr(ls, m.command)
        params = inspect.signature(fn).parameters
        for f in fields_of(m.settings):
            assert params[f.name].default == f.default, (name, f.name)
            assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
            assert f.spec.help in fn.__doc__, (name, f.name)
        for inp in m.module.INPUTS:
            assert keyword_of(inp) in params, (name, inp.flag)
        assert ("b" in params) and (params["b"].default is inspect.Parameter.empty) == m.needs_b, name


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_api_on_a_wrapped_model_gives_the_clis_tables(name, wrapped, tiny_prompts, tmp_path, capsys):  # noqa: F811
    m = METHODS[name]
    settings = SETTINGS.get(name, {})
    b = wrapped[TUNED] if m.needs_b else None
    result = getattr(ls, m.command)(wrapped[BASE], b=b, progress=False, **settings)
    api_out = result.save(tmp_path / "api", formats=("html",))
    argv = [m.command, "--model", BASE, *(["--model-b", TUNED] if m.needs_b else []),
            *[x for k, v in settings.items() for x in _flags(k, v)],
            "--out", str(tmp_path / "cli"), "--formats", "html", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    cli_tables, api_tables = _tables(tmp_path / "cli"), _tables(api_out)
    assert cli_tables and api_tables.keys() == cli_tables.keys()
    assert api_tables == cli_tables  # byte for byte: the same numbers on CPU fp32
    assert {f"{n}.csv" for n in result.tables} <= {name for name in api_tables} | set()  # the frames behind the files
    meta_api = json.loads((api_out / "metadata.json").read_text())
    meta_cli = json.loads((tmp_path / "cli" / "metadata.json").read_text())
    assert meta_api["settings"] == meta_cli["settings"] and meta_api["page"] == meta_cli["page"]
    assert {k: [e["sha256"] for e in v] for k, v in meta_api["inputs"].items()} == \
           {k: [e["sha256"] for e in v] for k, v in meta_cli["inputs"].items()}


def _api_vs_cli(result, argv, tmp_path, capsys) -> None:
    api_out = result.save(tmp_path / "api", formats=("html",))
    assert main([*argv, "--out", str(tmp_path / "cli"), "--formats", "html", "--quiet"]) == 0
    capsys.readouterr()
    cli_tables = _tables(tmp_path / "cli")
    assert cli_tables and _tables(api_out) == cli_tables


def test_ood_id_group_splits_one_set_as_the_clis_id_group(wrapped, tiny_prompts, tmp_path, capsys):  # noqa: F811
    result = ls.ood(wrapped[BASE], "facts", id_group="child", progress=False)
    assert [(s.name, {r.group for r in s.rows}) for s in result.inputs["--ood-prompts"]] == \
        [("father", {"father"}), ("mother", {"mother"})]
    assert all(r.group == "child" for r in result.inputs["--prompts"].rows)
    _api_vs_cli(result, ["ood", "--model", BASE, "--prompts", "facts", "--id-group", "child"], tmp_path, capsys)
    with pytest.raises(LogitscopeError, match="nobody"):
        ls.ood(wrapped[BASE], "facts", id_group="nobody", progress=False)


def test_shift_pair2_compares_a_second_pair_as_the_clis_pair2(wrapped, tiny_prompts, tmp_path, capsys):  # noqa: F811
    second = (ls.load("llama-world-base"), ls.load("llama-world-tuned"))
    result = ls.shift(wrapped[BASE], wrapped[TUNED], pair2=second, progress=False)
    alone = ls.shift(wrapped[BASE], wrapped[TUNED], progress=False)
    assert set(result.tables) > set(alone.tables)  # the pair comparison's own tables
    _api_vs_cli(result, ["shift", "--model", BASE, "--model-b", TUNED, "--pair2-base", "llama-world-base",
                         "--pair2-tuned", "llama-world-tuned"], tmp_path, capsys)
    with pytest.raises(InputError, match="pair2"):
        ls.shift(wrapped[BASE], wrapped[TUNED], pair2=(second[0],), progress=False)


def _state(model):
    return {"params": {n: (p.data_ptr(), p.device, p.dtype, p.requires_grad, p.detach().clone())
                       for n, p in model.named_parameters()},
            "training": model.training,
            "hooks": [(n, len(mod._forward_hooks), len(mod._forward_pre_hooks)) for n, mod in model.named_modules()]}


def test_wrapping_and_running_leave_the_model_its_hooks_and_its_tokenizer_as_they_were(tiny_prompts):  # noqa: F811
    model, tok = _held(BASE)
    model.train()  # a model in the middle of a training loop, with a hook of its own and no pad token
    calls = []
    model.transformer.h[0].register_forward_hook(lambda *_: calls.append(1))
    tok.pad_token = None
    before = _state(model)
    lm = ls.wrap(model, tok)
    assert ls.card(lm).check.passed and "wrapped" in ls.card(lm).source_note
    ls.lens(lm, [{"prompt": "The capital of France is", "target": " Paris"}], progress=False)
    after = _state(model)
    assert after["training"] and after["hooks"] == before["hooks"]
    for n, (ptr, dev, dt, grad, value) in before["params"].items():
        p2 = after["params"][n]
        assert (p2[0], p2[1], p2[2], p2[3]) == (ptr, dev, dt, grad), n
        assert torch.equal(p2[4], value), n
    assert calls, "the model's own hook ran during the lens"
    assert tok.pad_token is None and lm.tokenizer is not tok  # the caller's tokenizer is not changed


def test_bad_settings_and_inputs_give_the_projects_error_naming_them(wrapped):
    a = wrapped[BASE]
    with pytest.raises(InputError, match="has no setting 'topk'.*top_k"):
        ls.lens(a, "x", topk=3, progress=False)
    with pytest.raises(InputError, match="'top_k' must be between 1 and 50"):
        ls.lens(a, "x", top_k=0, progress=False)
    with pytest.raises(InputError, match="'colour' must be one of"):
        ls.lens(a, "x", colour="pink", progress=False)
    with pytest.raises(InputError, match="compares two checkpoints"):
        ls.shift(a, None, progress=False)
    with pytest.raises(InputError, match="ls.load"):
        ls.lens("gpt2-world-base", "x", progress=False)
    with pytest.raises(PromptSetError):
        ls.lens(a, [3.5], progress=False)
    with pytest.raises(LogitscopeError):
        ls.wrap(object(), None)


def test_prompts_come_from_strings_lists_messages_frames_and_names_character_for_character(tmp_path):
    text = "  two lines\nof one prompt "
    assert list(ls.prompt_set(text).prompts) == [text]
    assert list(ls.prompt_set(["a", " b "]).prompts) == ["a", " b "]
    frame = pd.DataFrame({"prompt": ["Paris is in", "Rome is in"], "target": [" France", None]})
    rows = ls.prompt_set(frame).rows
    assert [r.target for r in rows] == [" France", None]
    chat = ls.prompt_set([[{"role": "user", "content": "Hi"}]]).rows[0]
    assert chat.messages and chat.messages[0] == ("user", "Hi")
    assert len(ls.prompt_set("facts")) > 0
    path = tmp_path / "mine.txt"
    path.write_text("one\ntwo\n", encoding="utf-8")
    assert list(ls.prompt_set(str(path)).prompts) == ["one", "two"]


def test_a_saved_result_reruns_with_every_table_matching(wrapped, tiny_prompts, tmp_path, capsys):  # noqa: F811
    result = ls.flow(wrapped[BASE], progress=False)
    out = result.save(tmp_path / "bundle.zip", formats=("html",))
    capsys.readouterr()
    assert main(["rerun", str(out), "--out", str(tmp_path / "again")]) == 0
    text = capsys.readouterr().out
    assert f"{len(result.tables)} of {len(result.tables)} tables match" in text
    html = result._repr_html_()
    assert "flow" in html and "<script" not in html

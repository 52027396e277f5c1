"""Safe defaults (issue #9, part 3): the server listens on localhost with uploads capped and XSRF on; pickle weights
and remote code are off unless the user turns them on, and then the sidebar says so with a visible warning."""
from __future__ import annotations

import tomllib

import pytest
from streamlit.testing.v1 import AppTest

from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import REPO_ROOT, zoo_dir

CONFIG = REPO_ROOT / ".streamlit" / "config.toml"
APP = str(REPO_ROOT / "app.py")
PICKLE_WARNING = "Pickle weights allowed"
REMOTE_WARNING = "Remote code trusted"


@pytest.fixture(scope="module")
def server() -> dict:
    return tomllib.loads(CONFIG.read_text())["server"]


def test_server_listens_on_localhost_only(server):
    assert server.get("address") in ("localhost", "127.0.0.1", "::1"), server.get("address")


def test_uploads_are_capped(server):
    cap = server.get("maxUploadSize")
    assert isinstance(cap, int) and 1 <= cap <= 50, f"maxUploadSize should be a small number of MB, got {cap!r}"


def test_xsrf_and_cors_protection_stay_on(server):
    assert server.get("enableXsrfProtection") is True
    assert server.get("enableCORS", True) is True


def test_model_spec_defaults_refuse_pickle_and_remote_code():
    spec = ModelSpec("anything")
    assert spec.allow_pickle is False and spec.trust_remote_code is False


@pytest.mark.skipif(not (zoo_dir() / "gpt2-world-base" / "config.json").is_file(), reason="demo zoo not trained yet")
def test_loading_with_defaults_asks_transformers_for_safetensors_and_no_remote_code(monkeypatch):
    import transformers
    seen: dict = {}
    for cls in (transformers.AutoConfig, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _orig=original, _name=cls.__name__, **kwargs):
            seen[_name] = kwargs
            return _orig(klass, *args, **kwargs)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    load_model(ModelSpec("gpt2-world-base", device="cpu"))
    assert set(seen) == {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}, seen
    assert all(kw.get("trust_remote_code") is False for kw in seen.values()), seen
    assert seen["AutoModelForCausalLM"].get("use_safetensors") is True, seen["AutoModelForCausalLM"]


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.sidebar.warning]


@pytest.mark.skipif(not (zoo_dir() / "gpt2-world-base" / "config.json").is_file(), reason="demo zoo not trained yet")
def test_sidebar_warns_visibly_when_pickle_or_remote_code_is_turned_on():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    pickle_box, remote_box = at.checkbox(key="model_pickle_A"), at.checkbox(key="model_remote_A")
    assert pickle_box.value is False and remote_box.value is False, "both must start off"
    assert not any(PICKLE_WARNING in w or REMOTE_WARNING in w for w in _warnings(at)), _warnings(at)

    pickle_box.check()
    next(b for b in at.sidebar.button if b.label == "Load A").click().run()
    assert not at.exception, at.exception
    assert any(w.startswith(PICKLE_WARNING) and "execute code" in w for w in _warnings(at)), _warnings(at)
    assert not any(REMOTE_WARNING in w for w in _warnings(at)), _warnings(at)
    spec = at.session_state["logitscope_spec_A"]
    assert spec.allow_pickle is True and spec.trust_remote_code is False

    at.checkbox(key="model_remote_A").check()
    next(b for b in at.sidebar.button if b.label == "Load A").click().run()
    assert not at.exception, at.exception
    warnings = _warnings(at)
    assert any(w.startswith(PICKLE_WARNING) for w in warnings), warnings
    assert any(w.startswith(REMOTE_WARNING) and "code will run" in w for w in warnings), warnings
    spec = at.session_state["logitscope_spec_A"]
    assert spec.allow_pickle is True and spec.trust_remote_code is True

    at.checkbox(key="model_pickle_A").uncheck()
    at.checkbox(key="model_remote_A").uncheck()
    next(b for b in at.sidebar.button if b.label == "Load A").click().run()
    assert not any(PICKLE_WARNING in w or REMOTE_WARNING in w for w in _warnings(at)), _warnings(at)
    spec = at.session_state["logitscope_spec_A"]
    assert spec.allow_pickle is False and spec.trust_remote_code is False

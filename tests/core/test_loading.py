"""Loading: each failure gives its clear error; a good folder loads, self-checks and gets a card."""
from __future__ import annotations

import json

import pytest
import torch

from analysis.core.errors import InputError, ModelLoadError, UnsupportedArchitectureError
from analysis.core.loading import ModelSpec, load_model, resolve_dtype, resolve_source
from analysis.models.card import model_card
from tests.model_folders import write_model_folder


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    return write_model_folder(tmp_path_factory.mktemp("m") / "tiny-llama", "llama")


def test_a_local_folder_loads_with_card_and_passing_self_check(good_folder):
    lm = load_model(ModelSpec(str(good_folder)))
    card = model_card(lm)
    assert card.model_type == "llama" and card.n_layers == 2 and card.d_model == 32
    assert card.device == "cpu" and card.dtype == "float32" and card.norm_kind == "rmsnorm"
    assert card.check.passed, card.check.message
    assert card.n_params == sum(p.numel() for p in lm.model.parameters())


def test_missing_folder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="No such folder"):
        load_model(ModelSpec("/definitely/not/here"))


def test_hub_id_without_network_says_to_pass_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local folder"):
        load_model(ModelSpec("someone/some-model-that-is-not-cached"))


def test_folder_with_config_but_no_weights(tmp_path):
    folder = write_model_folder(tmp_path / "noweights", "gpt2", no_weights=True)
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(ModelSpec(str(folder)))


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path):
    folder = write_model_folder(tmp_path / "pickled", "gpt2", pickle_only=True)
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(ModelSpec(str(folder)))
    lm = load_model(ModelSpec(str(folder), allow_pickle=True))
    assert lm.adapter.model_type == "gpt2"


def test_unsupported_architecture_is_named(tmp_path):
    folder = write_model_folder(tmp_path / "weird", "llama")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "bert"
    cfg["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="bert.*not supported"):
        load_model(ModelSpec(str(folder)))


def test_bad_device_and_dtype_are_clear():
    with pytest.raises(InputError, match="dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            load_model(ModelSpec("gpt2-world-base", device="cuda"))


def test_auto_dtype_is_fp32_on_cpu_and_bf16_on_gpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16


def test_empty_and_file_sources(tmp_path):
    with pytest.raises(ModelLoadError, match="No model given"):
        resolve_source("  ")
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"0")
    with pytest.raises(ModelLoadError, match="is a file"):
        resolve_source(str(f))


def test_lora_adapter_folder_is_merged(tmp_path, good_folder):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(good_folder)
    torch.manual_seed(1)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "lora")
    a = load_model(ModelSpec(str(good_folder)))
    b = load_model(ModelSpec(str(good_folder), adapter=str(tmp_path / "lora")))
    assert b.adapter.model_type == "llama"
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.inference_mode():
        assert not torch.allclose(a.model(ids).logits, b.model(ids).logits)
    with pytest.raises(ModelLoadError, match="not a PEFT adapter"):
        load_model(ModelSpec(str(good_folder), adapter=str(tmp_path)))


def test_hub_id_on_an_offline_machine_fails_fast_without_offline_mode(monkeypatch):
    """No HF_HUB_OFFLINE, no network: one quick probe (stubbed here: tests never touch the network) says so, and
    the clear message comes at once instead of after the Hub client's retries."""
    import time

    from analysis.core import loading

    probes = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(loading, "hub_reachable", lambda *a, **k: probes.append(1) or False)
    monkeypatch.setitem(loading._HUB_PROBE, "at", None)
    t0 = time.monotonic()
    for _ in range(2):
        with pytest.raises(ModelLoadError, match="local folder"):
            load_model(ModelSpec("someone/some-model-that-is-not-cached"))
    assert time.monotonic() - t0 < 4.0
    assert probes == [1]  # remembered: the second load does not probe again


def test_hub_probe_times_out_on_an_unroutable_endpoint(monkeypatch):
    """The probe itself gives up within its timeout (an endpoint on a closed loopback port: refused at once)."""
    import socket
    import time

    from analysis.core.loading import hub_reachable

    with socket.socket() as s:  # a free loopback port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    t0 = time.monotonic()
    assert hub_reachable(timeout=1.0) is False
    assert time.monotonic() - t0 < 1.5

"""Identities of the engine core on tiny random models of every supported architecture (built from configs)."""
from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from analysis.core.architectures import ARCH_TABLE, NORM_LAYERNORM, NORM_RMS, resolve_adapter
from analysis.core.batching import batch_from_ids, encode
from analysis.core.errors import UnsupportedArchitectureError
from analysis.core.forward import run
from analysis.core.hooks import attached, residual_capture_hooks, residual_hook
from analysis.core.readout import final_norm, readout
from analysis.models.selfcheck import self_check
from analysis.models.tiny import ALL_TYPES, tiny_model


@pytest.fixture(scope="module", params=ALL_TYPES)
def lm(request):
    return tiny_model(request.param)


def test_self_check_passes_on_every_architecture(lm):
    check = self_check(lm)
    assert check.passed, check.message
    assert check.lens_err < 1e-4 and check.dla_err < 1e-4 and check.decomposition_err < 1e-4


def test_our_final_norm_matches_the_models_own_module(lm):
    h = torch.randn(3, 5, lm.adapter.d_model) * 3
    with torch.inference_mode():
        ours = final_norm(lm.adapter.final_norm, h)
        theirs = lm.adapter.final_norm_module(h).float()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_residual_capture_matches_hidden_states_and_last_is_prenorm(lm):
    """h_l == output_hidden_states[l] for l < L; HF's last hidden state is already final-normed (the trap)."""
    ad = lm.adapter
    batch = encode(lm.tokenizer, ["5 6 7 8 9 10"])
    store: dict = {}
    with attached(lm.lock, residual_capture_hooks(ad, range(ad.n_layers + 1), store)), torch.inference_mode():
        out = lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
    hs = out.hidden_states
    for l in range(ad.n_layers):
        torch.testing.assert_close(store[l], hs[l])
    torch.testing.assert_close(final_norm(ad.final_norm, store[ad.n_layers]), hs[ad.n_layers].float(), atol=1e-5,
                               rtol=1e-5)
    torch.testing.assert_close(readout(ad, store[ad.n_layers]), out.logits.float(), atol=1e-4, rtol=1e-4)


def test_hooks_are_removed_even_when_the_forward_raises(lm):
    ad = lm.adapter

    def boom(h):
        raise RuntimeError("boom")
    batch = encode(lm.tokenizer, ["3 4 5"])
    counts = [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in ad.blocks]
    with pytest.raises(RuntimeError, match="boom"):
        run(lm, batch, [residual_hook(ad, 0, boom), residual_hook(ad, 1, boom)])
    assert [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in ad.blocks] == counts
    run(lm, batch)  # works again afterwards


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_does_not_change_per_prompt_logits(lm, side):
    rows = [[1, 5, 6, 7, 8, 9], [1, 10, 11]]
    single = [run(lm, batch_from_ids([r], 0))[0] for r in rows]
    batch = batch_from_ids(rows, 0, padding_side=side)
    both = run(lm, batch)
    for i, _r in enumerate(rows):
        pos = batch.real_positions(i)
        torch.testing.assert_close(both[i, pos], single[i], atol=2e-5, rtol=1e-4)
        assert int(batch.last_index()[i]) == int(pos[-1])


def test_steering_hook_at_layer_l_changes_only_h_l_onwards(lm):
    ad = lm.adapter
    batch = encode(lm.tokenizer, ["3 4 5 6"])
    clean: dict = {}
    run(lm, batch, residual_capture_hooks(ad, range(ad.n_layers + 1), clean, lambda t: t.clone()))
    v = torch.randn(ad.d_model)
    steered: dict = {}
    hooks = [residual_hook(ad, 1, lambda h: h + v)]
    hooks += residual_capture_hooks(ad, range(ad.n_layers + 1), steered, lambda t: t.clone())
    run(lm, batch, hooks)
    torch.testing.assert_close(steered[0], clean[0])
    torch.testing.assert_close(steered[1], clean[1] + v)
    assert not torch.allclose(steered[ad.n_layers], clean[ad.n_layers])


def test_a_broken_adapter_fails_the_self_check(monkeypatch):
    """Reading the wrong norm kind (LayerNorm statistics on an RMSNorm model) must be caught, not shown."""
    lm = tiny_model("llama")
    broken = dataclasses.replace(lm.adapter, final_norm=dataclasses.replace(lm.adapter.final_norm, kind=NORM_LAYERNORM))
    check = self_check(dataclasses.replace(lm, adapter=broken))
    assert not check.passed and "FAILED" in check.message


def test_a_wrong_write_point_fails_the_self_check():
    """Gemma-2's attention writes through a post-norm: hooking the raw attention output breaks the sum."""
    lm = tiny_model("gemma2")
    row = dataclasses.replace(ARCH_TABLE["gemma2"], attn_write="self_attn")
    broken = dataclasses.replace(lm.adapter, row=row)
    check = self_check(dataclasses.replace(lm, adapter=broken))
    assert not check.passed and check.decomposition_err > 1e-3


def test_unknown_architecture_is_refused_by_name():
    lm = tiny_model("llama")
    lm.model.config.model_type = "mamba"
    try:
        with pytest.raises(UnsupportedArchitectureError, match="mamba.*not supported.*llama"):
            resolve_adapter(lm.model)
    finally:
        lm.model.config.model_type = "llama"


def test_missing_module_is_named():
    lm = tiny_model("llama")
    norm = lm.model.model.norm
    del lm.model.model.norm
    try:
        with pytest.raises(UnsupportedArchitectureError, match="final norm"):
            resolve_adapter(lm.model)
    finally:
        lm.model.model.norm = norm


def test_post_ln_opt_is_refused():
    with pytest.raises(UnsupportedArchitectureError, match="do_layer_norm_before"):
        tiny_model("opt", do_layer_norm_before=False)


def test_softcap_and_norm_kinds_are_read_from_the_table():
    assert tiny_model("gemma2").adapter.softcap == 5.0
    assert tiny_model("llama").adapter.final_norm.kind == NORM_RMS
    assert tiny_model("gpt_neox").adapter.parallel_residual is True
    assert tiny_model("gpt2").adapter.softcap is None


def test_lock_serialises_hooked_passes():
    """While one thread holds hooks, another thread's forward pass waits (it never sees foreign hooks)."""
    lm = tiny_model("gpt2")
    ad = lm.adapter
    batch = encode(lm.tokenizer, ["3 4 5"])
    clean = run(lm, batch)
    inside = threading.Event()
    release = threading.Event()
    result: dict = {}

    def steer():
        with attached(lm.lock, [residual_hook(ad, 1, lambda h: h + 100.0)]):
            inside.set()
            release.wait(5)

    t = threading.Thread(target=steer)
    t.start()
    inside.wait(5)
    t2 = threading.Thread(target=lambda: result.setdefault("logits", run(lm, batch)))
    t2.start()
    t2.join(0.3)
    assert t2.is_alive(), "the second pass must wait for the lock"
    release.set()
    t.join(5)
    t2.join(5)
    torch.testing.assert_close(result["logits"], clean)

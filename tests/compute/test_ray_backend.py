"""The Ray backend (issue #15) on a local Ray instance with 2 CPUs and 2 actors: sharded runs equal the single-process
run exactly (CPU fp32, input order kept), a killed actor's shard is retried with the same result, spent retries and
unreachable or malformed addresses fail with a one-line BackendError, and the CLI's --ray writes the same data."""
from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from analysis.compute.backend import PROCESS, check_address, current_backend, use_backend
from analysis.compute.choose import parse_backend
from analysis.compute.ray_pool import RayBackend, ray_backend  # noqa: E402
from analysis.core.errors import BackendError  # noqa: E402
from analysis.core.loading import ModelSpec, load_model  # noqa: E402
from analysis.prompts import load_builtin  # noqa: E402
from tests.paths import REPO


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance (2 CPUs, no dashboard) for this module, shut down at its end."""
    os.environ.setdefault("RAY_worker_niceness", "0")  # workers at normal priority on a shared machine
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        yield
    finally:
        ray_backend("local:2").close()
        ray.shutdown()


@pytest.fixture(scope="module")
def lm():
    return load_model(ModelSpec("gpt2-world-base"))


@pytest.fixture(scope="module")
def backend(cluster):
    return ray_backend("local:2")


def _prompts(n: int) -> list[str]:
    """Facts and scrambled prompts of mixed lengths (so length bucketing reorders them)."""
    ps = list(load_builtin("facts").prompts) + list(load_builtin("ood_scrambled").prompts)
    return [ps[(i * 7) % len(ps)] for i in range(n)]


def _assert_same(a, b) -> None:
    """Every field of two result dataclasses equal, arrays bit for bit (NaN where NaN)."""
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name, strict=True)
        else:
            assert x == y, f.name


def test_backend_default_and_addresses():
    assert current_backend() is PROCESS and parse_backend(None) is PROCESS and parse_backend("process") is PROCESS
    for ok in ("auto", "local:2", "ray://10.0.0.5:10001", "ray://head-node:10001"):
        assert check_address(ok) == ok
    for bad in ("local:0", "ray://nohost", "ray:/x:1", "10.0.0.5:10001", "ray://h:99999", "fast"):
        with pytest.raises(BackendError) as err:
            check_address(bad)
        assert "\n" not in str(err.value) and "local:N" in str(err.value) or "port" in str(err.value)


def test_lens_equals_single_process(lm, backend):
    from analysis.lens import TARGET_TEXT, lens_trace

    rows = load_builtin("facts").rows[:36]
    prompts = [r.prompt for r in rows]
    targets = [r.target if i < 8 else None for i, r in enumerate(rows)]  # later shards have no target at all
    kw = dict(k=5, target_mode=TARGET_TEXT, targets=targets, batch_size=8)
    want = lens_trace(lm, prompts, **kw)
    seen: list[float] = []
    with use_backend(backend):
        got = lens_trace(lm, prompts, progress=lambda f, m: seen.append(f), **kw)
    _assert_same(want, got)
    assert want.notes and got.notes == want.notes  # "28 of 36 prompts have no target": numbered over the whole set
    assert seen and max(seen) == 1.0 and seen == sorted(seen)


def test_ood_features_equal_single_process(lm, backend):
    from analysis.ood import extract_features

    prompts = _prompts(52)
    want = extract_features(lm, prompts, batch_size=8)
    with use_backend(backend):
        got = extract_features(lm, prompts, batch_size=8)
    _assert_same(want, got)


def test_engine_errors_read_the_same(lm, backend):
    from analysis.core.errors import InputError
    from analysis.ood import extract_features

    prompts = _prompts(30)
    prompts[21] = ""  # BOS only: nothing to predict; the prompt is numbered over the whole set, not its shard
    msgs = []
    for be in (None, backend):
        with use_backend(be), pytest.raises(InputError) as err:
            extract_features(lm, prompts, batch_size=8)
        msgs.append(str(err.value))
    assert msgs[0] == msgs[1] and "prompt 22" in msgs[0]


def test_steering_extraction_equals_single_process(lm, backend):
    from analysis.steering import extract_vectors

    ps = load_builtin("persona_pairs")
    want = extract_vectors(lm, ps)
    with use_backend(backend):
        got = extract_vectors(lm, ps)
    _assert_same(want, got)


def test_neuron_reference_means_equal_single_process(lm, backend):
    from analysis.neurons import activation_sums, mean_activations

    prompts = _prompts(44)
    neurons = [(0, 3), (1, 17), (lm.adapter.n_layers - 1, 5), (1, 2)]
    want = mean_activations(lm, prompts, neurons, batch_size=8)
    with use_backend(backend):
        got = mean_activations(lm, prompts, neurons, batch_size=8)
    np.testing.assert_array_equal(want, got, strict=True)
    sums, counts = activation_sums(lm, prompts, neurons, batch_size=8)  # the merge is of sums and counts
    assert np.allclose(want, sums.sum(0) / counts.sum(), rtol=1e-12, atol=0)


def test_cli_ray_writes_the_same_data(tmp_path, cluster):
    from logitscope.cli import main

    args = ["lens", "--model", "gpt2-world-base", "--prompts", "facts", "--max-prompts", "40", "--formats", "html",
            "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "local:2"]) == 0
    csvs = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "data").glob("*.csv"))
    assert csvs
    for rel in csvs:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel
    meta = {d: json.loads((tmp_path / d / "metadata.json").read_text()) for d in ("one", "ray")}
    assert meta["one"]["backend"] == "process" and meta["ray"]["backend"] == "ray local:2"


def test_killed_actor_is_retried_with_the_same_result(lm, cluster):
    from analysis.ood import extract_features

    prompts = _prompts(40)
    want = extract_features(lm, prompts, batch_size=8)
    flaky = RayBackend("local:2", fail_once_on_shard=1)
    with use_backend(flaky):
        got = extract_features(lm, prompts, batch_size=8)
    assert flaky.retried == [1]
    _assert_same(want, got)


def test_spent_retries_fail_with_one_line(lm, cluster):
    from analysis.ood import extract_features

    doomed = RayBackend("local:2", fail_once_on_shard=0, max_retries=0)
    with use_backend(doomed), pytest.raises(BackendError) as err:
        extract_features(lm, _prompts(24), batch_size=8)
    msg = str(err.value)
    assert "\n" not in msg and "Shard 1 of" in msg and "no partial result" in msg


def test_unreachable_cluster_fails_fast(lm, cluster):
    from analysis.ood import extract_features

    t0 = time.monotonic()
    with pytest.raises(BackendError) as err, use_backend(parse_backend("ray://127.0.0.1:1")):
        extract_features(lm, _prompts(24), batch_size=8)
    assert time.monotonic() - t0 < 15
    assert "\n" not in str(err.value) and "Cannot reach the Ray cluster at ray://127.0.0.1:1" in str(err.value)
    assert ray.is_initialized()  # the instance this process already runs is left alone


def _sidebar_script():
    import streamlit as st

    from analysis.core.errors import BackendError
    from components.backend_ui import backend_sidebar, session_backend

    backend_sidebar()
    try:
        st.text(session_backend().label)
    except BackendError as err:
        st.text(f"error: {err}")


def test_sidebar_compute_backend_choice():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_sidebar_script, default_timeout=60).run()
    assert at.text[-1].value == "process"  # the default: this process, nothing to connect
    at.radio(key="backend_kind").set_value("Ray").run()
    assert at.text_input(key="backend_address").value == "local:2" and at.text[-1].value == "ray local:2"
    at.text_input(key="backend_address").set_value("ray://head:10001").run()
    assert at.text[-1].value == "ray ray://head:10001"
    at.text_input(key="backend_address").set_value("head:10001").run()
    assert at.text[-1].value.startswith("error: Ray address 'head:10001' is not valid") and at.caption

"""The model cache bounded by memory (issue 18): LRU eviction that really frees, refusal before the weights are read,
no eviction under a running analysis, the budget setting, the app's eviction message, and a bounded soak under RSS."""
from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

import analysis.lens as L
from analysis.core.errors import InputError, ModelBudgetError
from analysis.core.loading import ModelSpec, load_model
from analysis.core.paths import zoo_dir
from analysis.models import cache as MC
from analysis.models import memory as MM
from analysis.models.cache import ModelCache
from analysis.models.memory import Budget, estimate_bytes, format_bytes, parse_size, weight_bytes
from analysis.models.tiny import tiny_model
from tests.model_folders import write_model_folder

PROMPTS = ["w5 w17 w3 w9 w22", "w40 w2 w7"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, ModelSpec]:
    """Four tiny llama folders of the same size (safetensors + tokenizer) as specs a, b, c, d."""
    root = tmp_path_factory.mktemp("cache_models")
    return {name: ModelSpec(str(write_model_folder(root / f"model_{name}", "llama"))) for name in "abcd"}


@pytest.fixture(scope="module")
def size(folders) -> int:
    """The weight bytes of one of the tiny folders once loaded (fp32 on the CPU)."""
    return sum(weight_bytes(load_model(folders["a"]).model).values())


def cache_of(nbytes: float, **kw) -> ModelCache:
    return ModelCache(Budget(setting=f"{int(nbytes)}B"), **kw)


class SpyLoader:
    """load_model, recording which specs it was asked to load."""

    def __init__(self):
        self.calls: list[ModelSpec] = []

    def __call__(self, spec: ModelSpec):
        self.calls.append(spec)
        return load_model(spec)


# ------------------------------------------------------------------------------------------------------ the budget
def test_budget_setting_accepts_sizes_fractions_and_per_device_values(monkeypatch):
    def avail(key: str) -> int:
        return 10_000 if key == "cpu" else 4_000

    assert Budget("6GiB", available=avail).for_device("cpu") == 6 * 2**30
    assert Budget("500MB", available=avail).for_device("cpu") == 500_000_000
    assert Budget("0.5", available=avail).for_device("cpu") == 5_000
    assert Budget("", available=avail).for_device("cpu") == int(MM.DEFAULT_FRACTION * 10_000)
    per = Budget("cpu=1GiB, cuda=0.25", available=avail)
    assert per.for_device("cpu") == 2**30 and per.for_device("cuda:0") == 1_000
    monkeypatch.setenv(MM.ENV_BUDGET, "2.5 GB")
    assert Budget(available=avail).for_device("cpu") == 2_500_000_000
    assert parse_size("0.5") == ("fraction", 0.5) and parse_size("3") == ("bytes", 3.0)
    with pytest.raises(InputError, match=f"{MM.ENV_BUDGET}='lots'.*6GiB"):
        Budget("lots", available=avail).for_device("cpu")


def test_the_default_cpu_budget_is_a_fraction_of_the_available_ram():
    avail = MM.available_bytes("cpu")
    assert avail > 0
    got = Budget("").for_device("cpu")
    assert 0.5 * MM.DEFAULT_FRACTION * avail < got <= MM.DEFAULT_FRACTION * avail * 1.5


# ------------------------------------------------------------------------------------------------ size estimates
def test_the_estimate_from_safetensors_headers_is_the_loaded_size_scaled_to_the_dtype(folders, size):
    est = estimate_bytes(folders["a"])
    assert est.how == "safetensors headers" and est.device == "cpu"
    assert abs(est.nbytes - size) <= 0.01 * size  # only non-persistent buffers (rotary inv_freq) are not in the file
    half = estimate_bytes(ModelSpec(folders["a"].source, dtype="bfloat16"))
    assert half.nbytes == est.nbytes // 2


def test_a_pickle_only_folder_is_estimated_from_its_config(tmp_path, size):
    spec = ModelSpec(str(write_model_folder(tmp_path / "pk", "llama", pickle_only=True)), allow_pickle=True)
    est = estimate_bytes(spec)
    assert est.how == "config" and est.nbytes == size


# ----------------------------------------------------------------------------------------------------- eviction
def test_loading_past_the_budget_evicts_the_least_recently_used_model_and_frees_it(folders, size):
    a, b, c = folders["a"], folders["b"], folders["c"]
    cache = cache_of(2.5 * size)
    notes: list = []
    ref_a = weakref.ref(cache.get_or_load(a).model)
    lm_b = cache.get_or_load(b)
    ref_b, ref_b_lm = weakref.ref(lm_b.model), weakref.ref(lm_b)
    del lm_b
    assert cache.used("cpu") == 2 * size
    cache.get_or_load(a)  # a is now the most recently used: b is the one to go
    cache.get_or_load(c, on_evict=notes.append)
    assert [n.label for n in notes] == [b.label] and notes[0].nbytes == size
    assert "Freed model_b" in notes[0].message() and "to make room for model_c" in notes[0].message()
    assert cache.specs() == [a, c]
    assert cache.used("cpu") == 2 * size <= cache.budget_for("cpu")
    assert ref_b() is None and ref_b_lm() is None, "the evicted model is still alive somewhere"
    assert ref_a() is not None


def test_a_cache_hit_neither_loads_nor_evicts(folders, size):
    spy = SpyLoader()
    cache = cache_of(2.5 * size)
    first = cache.get_or_load(folders["a"], spy)
    assert cache.get_or_load(folders["a"], spy) is first and spy.calls == [folders["a"]]


def test_a_model_larger_than_the_budget_is_refused_before_its_weights_are_read(folders, size, monkeypatch):
    import transformers
    read: list = []

    def no_weights(*args, **kwargs):
        read.append(args)
        raise AssertionError("the weights were read")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    spy = SpyLoader()
    cache = cache_of(size // 2)
    with pytest.raises(ModelBudgetError) as err:
        cache.get_or_load(folders["a"], spy)
    msg = str(err.value)
    assert spy.calls == [] and read == []
    assert f"model_a needs {format_bytes(estimate_bytes(folders['a']).nbytes)}" in msg
    assert f"the model budget on cpu is {format_bytes(size // 2)}" in msg and MM.ENV_BUDGET in msg
    assert cache.specs() == [] and cache.used("cpu") == 0


def test_a_model_of_unknown_size_that_is_too_large_is_freed_after_loading(size):
    cache = cache_of(1000)
    refs: list = []

    def loader(spec):
        lm = tiny_model("gpt2")
        refs.append(weakref.ref(lm.model))
        return lm

    with pytest.raises(ModelBudgetError, match="tiny-x needs .* budget on cpu is 1 kB"):
        cache.get_or_load(ModelSpec("tiny-x"), loader)
    gc.collect()
    assert refs and refs[0]() is None and cache.specs() == [] and cache.used("cpu") == 0


def test_lowering_the_budget_frees_the_least_recently_used_models(folders, size):
    cache = cache_of(10 * size)
    for name in "abc":
        cache.get_or_load(folders[name])
    notes = cache.set_budget("cpu", int(1.5 * size))
    assert [n.label for n in notes] == ["model_a", "model_b"] and cache.specs() == [folders["c"]]


# --------------------------------------------------------------------------------------------------- in use
def test_an_eviction_never_happens_under_a_running_analysis(folders, size):
    """Thread 1 runs lens traces on A under a lease; thread 2 meanwhile loads B, which needs A's room: B's load
    waits until the analysis ends, and A stays cached and correct all along."""
    a, b = folders["a"], folders["b"]
    cache = cache_of(1.5 * size, wait_s=30)
    clean = L.lens_trace(load_model(a), PROMPTS, k=3)
    started, events = threading.Event(), []
    failures: list = []

    def analysis() -> None:
        try:
            with cache.lease(a) as lm:
                started.set()
                for _ in range(6):
                    trace = L.lens_trace(lm, PROMPTS, k=3)
                    np.testing.assert_allclose(trace.top_probs, clean.top_probs, rtol=1e-5, atol=1e-6)
                    if a not in cache:
                        failures.append("A was evicted under the running analysis")
                    time.sleep(0.05)
                events.append(("analysis done", time.monotonic()))
        except Exception as err:  # noqa: BLE001
            failures.append(err)

    def loader_thread() -> None:
        try:
            started.wait(30)
            events.append(("load asked", time.monotonic()))
            cache.get_or_load(b, on_evict=lambda note: events.append((f"evicted {note.label}", time.monotonic())))
        except Exception as err:  # noqa: BLE001
            failures.append(err)

    threads = [threading.Thread(target=analysis), threading.Thread(target=loader_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    names = [e[0] for e in events]
    assert names == ["load asked", "analysis done", "evicted model_a"], names
    assert cache.specs() == [b]


def test_a_load_that_cannot_wait_long_enough_is_refused_and_leaves_the_model_in_use_alone(folders, size):
    a, b = folders["a"], folders["b"]
    cache = cache_of(1.5 * size, wait_s=0.3)
    started, done = threading.Event(), threading.Event()

    def analysis() -> None:
        with cache.lease(a):
            started.set()
            done.wait(30)

    t = threading.Thread(target=analysis)
    t.start()
    try:
        started.wait(30)
        t0 = time.monotonic()
        with pytest.raises(ModelBudgetError, match=r"in use by other sessions' running analyses: model_a"):
            cache.get_or_load(b)
        assert time.monotonic() - t0 >= 0.3  # it waited before giving up
        assert cache.specs() == [a] and cache.used("cpu") == size
    finally:
        done.set()
        t.join(30)
    cache.get_or_load(b)  # the analysis is over: now A makes room
    assert cache.specs() == [b]


def test_a_pair_that_does_not_fit_together_is_refused_at_once(folders, size):
    """The thread itself uses A (checkpoint A of the same run): waiting cannot help, so B is refused at once."""
    cache = cache_of(1.5 * size, wait_s=30)
    t0 = time.monotonic()
    with cache.lease(folders["a"]), pytest.raises(ModelBudgetError, match="in use by this session"):
        cache.get_or_load(folders["b"])
    assert time.monotonic() - t0 < 5


def test_a_threads_hold_lasts_until_the_thread_ends_and_a_held_lock_counts_as_in_use(folders, size):
    """The app's path: a script thread holds what it loaded until it ends (or release_thread at its next run)."""
    a, b = folders["a"], folders["b"]
    cache = cache_of(1.5 * size, wait_s=0.2)
    loaded, finish = threading.Event(), threading.Event()

    def session() -> None:
        cache.get_or_load(a, hold=True)
        loaded.set()
        finish.wait(30)

    t = threading.Thread(target=session)
    t.start()
    loaded.wait(30)
    assert cache.in_use(a)
    with pytest.raises(ModelBudgetError):
        cache.get_or_load(b)
    finish.set()
    t.join(30)
    assert not cache.in_use(a)

    # A forward pass in another thread (the model's lock taken) also keeps the model.
    lock_b = cache.get_or_load(b).lock
    holding, release = threading.Event(), threading.Event()

    def forward() -> None:
        with lock_b:
            holding.set()
            release.wait(30)

    t = threading.Thread(target=forward)
    t.start()
    holding.wait(30)
    try:
        with pytest.raises(ModelBudgetError):
            cache.get_or_load(a)
        assert cache.specs() == [b]
    finally:
        release.set()
        t.join(30)
    cache.get_or_load(b, hold=True)
    cache.release_thread()
    assert not cache.in_use(b)


# ------------------------------------------------------------------------------------------------------ the app
needs_zoo = pytest.mark.skipif(not all((zoo_dir() / n / "config.json").is_file()
                                       for n in ("gpt2-world-base", "llama-world-base")),
                               reason="demo zoo not trained yet")


@needs_zoo
def test_the_app_says_which_model_it_freed_and_refuses_one_larger_than_the_budget(monkeypatch, repo_root):
    from streamlit.testing.v1 import AppTest

    gpt2, llama = ModelSpec("gpt2-world-base"), ModelSpec("llama-world-base")
    both = estimate_bytes(gpt2).nbytes + estimate_bytes(llama).nbytes
    budget = int(0.8 * both)  # room for either demo model, not both
    monkeypatch.setattr(MC, "_SHARED", ModelCache(Budget(setting=f"{budget}B")))
    at = AppTest.from_file(str(repo_root / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Weights in memory"] == format_bytes(MC.shared_cache().nbytes(gpt2))
    assert any(f"Model cache: 1 model, {format_bytes(MC.shared_cache().used('cpu'))} of the "
               f"{format_bytes(budget)} budget on cpu (gpt2-world-base)" in c.value for c in at.caption)
    assert at.number_input(key="model_budget_cpu").value == pytest.approx(budget / 1e9, abs=1e-3)

    at.selectbox(key="model_choice_A").set_value("llama-world-base")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Freed gpt2-world-base" in t.value and "llama-world-base" in t.value for t in at.toast)
    assert MC.shared_cache().specs() == [llama]

    # Lowered in the sidebar below the model's size: the cache frees it, and loading it again is refused.
    at.number_input(key="model_budget_cpu").set_value(0.002).run()
    assert not at.exception
    assert any(f"llama-world-base needs {format_bytes(estimate_bytes(llama).nbytes)} but the model budget on cpu "
               "is 2 MB" in e.value for e in at.error), [e.value for e in at.error]
    assert MC.shared_cache().specs() == []


# --------------------------------------------------------------------------------------------------------- soak
@pytest.mark.slow
def test_soak_loading_models_in_a_loop_keeps_rss_under_the_budget(tmp_path):
    """Five ~40 MB models, loaded round after round under a budget that holds two, a lens on each: the process's RSS
    stays under its starting level + the budget + a fixed overhead (without eviction it would grow by ~200 MB)."""
    psutil = pytest.importorskip("psutil")
    proc = psutil.Process()
    specs = [ModelSpec(str(write_model_folder(tmp_path / f"m{i}", "llama", d=512, layers=5, heads=4,
                                                intermediate_size=1024)))
             for i in range(5)]
    one = estimate_bytes(specs[0]).nbytes
    assert 30e6 < one < 60e6
    budget = int(2.2 * one)
    cache = cache_of(budget)
    # Warm up (imports, allocator arenas, lens buffers), then start from an empty cache.
    L.lens_trace(cache.get_or_load(specs[0]), PROMPTS, k=3)
    cache.clear()
    gc.collect()
    MC._trim_heap()
    base = proc.memory_info().rss
    overhead = 64e6  # loader transients, lens buffers, allocator slack
    peak, stop = [base], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    after: list[int] = []
    t0 = time.monotonic()
    try:
        for _ in range(3):
            for spec in specs:
                lm = cache.get_or_load(spec)
                trace = L.lens_trace(lm, PROMPTS, k=3)
                assert np.isfinite(trace.entropy[..., :3]).all()  # positions past a prompt's end are NaN
                del lm, trace
                assert cache.used("cpu") <= budget
                after.append(proc.memory_info().rss)
    finally:
        stop.set()
        sampler.join(5)
    assert time.monotonic() - t0 < 60
    assert len(cache.specs()) == 2
    worst = max(after)
    assert worst <= base + budget + overhead, (
        f"RSS after a load reached {(worst - base) / 1e6:.0f} MB over the start; budget {budget / 1e6:.0f} MB")
    assert peak[0] <= base + budget + one + overhead, (
        f"RSS peaked {(peak[0] - base) / 1e6:.0f} MB over the start; budget {budget / 1e6:.0f} MB")

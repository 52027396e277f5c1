"""Which models are loaded: the sidebar picker for checkpoint A (and optional B) and the model cache.

Pages call ``require_models()`` to get the loaded pair; they never load models themselves. Models live in
analysis.models.cache's shared cache (all sessions), bounded by a memory budget per device that the sidebar's
Memory options change. A script run holds the models it loads, so another session's load never evicts them
under a running analysis; the holds end with the run.
"""
from __future__ import annotations

import streamlit as st

from analysis.core.errors import LogitscopeError
from analysis.core.loading import DEFAULT_MODEL, LoadedModel, ModelSpec, resolve_device
from analysis.core.paths import zoo_models
from analysis.models.cache import DeviceUse, Eviction, shared_cache
from analysis.models.card import ModelCard, model_card
from analysis.models.catalog import builtin_models
from analysis.models.memory import device_key
from analysis.models.pair import ModelPair  # noqa: F401  (pages import it from here)
from components.links import apply_model_link, sync_model_link

OTHER = "Other: hub id or local folder…"
KEY_SPECS = {"A": "logitscope_spec_A", "B": "logitscope_spec_B"}
KEY_USE_B = "logitscope_use_B"
KEY_BUDGET_NOTES = "logitscope_budget_notes"


def _in_script_run() -> bool:
    """True in a Streamlit script thread (a session's run), False in other threads (tests, workers)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    return get_script_run_ctx(suppress_warning=True) is not None


def load_cached(spec: ModelSpec, on_evict=None) -> tuple[LoadedModel, ModelCard]:
    """The model for ``spec`` from the shared, memory-bounded cache (loaded once for all browser sessions) and its
    card; raises LogitscopeError (ModelBudgetError when it does not fit). A script run holds what it loads."""
    cache = shared_cache()
    lm = cache.get_or_load(spec, hold=_in_script_run(), on_evict=on_evict)
    return lm, cache.attach(spec, "card", lambda: model_card(lm))


def cache_use(device: str) -> DeviceUse | None:
    """The model cache's use of a device's budget (None when the budget setting is malformed)."""
    try:
        return shared_cache().usage(device_key(device))
    except LogitscopeError:
        return None


def default_spec(which: str) -> ModelSpec | None:
    """The starting spec: the GPT-2-style demo base for A, its tuned sibling for B."""
    zoo = zoo_models()
    if which == "A":
        return ModelSpec(DEFAULT_MODEL if DEFAULT_MODEL in zoo else (zoo[0] if zoo else DEFAULT_MODEL))
    tuned = DEFAULT_MODEL.replace("-base", "-tuned")
    return ModelSpec(tuned if tuned in zoo else (zoo[0] if zoo else DEFAULT_MODEL))


def current_spec(which: str) -> ModelSpec | None:
    """The spec chosen for A or B (None for B when comparison is off)."""
    if which == "B" and not st.session_state.get(KEY_USE_B, False):
        return None
    return st.session_state.get(KEY_SPECS[which]) or default_spec(which)


def _spec_form(which: str) -> None:
    """The sidebar form for one checkpoint; a submitted form replaces the spec in session state."""
    cur = current_spec(which) or default_spec(which)
    builtin = builtin_models()
    options = list(builtin) + [OTHER]
    listed = next((label for label, sp in builtin.items()
                   if cur is not None and (sp.source, sp.adapter) == (cur.source, cur.adapter)), None)
    with st.form(f"model_form_{which}", border=False):
        choice = st.selectbox(f"Checkpoint {which}", options,
                              index=options.index(listed) if listed else len(builtin), key=f"model_choice_{which}",
                              help="A demo model trained by Logitscope, the real SmolLM2-135M-Instruct (and its "
                                   "grumpy LoRA) installed by make setup, or any causal LM.")
        other = st.text_input("Hub id, local folder or .gguf file", value="" if listed else (cur.source if cur else ""),
                              key=f"model_other_{which}", placeholder="e.g. gpt2, /models/llama-3-8b or model.gguf",
                              help="Used when 'Other' is selected. Offline, pass a local folder or a .gguf file.")
        with st.expander("Options", expanded=False):
            revision = st.text_input("Revision", value=(cur.revision or "") if cur else "", key=f"model_rev_{which}")
            lora = st.text_input("LoRA adapter folder (optional)",
                                 value=(cur.adapter or "") if cur and not listed else "",
                                 key=f"model_lora_{which}")
            c1, c2 = st.columns(2)
            device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key=f"model_device_{which}")
            dtype = c2.selectbox("Dtype", ["auto", "float32", "bfloat16", "float16"], key=f"model_dtype_{which}")
            allow_pickle = st.checkbox("Allow pickle weights (.bin)", key=f"model_pickle_{which}",
                                       help="Pickle files can run arbitrary code when loaded. Only for trusted checkpoints.")
            remote = st.checkbox("Trust remote code", key=f"model_remote_{which}",
                                 help="Runs Python code shipped with the checkpoint. Only for trusted checkpoints.")
        if st.form_submit_button(f"Load {which}", use_container_width=True):
            picked = builtin.get(choice) if choice != OTHER else None
            source = other.strip() if picked is None else picked.source
            st.session_state[KEY_SPECS[which]] = ModelSpec(
                source=source, revision=revision.strip() or None, dtype=dtype, device=device,
                adapter=lora.strip() or (picked.adapter if picked else None), allow_pickle=allow_pickle,
                trust_remote_code=remote)
    if st.session_state.get(f"model_pickle_{which}"):
        st.warning("Pickle weights allowed: loading them can execute code.", icon="⚠️")
    if st.session_state.get(f"model_remote_{which}"):
        st.warning("Remote code trusted: the checkpoint's Python code will run.", icon="⚠️")


def _budget_key(device: str) -> str:
    return f"model_budget_{device}"


def _set_budget(device: str) -> None:
    """on_change of a budget input: apply it to the shared cache; what it frees is told on the next run."""
    gb = st.session_state.get(_budget_key(device))
    if gb:
        notes = shared_cache().set_budget(device, int(float(gb) * 1e9))
        st.session_state[KEY_BUDGET_NOTES] = [n.message() for n in notes]


def _memory_options() -> None:
    """The sidebar's Memory options: the model budget per device (shared by every session) and the cache's use."""
    cache = shared_cache()
    try:
        auto = device_key(resolve_device("auto"))
    except LogitscopeError:
        auto = "cpu"
    with st.expander("Memory", expanded=False):
        for device in sorted({auto, *cache.devices()}):
            try:
                budget = cache.budget_for(device)
            except LogitscopeError as err:
                st.error(str(err))
                continue
            key = _budget_key(device)
            if key not in st.session_state:
                st.session_state[key] = round(budget / 1e9, 3)
            st.number_input(
                f"Model budget on {device} (GB)", min_value=0.001, step=0.5, format="%.3f", key=key,
                on_change=_set_budget, args=(device,),
                help="Memory the cached models may take on this device, shared by every session of this server. "
                     "Loading a model that does not fit frees the least recently used ones not in use; a model "
                     "larger than the whole budget is refused. Default: LOGITSCOPE_MODEL_BUDGET, else "
                     "60% of the memory available when the device was first used.")
            use = cache.usage(device)
            st.caption(f"In use: {use.text()}" + (f" ({', '.join(use.models)})" if use.models else ""))
        for note in st.session_state.pop(KEY_BUDGET_NOTES, []):
            st.caption(note)


def sidebar_model_picker() -> None:
    """Draw the A/B pickers in the sidebar (called once by app.py on every page)."""
    shared_cache().release_thread()  # this run holds only the models it loads itself
    apply_model_link(KEY_SPECS, KEY_USE_B)
    with st.sidebar:
        st.subheader("Models")
        _spec_form("A")
        st.toggle("Compare with checkpoint B", key=KEY_USE_B)
        if st.session_state.get(KEY_USE_B):
            _spec_form("B")
        _memory_options()
        from components.backend_ui import backend_sidebar

        backend_sidebar()
    sync_model_link(current_spec("A"), current_spec("B"))


def _try_load(which: str, spec: ModelSpec) -> tuple[LoadedModel, ModelCard] | None:
    notes: list[Eviction] = []
    try:
        with st.spinner(f"Loading {spec.label}…"):
            return load_cached(spec, on_evict=notes.append)
    except LogitscopeError as err:
        st.error(f"Checkpoint {which}: {err}")
    except Exception as err:  # last line of defence: a library error still becomes a message, not a traceback
        st.error(f"Checkpoint {which}: could not load '{spec.source}': {type(err).__name__}: {err}")
    finally:
        for note in notes:
            st.toast(note.message(), icon="♻️")
    return None


def loaded_models() -> ModelPair | None:
    """Load (cached) the chosen checkpoints; errors are shown and give None for A (B is then just dropped)."""
    spec_a = current_spec("A")
    got_a = _try_load("A", spec_a) if spec_a else None
    if got_a is None:
        return None
    spec_b = current_spec("B")
    got_b = _try_load("B", spec_b) if spec_b else None
    if got_b is None:
        return ModelPair(got_a[0], got_a[1])
    return ModelPair(got_a[0], got_a[1], got_b[0], got_b[1])


def require_models() -> ModelPair:
    """The loaded pair, or stop the page with a message saying how to fix the model choice."""
    pair = loaded_models()
    if pair is None:
        st.info("Pick a model in the sidebar to continue.")
        st.stop()
    return pair

"""Which models are loaded: the sidebar picker for checkpoint A (and optional B) and a bounded model cache.

Pages call ``require_models()`` to get the loaded pair; they never load models themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from analysis.errors import LogitscopeError
from analysis.loading import DEFAULT_MODEL, LoadedModel, ModelSpec, builtin_models, load_model, zoo_models
from analysis.model_card import ModelCard, model_card

OTHER = "Other: hub id or local folder…"
KEY_SPECS = {"A": "logitscope_spec_A", "B": "logitscope_spec_B"}
KEY_USE_B = "logitscope_use_B"


@st.cache_resource(max_entries=4, show_spinner=False)
def load_cached(spec: ModelSpec) -> tuple[LoadedModel, ModelCard]:
    """Load a model once per spec for all browser sessions (at most 4 kept); raises LogitscopeError."""
    lm = load_model(spec)
    return lm, model_card(lm)


@dataclass(frozen=True)
class ModelPair:
    """The loaded checkpoint A and optional checkpoint B with their cards."""

    a: LoadedModel
    card_a: ModelCard
    b: LoadedModel | None = None
    card_b: ModelCard | None = None

    @property
    def compare(self) -> bool:
        """True when checkpoint B is loaded."""
        return self.b is not None

    def items(self) -> list[tuple[str, LoadedModel, ModelCard]]:
        """[("A", lm, card), ("B", lm, card)] for the loaded checkpoints."""
        out = [("A", self.a, self.card_a)]
        if self.b is not None and self.card_b is not None:
            out.append(("B", self.b, self.card_b))
        return out


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


def sidebar_model_picker() -> None:
    """Draw the A/B pickers in the sidebar (called once by app.py on every page)."""
    with st.sidebar:
        st.subheader("Models")
        _spec_form("A")
        st.toggle("Compare with checkpoint B", key=KEY_USE_B)
        if st.session_state.get(KEY_USE_B):
            _spec_form("B")


def _try_load(which: str, spec: ModelSpec) -> tuple[LoadedModel, ModelCard] | None:
    try:
        with st.spinner(f"Loading {spec.label}…"):
            return load_cached(spec)
    except LogitscopeError as err:
        st.error(f"Checkpoint {which}: {err}")
    except Exception as err:  # last line of defence: a library error still becomes a message, not a traceback
        st.error(f"Checkpoint {which}: could not load '{spec.source}': {type(err).__name__}: {err}")
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

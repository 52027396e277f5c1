"""Home: what Logitscope is, and a card for each loaded checkpoint (shape, device, self-check)."""
from __future__ import annotations

import streamlit as st

from analysis.model_card import ModelCard
from components.model_state import require_models
from components.shell import ensure_app_shell

ensure_app_shell()

st.title("Logitscope")
st.caption("See inside a causal language model: how the next-token prediction forms layer by layer, which "
           "components push it, which directions carry a trait, and what changed between two checkpoints.")


def render_card(which: str, card: ModelCard) -> None:
    """One model card: identity, shape, placement and the self-check verdict."""
    st.subheader(f"Checkpoint {which}: {card.name}", anchor=False)
    st.caption(f"{card.architecture} · `{card.model_type}`" + (f" · revision {card.revision}" if card.revision else "")
               + (f" · LoRA {card.adapter}" if card.adapter else ""))
    c = st.columns(4)
    c[0].metric("Layers", card.n_layers)
    c[1].metric("Width (d_model)", card.d_model)
    c[2].metric("Heads", card.n_heads)
    c[3].metric("Vocabulary", f"{card.vocab_size:,}")
    c = st.columns(4)
    c[0].metric("Parameters", f"{card.n_params / 1e6:.2f} M")
    c[1].metric("Final norm", card.norm_kind)
    c[2].metric("Device · dtype", f"{card.device} · {card.dtype}")
    c[3].metric("Weights in memory", f"{card.memory_mb:.1f} MB")
    st.caption(f"Context {card.context_length} tokens"
               + (" · parallel residual" if card.parallel_residual else "")
               + (f" · logit soft-cap {card.softcap:g}" if card.softcap else ""))
    if card.check.passed:
        st.success(card.check.message, icon="✅")
    else:
        st.error(card.check.message, icon="❌")


pair = require_models()
cols = st.columns(2) if pair.compare else [st.container()]
for (which, _lm, card), col in zip(pair.items(), cols):
    with col, st.container(border=True):
        render_card(which, card)

st.markdown("**Pages**: use the navigation on the left. Layer 0 is the embedding output; layer L is the last "
            "block's output before the final norm. Every figure can be exported (PNG, SVG, PDF, HTML) with its data.")

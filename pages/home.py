"""Home: what Logitscope is, and a card for each loaded checkpoint (shape, device, self-check)."""
from __future__ import annotations

import streamlit as st

from analysis.models.card import ModelCard
from analysis.models.memory import format_bytes
from components.charts.text import md_literal
from components.model_state import cache_use, require_models
from components.shell import ensure_app_shell


def render_card(which: str, card: ModelCard, per_row: int = 4) -> None:
    """One model card: identity, shape, placement and the self-check verdict (``per_row`` metrics a row)."""
    st.subheader(f"Checkpoint {which}: {card.name}", anchor=False)
    st.caption(f"{card.architecture} · `{card.model_type}`" + (f" · revision {card.revision}" if card.revision else "")
               + (f" · LoRA {card.adapter}" if card.adapter else ""))
    metrics = [("Layers", card.n_layers), ("Width (d_model)", card.d_model), ("Heads", card.n_heads),
               ("Vocabulary", f"{card.vocab_size:,}"), ("Parameters", f"{card.n_params / 1e6:.2f} M"),
               ("Final norm", card.norm_kind), ("Device · dtype", f"{card.device} · {card.dtype}"),
               ("Weights in memory", format_bytes(card.memory_bytes))]
    for start in range(0, len(metrics), per_row):
        for col, (label, value) in zip(st.columns(per_row), metrics[start:start + per_row], strict=False):  # short last row
            col.metric(label, value)
    st.caption(f"Context {card.context_length} tokens"
               + (" · parallel residual" if card.parallel_residual else "")
               + (f" · logit soft-cap {card.softcap:g}" if card.softcap else "")
               + f" · tokenizer adds BOS: {'yes' if card.adds_bos else 'no'}"
               + f" · chat template: {'yes' if card.chat_template else 'no'}")
    use = cache_use(card.device)
    if use is not None:
        st.caption(f"Model cache: {use.text()}"
                   + (f" ({', '.join(use.models)})" if use.models else ""))
    if card.source_note:
        st.info(md_literal(card.source_note), icon="ℹ️")
    if card.check.passed:
        st.success(card.check.message, icon="✅")
    else:
        st.error(card.check.message, icon="❌")


def main() -> None:
    ensure_app_shell()
    st.title("Logitscope")
    st.caption("See inside a causal language model: how the next-token prediction forms layer by layer, which "
               "components push it, which directions carry a trait, and what changed between two checkpoints.")
    pair = require_models()
    cols = st.columns(2) if pair.compare else [st.container()]
    for (which, _lm, card), col in zip(pair.items(), cols, strict=True):
        with col, st.container(border=True):
            render_card(which, card, per_row=2 if pair.compare else 4)
    st.markdown("**Pages**: use the navigation on the left. Layer 0 is the embedding output; layer L is the last "
                "block's output before the final norm. Every figure can be exported (PNG, SVG, PDF, HTML) with its data.")


main()

"""The Logit lens page's tuned-lens panel: which checkpoints have a trained translator, a "Train tuned lens" button
with a progress bar (on the demo corpus or an uploaded .txt), and the cache stamps that key the page's results.

Streamlit wiring only; the training is analysis.lens.tuned.fit, the translator goes into its cache.
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from analysis.core.errors import InputError
from analysis.lens import tuned as TL
from analysis.models.pair import stage
from components import page_kit as kit
from components.charts.text import md_literal

DEMO, UPLOAD = "Demo corpus", "Upload a .txt"


def stamps(pair: Any) -> tuple:
    """((which, cache stamp), ...): part of the cache key, so a retrained translator recomputes the lens."""
    return tuple((which, TL.cache_stamp(lm)) for which, lm, _ in pair.items())


def _header(lm: Any) -> dict:
    """The cached translator file's metadata (its header only, not the weights)."""
    from safetensors import safe_open

    with safe_open(str(TL.cache_path(lm)), framework="pt") as f:
        return dict(f.metadata() or {})


def _corpus(key: str) -> str | None:
    source = st.radio("Training corpus", [DEMO, UPLOAD], key=f"{key}_tuned_source", horizontal=True,
                      help="one text per line; every 5th line is held out for the KL / cross-entropy curve")
    if source == DEMO:
        return TL.DEMO_CORPUS.read_text(encoding="utf-8")
    up = st.file_uploader("Corpus (.txt, UTF-8, one text per line)", type=["txt"], key=f"{key}_tuned_corpus")
    if up is None:
        st.caption("Upload a .txt file to train on it.")
        return None
    try:
        return up.getvalue().decode("utf-8")
    except UnicodeDecodeError:
        st.error("The corpus is not UTF-8 text.")
        return None


def panel(pair: Any, key: str) -> bool:
    """The tuned-lens panel; trains on a button press (the missing translators, else all of them again) and returns
    True when it did."""
    have = {which: TL.cache_stamp(lm) is not None for which, lm, _ in pair.items()}
    missing = [w for w, ok in have.items() if not ok]
    with st.expander("Tuned lens translators", expanded=bool(missing)):
        for which, lm, card in pair.items():
            if have[which]:
                with kit.user_errors(stop=False):
                    meta = _header(lm)
                    st.caption(md_literal(f"{which}: {card.name}: trained ({meta['steps']} steps, {meta['positions']} "
                                          f"positions, {meta['seconds']} s; corpus {meta['corpus_sha256'][:12]}…)"))
            else:
                st.caption(md_literal(f"{which}: {card.name}: no tuned lens yet."))
        if missing:
            st.info("The tuned lens needs a trained translator per layer: press Train tuned lens (seconds for the "
                    "demo models, a few minutes for SmolLM2-135M on a CPU).")
        corpus = _corpus(key)
        clicked = st.button("Train tuned lens" if missing else "Retrain tuned lens", key=f"{key}_train_tuned",
                            disabled=corpus is None)
    if not clicked or corpus is None:
        return False
    todo = [(w, lm) for w, lm, _ in pair.items() if w in missing or not missing]
    with kit.user_errors(), kit.progress_bar("Training the tuned lens…") as report:
        if not TL.corpus_lines(corpus):
            raise InputError("The corpus is empty: give a .txt file with one text per line.")
        for i, (which, lm) in enumerate(todo):
            tr = TL.fit(lm, corpus, progress=stage(report, i / len(todo), (i + 1) / len(todo), which))
            TL.store(tr, lm)
            st.success(f"{which}: tuned lens trained in {tr.seconds:.1f} s ({tr.steps} steps).")
    return True

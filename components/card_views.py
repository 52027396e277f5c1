"""The neuron card (confidence neurons page) and the vector card (steering page): their widgets, cached computation
and display, A and B side by side where the page has B. Every token text is shown in dataframes or plotly figures
(escaped), never as HTML."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from components import exporting
from components import page_kit as kit
from components.reports import Report
from components.reports import neurons as RN
from components.settings_ui import widget


# ------------------------------------------------------------------------------------------ neuron card
def neuron_card_widgets(key: str, scan: RN.ScanResults) -> tuple[str, int, int, str]:
    """The card's widgets: (neuron text, k, window, the default neuron); the box starts at A's top entropy neuron."""
    default = RN.card_neuron(RN.NeuronsSettings(), scan)
    kit.model_default(f"{key}_card_neuron", default)
    c1, c2, c3 = st.columns([2, 1, 1])
    text = widget(RN.NeuronsSettings, "card_neuron", key, c1)
    k = widget(RN.NeuronsSettings, "card_k", key, c2)
    window = widget(RN.NeuronsSettings, "card_window", key, c3)
    return text, k, window, default


def table_download(frame: pd.DataFrame, name: str, key: str) -> None:
    """A CSV download button for one table."""
    st.download_button("CSV", data=exporting.table_csv(frame), file_name=exporting.safe_filename(name, "csv"),
                       mime=exporting.MIME_TYPES["csv"], key=key, on_click="ignore", icon=":material/download:")


def show_neuron_card(rep: Report, pair: Any, key: str, bundle: str) -> None:
    """Per checkpoint: the top tokens, the top activating reference prompts with ⟦token⟧ marked, the histogram."""
    for note in rep.notes:
        if ", neuron card: " in note:
            st.info(note)  # engine sentences, no user text
    for label, _lm, _card, col in kit.compare_columns(pair):
        which = label.split(":")[0]
        with col:
            st.subheader(label, anchor=False)
            if f"card_tokens_{which}" not in rep.figures:
                continue
            kit.show(rep, f"card_tokens_{which}", key, bundle=bundle)
            st.caption("Top activating reference prompts (each at its largest activation, marked ⟦ ⟧):")
            frame = rep.tables[f"card_examples_{which}"]
            st.dataframe(frame, hide_index=True, key=f"{key}_card_examples_{which}")
            table_download(frame, f"{bundle}_card_examples_{which}", f"{key}_card_examples_dl_{which}")
            kit.show(rep, f"card_histogram_{which}", key, bundle=bundle)


# ------------------------------------------------------------------------------------------ vector card
def show_vector_card(rep: Report, key: str, bundle: str) -> None:
    """The vector card's two figures side by side, each with its export."""
    st.caption("Vector card: the tokens v points toward through the unembedding, W_U·(γ ⊙ v) (the final norm's gain, "
               "and LayerNorm's centring, applied to v as a direction; no norm scale), and where the contrast groups "
               "sit along v.")
    names = [n for n in ("vector_tokens", "vector_groups") if n in rep.figures]
    kit.show_row(rep, names, key, bundle=bundle)

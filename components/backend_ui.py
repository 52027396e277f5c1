"""The sidebar's "Compute backend" (this process, or Ray at an address) and the backend of a page's computations.

Stored in st.session_state (per browser session). ``page_kit.progress_bar`` runs every long computation inside
``use_backend(session_backend())``, so the engine shards its prompts on Ray when it is chosen; the results, and so
the st.cache_data entries, are the same either way (docs/scaling.md).
"""
from __future__ import annotations

import streamlit as st

from analysis.compute.backend import PROCESS, Backend, check_address
from analysis.compute.choose import parse_backend
from analysis.core.errors import BackendError

KEY_KIND = "backend_kind"
KEY_ADDRESS = "backend_address"
PROCESS_LABEL, RAY_LABEL = "This process", "Ray"
DEFAULT_ADDRESS = "local:2"


def backend_sidebar() -> None:
    """The sidebar's Compute backend expander (a choice and, for Ray, the cluster address)."""
    with st.expander("Compute backend"):
        kind = st.radio("Run the analyses in", (PROCESS_LABEL, RAY_LABEL), key=KEY_KIND,
                        help="Ray splits the prompts into shards and runs them on a pool of Ray workers, each with "
                             "its own copy of the model (one GPU each when there are GPUs); the results are the "
                             "same. Lens, OOD, steering vectors and the neuron reference means shard; the other "
                             "analyses run in this process.")
        if kind == RAY_LABEL:
            if KEY_ADDRESS not in st.session_state:
                st.session_state[KEY_ADDRESS] = DEFAULT_ADDRESS
            address = st.text_input("Ray address", key=KEY_ADDRESS,
                                    help="local:N starts N workers on this machine; auto joins a cluster started "
                                         "here with `ray start --head`; ray://HOST:PORT connects to a remote "
                                         "cluster's client port (usually 10001).")
            try:
                check_address(address)
            except BackendError as err:
                st.caption(str(err))


def session_backend() -> Backend:
    """The backend this session chose (this process unless Ray is chosen); BackendError for a bad address."""
    if st.session_state.get(KEY_KIND) != RAY_LABEL:
        return PROCESS
    return parse_backend(st.session_state.get(KEY_ADDRESS) or DEFAULT_ADDRESS)


def session_backend_label() -> str:
    """metadata.json's "backend" for this session: 'process' or 'ray <address>'."""
    try:
        return session_backend().label
    except BackendError:
        return PROCESS.label

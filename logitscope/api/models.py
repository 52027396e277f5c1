"""Models for the Python API: ``load`` (a name, folder, .gguf file or hub id, as the app and the CLI load it) and
``wrap`` (a transformers model the caller already holds, used where it is: no copy, no move, its hooks kept)."""
from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel, load_model, resolve_adapter
from analysis.models.card import ModelCard, model_card
from analysis.models.catalog import named_spec
from analysis.models.pair import ModelPair

_CARDS: dict[int, tuple[weakref.ref, ModelCard]] = {}  # id(LoadedModel) -> (the model, its card)


def load(spec: str, *, revision: str | None = None, adapter: str | None = None, dtype: str = "auto",
         device: str = "auto", allow_pickle: bool = False, trust_remote_code: bool = False) -> LoadedModel:
    """The model the app and the CLI load for ``spec``: a zoo name (gpt2-world-base), a real model's name
    (smollm2-135m-instruct), a local folder or .gguf file, or a hub id; ``adapter`` a LoRA folder merged into it."""
    s = named_spec(spec, revision=revision, dtype=dtype, device=device, allow_pickle=allow_pickle,
                   trust_remote_code=trust_remote_code)
    if adapter is not None:
        s = replace(s, adapter=adapter)
    return load_model(s)


def wrap(model: Any, tokenizer: Any, name: str | None = None) -> LoadedModel:
    """A transformers causal LM and its tokenizer as the engine's LoadedModel, without changing them: the weights
    stay where they are (no copy, no move between devices, no dtype change), the model's own hooks stay attached,
    its train/eval mode and requires_grad flags are left as they are (each method runs it in eval mode without
    gradients and restores both after). A tokenizer without a pad token is copied and given its EOS as pad token; the caller's is not
    touched. The self-check runs now: its result is on ``card(lm)``. ``name`` defaults to the path the model was
    loaded from (config._name_or_path), which is what a saved bundle's rerun loads."""
    parameters = getattr(model, "parameters", None)
    if not callable(parameters) or getattr(model, "config", None) is None:
        raise InputError(f"wrap() takes a transformers causal LM (a PreTrainedModel), got {type(model).__name__}.")
    first = next(iter(model.parameters()), None)
    if first is None:
        raise InputError("wrap() got a model without parameters.")
    if tokenizer is None or not callable(tokenizer):
        raise InputError("wrap() needs the model's tokenizer as its second argument.")
    if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token_id", None) is not None:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    label = name or getattr(model.config, "_name_or_path", None) or "in-memory"
    lm = LoadedModel(spec=named_spec(str(label)), model=model, tokenizer=tokenizer, adapter=resolve_adapter(model),
                     device=first.device, dtype=first.dtype)
    with evaluation(lm):  # the self-check sees the model as every method runs it (no dropout)
        c = model_card(lm)
    _remember(lm, replace(c, source_note="wrapped in memory: the weights as the caller holds them"))
    return lm


def card(lm: LoadedModel) -> ModelCard:
    """The model's card (architecture, sizes, the self-check's result), computed once per model."""
    entry = _CARDS.get(id(lm))
    if entry is not None and entry[0]() is lm:
        return entry[1]
    return _remember(lm, model_card(lm))


def _remember(lm: LoadedModel, c: ModelCard) -> ModelCard:
    key = id(lm)
    _CARDS[key] = (weakref.ref(lm, lambda _ref: _CARDS.pop(key, None)), c)
    return c


def pair_of(a: LoadedModel, b: LoadedModel | None = None) -> ModelPair:
    """The ModelPair of the page and the CLI for A (and B), with their cards."""
    for which, lm in (("a", a), ("b", b)):
        if lm is not None and not isinstance(lm, LoadedModel):
            raise InputError(f"Checkpoint {which.upper()} must come from ls.load(...) or ls.wrap(model, tokenizer), "
                             f"got {type(lm).__name__}.")
    if b is None:
        return ModelPair(a, card(a))
    return ModelPair(a, card(a), b, card(b))


@contextmanager
def evaluation(*lms: LoadedModel) -> Iterator[None]:
    """Every model as the engine runs it for the block (eval mode, no parameter requiring gradients, as
    a loaded model is); afterwards each model's train mode and each parameter's requires_grad are as they were."""
    models = [lm.model for lm in lms]
    training = [m for m in models if m.training]
    grads = [p for m in models for p in m.parameters() if p.requires_grad]
    for m in training:
        m.eval()
    for p in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in grads:
            p.requires_grad_(True)
        for m in training:
            m.train()

"""The project's one exception family: every message is written for the person using the app."""
from __future__ import annotations


class LogitscopeError(Exception):
    """Base class; str(err) is a complete, user-facing sentence (pages show it with st.error)."""


class ModelLoadError(LogitscopeError):
    """A model or tokenizer could not be loaded (missing folder, offline hub id, pickle-only weights...)."""


class UnsupportedArchitectureError(LogitscopeError):
    """The checkpoint's architecture is not in the adapter table, or lacks a part we need."""


class PromptSetError(LogitscopeError):
    """An uploaded or typed prompt set is malformed (encoding, size, rows, columns, context length)."""


class InputError(LogitscopeError):
    """A setting is out of range or inconsistent (layer index, target token, neuron index, alpha...)."""


class IncompatibleModelsError(LogitscopeError):
    """Two checkpoints cannot be compared the way that was asked (shapes or tokenizers differ)."""


class NumericalError(LogitscopeError):
    """A computation produced NaN or infinity (e.g. an extreme steering coefficient)."""


class ModelBudgetError(ModelLoadError):
    """A model does not fit in the memory budget for cached models (too large, or the budget is in use)."""


class BackendError(LogitscopeError):
    """The compute backend failed: a bad Ray address, an unreachable cluster, or a shard whose retries are spent."""


def brief(err: BaseException, limit: int = 240) -> str:
    """The first non-empty line of an exception's message (or its type), cut to ``limit`` characters: what a
    one-line error quotes of a library's multi-line message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"

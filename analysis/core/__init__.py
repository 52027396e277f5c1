"""The engine's foundation, imported by every other package and importing none of them: the exception family
(errors), architecture adapters, hooks, batching, the locked forward pass, the residual readout, tokens, loading a
model from a spec with its files checked first (files, gguf), where models live (paths), progress callbacks and
wording helpers. Its public API is its modules: ``from analysis.core.errors import InputError``.
"""
__all__ = ["architectures", "batching", "errors", "files", "forward", "gguf", "hooks", "loading", "paths", "progress",
           "readout", "tokens", "wording"]

"""Loaded models as the app and the CLI keep them: the shared cache under a memory budget (cache, memory), the model
card and its self-check (card, selfcheck), defaults that come from the model in front of the user (defaults), the
catalogue of built-in models (catalog, real), the checkpoint pair an analysis runs on (pair), tiny random models of
every architecture (tiny) and the weights' fingerprint (weights). Imports core/ and prompts/ only. Its public API is
its modules: ``from analysis.models.card import model_card``.
"""
__all__ = ["cache", "card", "catalog", "defaults", "memory", "pair", "real", "selfcheck", "tiny", "weights"]

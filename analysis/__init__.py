"""Logitscope's engine: torch, numpy and scikit-learn, never streamlit (docs/CONVENTIONS.md).

Packages, each importing only those above it:
- core/      errors, architectures, hooks, batching, forward, readout, tokens, loading (with its file checks), paths
- prompts/   prompt sets: parsing, validation, built-in sets, chat templates, context check, the local store
- models/    the model cache and budget, card and self-check, defaults from the model, catalogue, tiny models
- compute/   backends (this process or Ray actors) and the generic shard plan
- lens/, flow/, steering/, neurons/, shift/, ood/: one package per method, each importing only the four above
  (the one exception: shift/ uses the lens comparison for its per-layer lens KL); tests/test_code_health.py checks it.
- demo/      the synthetic world and the scripts that train the demo zoo and the real model's LoRA
"""

"""The models the sidebar lists and the CLI knows by name: the demo checkpoints, the converted real model and its
grumpy LoRA fine-tune (zoo/smollm2-grumpy-lora)."""
from __future__ import annotations

from typing import Any

from analysis.core.loading import ModelSpec
from analysis.core.paths import real_models, zoo_dir, zoo_models
from analysis.models.real import REAL_LORA, REAL_LORA_LABEL, REAL_MODEL, REAL_MODEL_LABEL


def builtin_models() -> dict[str, ModelSpec]:
    """What the sidebar lists, display label -> spec: the demo checkpoints, then the real model converted by
    `make setup` and its grumpy LoRA fine-tune (zoo/smollm2-grumpy-lora) when they are there."""
    out = {name: ModelSpec(name) for name in zoo_models()}
    if REAL_MODEL in real_models():
        out[REAL_MODEL_LABEL] = ModelSpec(REAL_MODEL)
        lora = zoo_dir() / REAL_LORA
        if (lora / "adapter_config.json").is_file():
            out[REAL_LORA_LABEL] = ModelSpec(REAL_MODEL, adapter=str(lora))
    return out


def named_spec(name: str, **options: Any) -> ModelSpec:
    """A spec for a name typed on the command line: 'smollm2-grumpy-lora' (or a sidebar label) gives its base
    model and adapter; anything else is a zoo name, real model, folder, .gguf file or hub id as given."""
    base = builtin_models().get(REAL_LORA_LABEL if name == REAL_LORA else name)
    if base is None:
        return ModelSpec(source=name, **options)
    return ModelSpec(source=base.source, adapter=base.adapter, **options)

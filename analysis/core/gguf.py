"""GGUF files: a header checked before anything is dequantised, its quantisation, the provenance a converted folder
records (logitscope_source.json) and the dequantising load by transformers' GGUF loader.

Any local .gguf file opens directly (``load_model`` dequantises it in memory) for the families transformers' GGUF
loader supports; analysis.models.real converts the real model's GGUF once to a plain safetensors folder.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch  # noqa: F401  (dtype objects)
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from analysis.core.errors import ModelLoadError, brief
from analysis.core.files import LIMITS, is_whole

SOURCE_FILE = "logitscope_source.json"


@dataclass(frozen=True)
class GGUFSource:
    """Where a model's weights came from when they were a GGUF file: name, sha256 and quantisation."""

    file: str
    sha256: str
    quantisation: str

    def note(self) -> str:
        """One sentence for the model card."""
        return (f"Dequantised from the GGUF file {self.file} ({self.quantisation} quantisation, sha256 "
                f"{self.sha256[:16]}…): the weights are the quantised values, not the original bf16 release.")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def gguf_quantisation(path: Path) -> str:
    """The dominant tensor type of the 2-D weights in a GGUF file (e.g. 'Q4_1'), read from its header."""
    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # a truncated or foreign file raises many types
        raise ModelLoadError(f"'{path.name}' is not a readable GGUF file: {brief(err)}") from err
    kinds = collections.Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2)
    return kinds.most_common(1)[0][0] if kinds else "unknown"


def read_source(folder: str | Path) -> GGUFSource | None:
    """The GGUF provenance recorded in a converted folder, or None for an ordinary model folder."""
    p = Path(folder) / SOURCE_FILE
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        return GGUFSource(file=str(d["file"]), sha256=str(d["sha256"]), quantisation=str(d["quantisation"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_gguf(path: Path, dtype: Any) -> tuple[Any, Any]:
    """(model, tokenizer) dequantised from a .gguf file by transformers; ModelLoadError with the reason."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"No such GGUF file: '{path}'.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    except Exception as err:  # noqa: BLE001 - the GGUF reader and transformers raise many types for bad files
        raise ModelLoadError(
            f"transformers could not dequantise '{path.name}': {brief(err)}. Its GGUF loader supports the Llama, Mistral, "
            "Qwen2, Gemma-2 and Phi-3 families among others."
        ) from err
    return model, tokenizer


GGUF_LIMITS = {"block_count": "num_hidden_layers", "embedding_length": "hidden_size",
               "attention.head_count": "num_attention_heads", "attention.head_count_kv": "num_key_value_heads",
               "feed_forward_length": "intermediate_size", "context_length": "max_position_embeddings"}


GGUF_BLOCK = re.compile(r"^blk\.(\d+)\.")


# ------------------------------------------------------------------------------------------------------------ GGUF
def check_gguf(path: Path) -> Any:
    """A .gguf file's reader, its header readable and its sizes within ``LIMITS`` and consistent with its tensor
    table (every block it declares has tensors); ModelLoadError naming the file otherwise."""
    try:
        reader = GGUFReader(str(path))
        arch_field = reader.fields.get("general.architecture")
        arch = arch_field.contents() if arch_field is not None else None
        values = {}
        for key, canonical in GGUF_LIMITS.items():
            field = reader.fields.get(f"{arch}.{key}")
            if field is not None:
                values[canonical] = (f"{arch}.{key}", field.contents())
        tensors = [(t.name, [int(s) for s in t.shape]) for t in reader.tensors]
    except Exception as err:  # noqa: BLE001 - a truncated or foreign file raises many types
        raise ModelLoadError(f"'{path.name}' is not a readable GGUF file ({brief(err)}).") from None
    if not isinstance(arch, str):
        raise ModelLoadError(f"'{path.name}' has no general.architecture: it is not a model GGUF file.")
    for canonical, (key, value) in values.items():
        _, lo, hi = LIMITS[canonical]
        if isinstance(value, list) and value and all(is_whole(v) for v in value):  # per-layer head counts
            value = max(value)
        if not is_whole(value) or not lo <= value <= hi:
            raise ModelLoadError(f"'{path.name}': {key} = {value!r} is outside {lo:,}..{hi:,}; no model this tool "
                                 "can open has that size.")
    blocks = {int(m.group(1)) for name, _ in tensors if (m := GGUF_BLOCK.match(name))}
    declared = values.get("num_hidden_layers", (None, None))[1]
    if declared and declared > (max(blocks) + 1 if blocks else 0):
        raise ModelLoadError(f"'{path.name}' says block_count = {declared}, but its tensor table holds "
                             f"{max(blocks) + 1 if blocks else 0} blocks.")
    return reader

"""Model files checked before anything is built from them: config.json, safetensors headers (and their shard index),
adapter folders and GGUF headers. A file that cannot be read, declares absurd sizes or disagrees with the weights
beside it is refused with the project's one-line ModelLoadError naming the file; nothing here reads the weights.

The sizes a config may declare (``LIMITS``) are far above any released model (the largest have about 130 layers,
width 25k, vocabulary 260k, context 10M) and far below what would build a model for minutes: a config saying
num_hidden_layers = 1,000,000 beside a tiny safetensors file is refused here, not after a long build.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.core.errors import ModelLoadError, brief

# name -> (synonyms in configs, lowest, highest); a size missing from a config is left to transformers' default.
LIMITS: dict[str, tuple[tuple[str, ...], int, int]] = {
    "num_hidden_layers": (("num_hidden_layers", "n_layer", "num_layers", "n_layers"), 1, 1024),
    "hidden_size": (("hidden_size", "n_embd", "d_model"), 1, 1 << 17),
    "vocab_size": (("vocab_size",), 1, 1 << 22),
    "num_attention_heads": (("num_attention_heads", "n_head"), 1, 1024),
    "num_key_value_heads": (("num_key_value_heads",), 1, 1024),
    "head_dim": (("head_dim",), 1, 1 << 12),
    "intermediate_size": (("intermediate_size", "n_inner", "ffn_dim"), 1, 1 << 20),
    "max_position_embeddings": (("max_position_embeddings", "n_positions", "n_ctx"), 1, 1 << 24),
}
ST_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1,
             "F6_E3M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 << 20  # bytes of JSON a safetensors header may take (real ones: tens of kB to a few MB)
MAX_JSON = 16 << 20  # bytes of a config.json, adapter_config.json or shard index
LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")
EMBEDDINGS = ("embed_tokens.weight", "wte.weight", "embed_in.weight", "word_embeddings.weight")


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors header: dtype, shape and byte range in the file's data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


# ------------------------------------------------------------------------------------------------------------ JSON
def read_json(path: Path, what: str = "") -> Any:
    """A small JSON file's content; ModelLoadError naming it when it is missing, too large, not UTF-8 or not JSON."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON:
            raise ModelLoadError(f"{path.name}{what} is {size:,} bytes: too large for a model's JSON file.")
        return json.loads(path.read_bytes().decode("utf-8"))
    except ModelLoadError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelLoadError(f"{path.name}{what} in '{path.parent}' is not readable JSON ({brief(err)}).") from None


def read_config(folder: Path) -> dict:
    """config.json of a model folder as a dict, with its declared sizes checked (``check_sizes``)."""
    path = folder / "config.json"
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"config.json in '{folder}' is not a JSON object (it holds a {type(cfg).__name__}).")
    if not isinstance(cfg.get("model_type", ""), str):
        raise ModelLoadError(f"config.json in '{folder}': model_type must be a string, got {cfg['model_type']!r}.")
    check_sizes(cfg, f"config.json in '{folder}'")
    return cfg


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def sizes_of(cfg: Mapping[str, Any]) -> dict[str, int]:
    """{canonical size name: value} of the sizes a config declares (the first synonym present, nested text_config
    and null values ignored)."""
    out: dict[str, Any] = {}
    for name, (keys, _, _) in LIMITS.items():
        for k in keys:
            if cfg.get(k) is not None:
                out[name] = cfg[k]
                break
    return out


def check_sizes(cfg: Mapping[str, Any], where: str) -> dict[str, int]:
    """The declared sizes, each an integer within ``LIMITS`` and consistent (heads divide the width unless head_dim
    is given; no more key/value heads than heads); ModelLoadError naming the first wrong one."""
    sizes = sizes_of(cfg)
    for name, value in sizes.items():
        _, lo, hi = LIMITS[name]
        key = next(k for k in LIMITS[name][0] if cfg.get(k) is not None)
        if not is_whole(value):
            raise ModelLoadError(f"{where}: {key} must be a whole number, got {value!r}.")
        if not lo <= value <= hi:
            raise ModelLoadError(f"{where}: {key} = {value:,} is outside {lo:,}..{hi:,}; no model this tool can "
                                 "open has that size.")
    heads, width = sizes.get("num_attention_heads"), sizes.get("hidden_size")
    if heads and width and "head_dim" not in sizes and width % heads:
        raise ModelLoadError(f"{where}: hidden_size {width} is not a multiple of num_attention_heads {heads} "
                             "(and no head_dim is given).")
    if heads and sizes.get("num_key_value_heads", 0) > heads:
        raise ModelLoadError(f"{where}: num_key_value_heads {sizes['num_key_value_heads']} is more than "
                             f"num_attention_heads {heads}.")
    return sizes


# ----------------------------------------------------------------------------------------------------- safetensors
def safetensors_tensors(path: Path) -> list[Tensor]:
    """The tensors a .safetensors file declares, checked against the file: header length and JSON, known dtypes,
    whole non-negative shapes, byte ranges that match the shape and lie inside the file without overlapping."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 2 <= n <= min(MAX_HEADER, size - 8):
                raise ModelLoadError(f"{name} in '{path.parent}' is not a safetensors file (its header length "
                                     f"{n:,} does not fit a {size:,}-byte file).")
            header = json.loads(f.read(n).decode("utf-8"))
    except ModelLoadError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ModelLoadError(f"{name} in '{path.parent}' has an unreadable header ({brief(err)}).") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{name} in '{path.parent}' has a header that is not a JSON object.")
    data = size - 8 - n
    tensors = [_tensor(name, key, info, data) for key, info in header.items() if key != "__metadata__"]
    last_end, last = 0, ""
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if t.begin < last_end:
            raise ModelLoadError(f"{name}: tensors '{last}' and '{t.name}' overlap in the file; it is damaged.")
        last_end, last = t.end, t.name
    return tensors


def _tensor(file: str, key: str, info: Any, data: int) -> Tensor:
    if not isinstance(info, dict):
        raise ModelLoadError(f"{file}: the header entry of tensor '{key}' is not an object.")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in ST_DTYPES:
        raise ModelLoadError(f"{file}: tensor '{key}' has an unknown dtype {dtype!r}.")
    if not isinstance(shape, list) or not all(is_whole(s) and s >= 0 for s in shape):
        raise ModelLoadError(f"{file}: tensor '{key}' has a malformed shape {shape!r}.")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_whole(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise ModelLoadError(f"{file}: tensor '{key}' has malformed data offsets {offsets!r}.")
    need = math.prod(shape) * ST_DTYPES[dtype]
    if dtype == "F4":
        need = (math.prod(shape) + 1) // 2
    if offsets[1] > data:
        raise ModelLoadError(f"{file}: tensor '{key}' {shape} {dtype} ends at byte {offsets[1]:,} of a data section "
                             f"of {data:,} bytes; the header does not describe this file.")
    if offsets[1] - offsets[0] != need:
        raise ModelLoadError(f"{file}: tensor '{key}' {shape} {dtype} needs {need:,} bytes but its offsets give "
                             f"{offsets[1] - offsets[0]:,}.")
    return Tensor(key, dtype, tuple(shape), offsets[0], offsets[1])


def safetensors_paths(folder: Path) -> list[Path]:
    """The folder's safetensors files: those its shard index names (each a plain file name inside the folder, and
    present), else every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return sorted(folder.glob("*.safetensors"))
    data = read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelLoadError(f"model.safetensors.index.json in '{folder}' has no weight_map of tensor -> file.")
    files = []
    for name in sorted(set(weight_map.values())):
        if Path(name).name != name or name.startswith(".") or not name.endswith(".safetensors"):
            raise ModelLoadError(f"model.safetensors.index.json in '{folder}' names {name!r}, which is not a "
                                 "safetensors file in the folder.")
        if not (folder / name).is_file():
            raise ModelLoadError(f"model.safetensors.index.json in '{folder}' names {name}, which is missing.")
        files.append(folder / name)
    return files


def folder_tensors(folder: Path) -> dict[str, list[Tensor]]:
    """{file name: its checked tensors} of every safetensors file of a model folder."""
    return {p.name: safetensors_tensors(p) for p in safetensors_paths(folder)}


# ---------------------------------------------------------------------------------------------- config vs weights
def check_against_weights(sizes: Mapping[str, int], cfg: Mapping[str, Any], tensors: Mapping[str, list[Tensor]],
                          where: str) -> None:
    """The config's depth, vocabulary and width against the tensors present: every layer it declares has weights
    (missing ones would be random), and the embedding matrix is [vocab_size, width]."""
    files = ", ".join(tensors) or "no safetensors file"
    layers = {int(m.group(1)) for ts in tensors.values() for t in ts if (m := LAYER_INDEX.search(t.name))}
    declared = sizes.get("num_hidden_layers")
    if declared and layers and declared > max(layers) + 1:
        raise ModelLoadError(f"{where} says num_hidden_layers = {declared}, but {files} holds weights for "
                             f"{max(layers) + 1} layers; the other layers would be random.")
    emb = next((t for ts in tensors.values() for t in ts if t.name.endswith(EMBEDDINGS) and len(t.shape) == 2), None)
    if emb is None:
        return
    vocab, width = emb.shape
    if sizes.get("vocab_size") not in (None, vocab):
        raise ModelLoadError(f"{where} says vocab_size = {sizes['vocab_size']}, but the embedding '{emb.name}' in "
                             f"{files} has {vocab} rows.")
    expected = cfg.get("word_embed_proj_dim") or sizes.get("hidden_size")  # OPT projects its embeddings
    if expected not in (None, width):
        raise ModelLoadError(f"{where} says hidden_size = {expected}, but the embedding '{emb.name}' in {files} has "
                             f"{width} columns.")


def check_weights(folder: Path, cfg: Mapping[str, Any]) -> dict[str, list[Tensor]]:
    """A model folder's safetensors headers, checked, and against its config (``read_config``); returns the tensors
    ({file name: [Tensor]})."""
    tensors = folder_tensors(folder)
    check_against_weights(sizes_of(cfg), cfg, tensors, f"config.json in '{folder}'")
    return tensors


def check_model_folder(folder: Path) -> dict[str, list[Tensor]]:
    """A local model folder's config.json and safetensors headers, checked against each other; returns the tensors."""
    return check_weights(folder, read_config(folder))


# -------------------------------------------------------------------------------------------------------- adapters
def check_adapter_folder(folder: Path, allow_pickle: bool) -> None:
    """A PEFT adapter folder: a readable adapter_config.json, and safetensors weights (checked) unless pickle weights
    are explicitly allowed."""
    read_json(folder / "adapter_config.json")
    st = sorted(folder.glob("adapter_model*.safetensors"))
    pickles = sorted(p for ext in ("*.bin", "*.pt", "*.pth") for p in folder.glob(ext))
    for p in st:
        safetensors_tensors(p)
    if not st and pickles and not allow_pickle:
        raise ModelLoadError(f"The adapter '{folder}' only has pickle weights ({pickles[0].name}). Pickle files can "
                             "run code when loaded, so adapters load from safetensors only unless you explicitly "
                             "allow pickle weights for trusted checkpoints.")
    if not st and not pickles:
        raise ModelLoadError(f"The adapter '{folder}' has an adapter_config.json but no adapter_model.safetensors.")



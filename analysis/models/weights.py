"""A fingerprint of a checkpoint's weights: the sha256 over its weight files' own sha256 (and its LoRA adapter's),
so a bundle can say which weights made it and a rerun can tell when they differ.

Each file is hashed once per machine: the digest is remembered in ~/.cache/logitscope/file_hashes.json keyed by
path, size and modification time (``LOGITSCOPE_HASH_CACHE`` moves it); files of the Hugging Face cache are
blobs already named by their sha256, which is used as is.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
CACHE_ENV = "LOGITSCOPE_HASH_CACHE"
_SHA = re.compile(r"^[0-9a-f]{64}$")
_lock = threading.Lock()


def _cache_path() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "logitscope" / "file_hashes.json")


def file_sha256(path: Path) -> str:
    """The sha256 of one file (remembered per path, size and mtime; a HF cache blob's name when it is one)."""
    real = Path(os.path.realpath(path))
    if _SHA.match(real.name) and real.parent.name == "blobs":
        return real.name
    st = real.stat()
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _cache_path()
    with _lock:
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return cache[key]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    with _lock:
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
        cache[key] = digest
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache), encoding="utf-8")
            os.replace(tmp, cache_file)
        except OSError:
            pass  # a read-only home: hashing again next time is only slower
    return digest


def weight_files(path: str | Path) -> list[Path]:
    """The weight files of a model folder (or the file itself for a .gguf), sorted by name."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        return []
    return sorted(f for f in p.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file())


def weights_sha256(source_path: str | Path | None, adapter_path: str | Path | None = None) -> str | None:
    """sha256 over (name, file sha256) of every weight file of the model and of its adapter; None when there are
    no local weight files (e.g. a hub model loaded without a local snapshot)."""
    parts = []
    for role, path in (("model", source_path), ("adapter", adapter_path)):
        if path is None:
            continue
        for f in weight_files(path):
            parts.append(f"{role}/{f.name}:{file_sha256(f)}")
    if not parts:
        return None
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()

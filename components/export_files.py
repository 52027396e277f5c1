"""Export file names and versions: safe and unique names for the files of an export, and the package versions.

``safe_filename`` keeps [A-Za-z0-9._-] only (never a separator, a leading dot or a Windows device name);
``package_versions`` records python and the stack's packages in a bundle's metadata.
"""
from __future__ import annotations

import platform
import re
import unicodedata
from importlib import metadata as _md

_STACK = (
    "torch", "transformers", "tokenizers", "safetensors", "accelerate", "peft",
    "huggingface_hub", "streamlit", "plotly", "kaleido", "choreographer",
    "scikit-learn", "umap-learn", "numpy", "pandas",
)  # fmt: skip


# --------------------------------------------------------------------------- names, versions

_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
MAX_FILENAME_LEN = 100


def safe_filename(text: str, ext: str = "") -> str:
    """A file name of [A-Za-z0-9._-] only: no separators, no leading dot or dash, capped, never empty."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_text)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = re.sub(r"_{2,}", "_", stem).strip("._-")
    clean_ext = re.sub(r"[^A-Za-z0-9]+", "", str(ext)).lower()[:10]
    room = MAX_FILENAME_LEN - (len(clean_ext) + 1 if clean_ext else 0)
    stem = stem[:room].rstrip("._-") or "export"
    head, dot, rest = stem.partition(".")
    if head.lower() in _RESERVED:  # Windows: "NUL.txt" is the device NUL too, so mark the part before the dot
        stem = head + "_" + dot + rest
    return f"{stem}.{clean_ext}" if clean_ext else stem


def package_versions() -> dict[str, str | None]:
    """Versions of python and the stack's packages (None where one is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _STACK:
        try:
            versions[name] = _md.version(name)
        except _md.PackageNotFoundError:
            versions[name] = None
    return versions


def unique_name(name: str, used: set[str]) -> str:
    if name not in used:
        used.add(name)
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    i = 2
    while True:
        candidate = f"{stem}-{i}.{ext}" if ext else f"{stem}-{i}"
        if candidate not in used:
            used.add(candidate)
            return candidate
        i += 1

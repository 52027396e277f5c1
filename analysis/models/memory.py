"""Model memory: how many bytes a model's weights take (loaded, or estimated before loading without reading them:
safetensors headers, the GGUF tensor table, the config on the meta device) and the budget per device that the
model cache (analysis.models.cache) keeps them under.

The budget: LOGITSCOPE_MODEL_BUDGET ("6GiB", "500MB", "0.5" = that fraction of the memory available when the
device is first used, or per device "cpu=8GiB,cuda=0.8"), else DEFAULT_FRACTION of the available RAM on the CPU
and of the free memory on a CUDA GPU.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from gguf import GGUFReader
from transformers import AutoConfig, AutoModelForCausalLM

from analysis.core.errors import InputError
from analysis.core.files import ST_DTYPES, check_model_folder, check_sizes
from analysis.core.loading import ModelSpec, resolve_device, resolve_dtype, resolve_source

ENV_BUDGET = "LOGITSCOPE_MODEL_BUDGET"
DEFAULT_FRACTION = 0.6


# ------------------------------------------------------------------------------------------------ sizes and devices
def format_bytes(n: float | None) -> str:
    """A byte count for people: '540 MB', '1.23 GB', '96 kB' (decimal units); None -> 'unknown'."""
    if n is None:
        return "unknown"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{int(n)} B"


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20,
          "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4, "tib": 1 << 40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str) -> tuple[str, float]:
    """'6GiB' -> ('bytes', 6 * 2**30); '500MB' -> ('bytes', 5e8); '0.5' -> ('fraction', 0.5). InputError otherwise.

    A number without a unit is a fraction of the available memory when it is at most 1, else a byte count."""
    m = _SIZE.match(text or "")
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise InputError(f"'{text}' is not a memory size: use e.g. 6GiB, 500MB or 0.5 (a fraction of the "
                         "available memory).")
    value = float(m.group(1))
    if not unit and 0 < value <= 1:
        return "fraction", value
    if value <= 0:
        raise InputError(f"'{text}' is not a memory size: it must be more than zero.")
    return "bytes", value * _UNITS[unit]


def device_key(device: torch.device | str) -> str:
    """The budget's name for a device: 'cpu', 'mps', 'cuda:0' (a bare 'cuda' is the current GPU)."""
    dev = torch.device(device) if isinstance(device, str) else device
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return f"cuda:{index}"
    return dev.type


def available_bytes(key: str) -> int:
    """Memory available on a device now: free GPU memory on CUDA, available RAM on the CPU (and on MPS)."""
    if key.startswith("cuda"):
        return int(torch.cuda.mem_get_info(torch.device(key))[0])
    try:
        import psutil  # lazy: optional (a fallback reads /proc/meminfo)
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def weight_bytes(model: Any) -> dict[str, int]:
    """Bytes of a model's parameters and buffers per device key (each tensor counted once; tied weights once)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or t.device.type == "meta":
            continue
        seen.add(id(t))
        k = device_key(t.device)
        out[k] = out.get(k, 0) + t.numel() * t.element_size()
    return out


@dataclass(frozen=True)
class SizeEstimate:
    """A model's expected weight bytes once loaded (None: unknown until loaded), on which device, and from what."""

    nbytes: int | None
    device: str | None
    how: str


def _tensor_bytes(tensors: dict, elem: int) -> int | None:
    """Bytes of checked safetensors tensors ({file: [Tensor]}) with floating tensors at ``elem`` bytes each."""
    if not tensors:
        return None
    total = 0
    for ts in tensors.values():
        for t in ts:
            floating = t.dtype.startswith(("F", "BF"))
            total += math.prod(t.shape) * (elem if floating else ST_DTYPES[t.dtype])
    return total


def _gguf_bytes(path: Path, elem: int) -> tuple[int, str]:
    """Bytes once dequantised to ``elem`` bytes per value (from the GGUF tensor table), else the file's size."""
    try:
        reader = GGUFReader(str(path))
        return sum(int(t.n_elements) for t in reader.tensors) * elem, "GGUF tensor table"
    except Exception:  # noqa: BLE001 - no gguf package or an unreadable file: the file size is the fallback
        return path.stat().st_size, "file size"


def _config_bytes(path: str, spec: ModelSpec, elem: int) -> int | None:
    """Bytes from the config alone (the model built on the meta device); None when no config is at hand offline."""
    try:
        config = AutoConfig.from_pretrained(path, revision=spec.revision, local_files_only=True, trust_remote_code=False)
        check_sizes(config.to_dict(), path)  # an absurd config would take minutes to build even on meta
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # noqa: BLE001 - any failure just means "unknown until loaded"
        return None
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        total += t.numel() * (elem if t.is_floating_point() else t.element_size())
    return total


def estimate_bytes(spec: ModelSpec) -> SizeEstimate:
    """The weight bytes ``spec`` will take once loaded, without reading its weights (never raises: unknown instead).

    Local folder: its safetensors headers (floating tensors scaled to the requested dtype); .gguf file: its tensor
    table dequantised to the dtype; otherwise the config on the meta device (a hub id in the local cache)."""
    try:
        device = resolve_device(spec.device)
        elem = torch.empty((), dtype=resolve_dtype(spec.dtype, device)).element_size()
        key = device_key(device)
    except Exception:  # noqa: BLE001 - the loader reports a bad device or dtype itself
        return SizeEstimate(None, None, "unknown device")
    try:
        path, local = resolve_source(spec.source)
    except Exception:  # noqa: BLE001 - the loader reports a bad source itself
        return SizeEstimate(None, key, "unknown source")
    try:
        p = Path(path)
        n: int | None
        if local and p.is_file() and p.suffix.lower() == ".gguf":
            n, how = _gguf_bytes(p, elem)
            return SizeEstimate(n, key, how)
        if local and p.is_dir():
            n = _tensor_bytes(check_model_folder(p), elem)  # a config the loader refuses is not trusted here
            if n is not None:
                return SizeEstimate(n, key, "safetensors headers")
        n = _config_bytes(path, spec, elem)
        return SizeEstimate(n, key, "config" if n is not None else "unknown")
    except Exception:  # noqa: BLE001 - a malformed header or index: let the loader say what is wrong
        return SizeEstimate(None, key, "unknown")


# ------------------------------------------------------------------------------------------------------------ budget
class Budget:
    """Bytes allowed for cached models per device key; defaults computed once per device, on its first use."""

    def __init__(self, setting: str | None = None, fraction: float = DEFAULT_FRACTION,
                 available: Callable[[str], int] = available_bytes):
        self.setting = os.environ.get(ENV_BUDGET, "") if setting is None else setting
        self.fraction = fraction
        self._available = available
        self._bytes: dict[str, int] = {}

    def _rule(self, key: str) -> tuple[str, float]:
        text = self.setting.strip()
        if not text:
            return "fraction", self.fraction
        if "=" not in text:
            return self._parse(text)
        rules = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            rules[name.strip().lower()] = value
        for name in (key, key.split(":")[0]):
            if name in rules:
                return self._parse(rules[name])
        return "fraction", self.fraction

    def _parse(self, text: str) -> tuple[str, float]:
        try:
            return parse_size(text)
        except InputError as err:
            raise InputError(f"{ENV_BUDGET}={self.setting!r}: {err}") from err

    def for_device(self, key: str) -> int:
        """The budget in bytes for a device key ('cpu', 'cuda:0', ...); InputError if the setting is malformed."""
        if key not in self._bytes:
            kind, value = self._rule(key)
            self._bytes[key] = int(value * self._available(key)) if kind == "fraction" else int(value)
        return self._bytes[key]

    def set(self, key: str, nbytes: int) -> None:
        """Replace the budget of one device."""
        if nbytes <= 0:
            raise InputError("The model budget must be more than zero.")
        self._bytes[key] = int(nbytes)

"""Loading a causal LM from a spec (zoo name, local folder or hub id) into a LoadedModel with its adapter.

Safetensors only unless pickle is explicitly allowed; trust_remote_code off unless asked for;
device auto = cuda, then mps, then cpu; dtype auto = bf16 on GPU, fp32 on CPU.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from analysis.core.architectures import ARCH_TABLE, SUPPORTED, Adapter, resolve_adapter
from analysis.core.errors import InputError, LogitscopeError, ModelLoadError, UnsupportedArchitectureError, brief
from analysis.core.files import check_adapter_folder, check_sizes, check_weights, read_config
from analysis.core.gguf import GGUFSource, check_gguf, gguf_quantisation, load_gguf, read_source, sha256_file
from analysis.core.paths import models_dir, real_models, zoo_dir, zoo_models

DEFAULT_MODEL = "gpt2-world-base"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a zoo name, local folder or hub id, plus revision, dtype, device and an optional LoRA folder."""

    source: str
    revision: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    adapter: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    @property
    def label(self) -> str:
        """A short human-readable name."""
        name = self.source.rstrip("/").split("/")[-1] if os.sep in self.source and Path(self.source).exists() else self.source
        extra = f"@{self.revision}" if self.revision else ""
        lora = f" + LoRA {Path(self.adapter).name}" if self.adapter else ""
        return f"{name}{extra}{lora}"


@dataclass
class LoadedModel:
    """A model ready for analysis; ``lock`` must be held for every forward pass and while hooks are attached."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    adapter: Adapter
    device: torch.device
    dtype: torch.dtype
    lock: threading.RLock = field(default_factory=threading.RLock)
    gguf: Any = None  # analysis.models.real.GGUFSource when the weights were dequantised from a GGUF file

    @property
    def name(self) -> str:
        """The spec's label."""
        return self.spec.label

    @property
    def context_length(self) -> int:
        """Maximum number of positions the model accepts."""
        cfg = self.model.config
        for attr in ("max_position_embeddings", "n_positions", "n_ctx"):
            v = getattr(cfg, attr, None)
            if isinstance(v, int) and v > 0:
                return v
        return int(min(getattr(self.tokenizer, "model_max_length", 2048), 1 << 20))

    def check_layer(self, layer: int, *, allow_zero: bool = True) -> int:
        """Validate a layer index in the project's numbering (0 = embeddings .. L = last block output)."""
        lo = 0 if allow_zero else 1
        if not isinstance(layer, int) or not lo <= layer <= self.adapter.n_layers:
            raise InputError(f"Layer {layer} is out of range: this model has layers {lo}..{self.adapter.n_layers} "
                             "(0 = embeddings, L = last block's output).")
        return layer


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; otherwise the named device (validated)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"Unknown device '{device}'. Use auto, cpu, cuda or mps.") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("Device 'cuda' was asked for, but no CUDA GPU is available here. Use auto or cpu.")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on a GPU, fp32 on the CPU; otherwise the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type in ("cuda", "mps") else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"Unknown dtype '{dtype}'. Use auto, float32, bfloat16 or float16.")
    return DTYPES[dtype]


def resolve_source(source: str) -> tuple[str, bool]:
    """(path or hub id, is_local). Zoo names resolve to zoo/<name>, converted real models (analysis.models.real)
    to their cache folder, a .gguf file to itself; a missing path is a clear error."""
    src = (source or "").strip()
    if not src:
        raise ModelLoadError("No model given. Pick a demo model or enter a Hugging Face id or a local folder.")
    if src.startswith("zoo:"):
        src = src[4:]
    expanded = Path(os.path.expanduser(src))
    if expanded.is_dir():
        return str(expanded.resolve()), True
    if (zoo_dir() / src).is_dir():
        return str((zoo_dir() / src).resolve()), True
    if src in real_models():
        return str((models_dir() / src).resolve()), True
    if src.lower().endswith(".gguf"):
        if expanded.is_file():
            return str(expanded.resolve()), True
        raise ModelLoadError(f"No such GGUF file: '{src}'.")
    looks_like_path = src.startswith(("/", ".", "~")) or os.sep + os.sep in src or src.count("/") > 1
    if expanded.exists() and not expanded.is_dir():
        raise ModelLoadError(f"'{src}' is a file; pass the folder that holds config.json and the weights "
                             "(or a .gguf file).")
    if looks_like_path or not HUB_ID.match(src):
        raise ModelLoadError(f"No such folder: '{src}'. Pass a local model folder, a demo model name "
                             f"({', '.join(zoo_models()) or 'none found'}) or a Hugging Face hub id like 'gpt2'.")
    return src, False


def _check_local_weights(path: str, allow_pickle: bool) -> None:
    """Refuse folders without weights, and pickle-only folders unless pickle was explicitly allowed."""
    p = Path(path)
    if not (p / "config.json").is_file():
        raise ModelLoadError(f"The folder '{path}' has no config.json; it is not a Hugging Face model folder.")
    has_st = any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file()
    has_pickle = any(p.glob("*.bin")) or any(p.glob("*.pt")) or any(p.glob("*.pth"))
    if not has_st and not has_pickle:
        raise ModelLoadError(f"The folder '{path}' has a config.json but no weights (no *.safetensors file).")
    if not has_st and has_pickle and not allow_pickle:
        raise ModelLoadError(
            f"The folder '{path}' only has pickle weights (*.bin). Pickle files can run code when loaded, so "
            "Logitscope only loads safetensors unless you explicitly allow pickle weights for trusted checkpoints."
        )


def _offline() -> bool:
    """True in HF offline mode, or when the Hub cannot be reached within HUB_PROBE_TIMEOUT_S (one quick probe,
    remembered for HUB_PROBE_TTL_S): an offline machine then fails at once with the clear message instead of
    waiting ~25 s for the Hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    now = time.monotonic()
    if _HUB_PROBE["at"] is None or now - _HUB_PROBE["at"] > HUB_PROBE_TTL_S:
        _HUB_PROBE.update(at=now, reachable=hub_reachable())
    return not _HUB_PROBE["reachable"]


HUB_PROBE_TIMEOUT_S = 1.5
HUB_PROBE_TTL_S = 60.0
_HUB_PROBE: dict[str, Any] = {"at": None, "reachable": True}


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub's endpoint (HF_ENDPOINT, default huggingface.co:443) opens in `timeout`
    seconds, name lookup included (run in a thread, since getaddrinfo has no timeout of its own)."""
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)

    def connect() -> bool:
        with socket.create_connection((host, port), timeout=timeout):
            return True

    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return bool(pool.submit(connect).result(timeout=timeout))
    except (OSError, FutureTimeout):
        return False
    finally:
        pool.shutdown(wait=False)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load ``spec`` into a LoadedModel (eval mode, adapter resolved), raising ModelLoadError et al. with clear messages."""
    path, local = resolve_source(spec.source)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    if local and path.lower().endswith(".gguf"):
        return _load_gguf_file(spec, Path(path), device, dtype)
    if local:
        _check_local_weights(path, spec.allow_pickle)
        raw = read_config(Path(path))  # its sizes checked; then the architecture, then the weights' headers
        _check_architecture(raw.get("model_type"), spec.source)
        check_weights(Path(path), raw)
    common: dict[str, Any] = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    if not local:
        common["local_files_only"] = _offline()
    config = _read_config(spec, path, local, common)
    kwargs: dict[str, Any] = dict(common, dtype=dtype)
    if not spec.allow_pickle:
        kwargs["use_safetensors"] = True
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"
    try:  # the tokenizer first: a broken one fails before the weights are read
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
    except Exception as err:  # noqa: BLE001 - tokenizers raises its own types for damaged files
        raise ModelLoadError(f"Could not load the tokenizer of '{spec.source}' (tokenizer files): {brief(err)}") from err
    model = _read_weights(spec, path, local, config, kwargs)
    if spec.adapter:
        model = _apply_lora(model, spec.adapter, spec.allow_pickle)
    if "device_map" not in kwargs:
        model = model.to(device)
    return _finish(spec, model, tokenizer, device, dtype, gguf=read_source(path) if local else None)


def _read_config(spec: ModelSpec, path: str, local: bool, common: dict[str, Any]) -> Any:
    """The transformers config of a folder or hub id, its sizes and architecture checked before the weights."""
    try:
        config = AutoConfig.from_pretrained(path, **common)
    except ValueError as err:  # unknown model_type, remote code required, ...
        raise UnsupportedArchitectureError(f"Could not read the configuration of '{spec.source}': {brief(err)}") from err
    except OSError as err:
        if local:
            raise ModelLoadError(f"Could not read config.json in '{path}': {brief(err)}") from err
        raise ModelLoadError(
            f"Could not fetch '{spec.source}' from the Hugging Face Hub (no network, or no such model id). "
            "Download it where there is network access and pass the local folder instead."
        ) from err
    if not local:  # a hub config's sizes, checked as a local folder's were
        check_sizes(config.to_dict(), f"config.json of '{spec.source}'")
    _check_architecture(getattr(config, "model_type", None), spec.source)  # before paying for the weights
    return config


def _read_weights(spec: ModelSpec, path: str, local: bool, config: Any, kwargs: dict[str, Any]) -> Any:
    """The model with its weights, every loader error as the project's one-line ModelLoadError."""
    try:
        return AutoModelForCausalLM.from_pretrained(path, config=config, **kwargs)
    except OSError as err:
        if not local and not spec.allow_pickle and "safetensors" in str(err).lower():
            raise ModelLoadError(f"'{spec.source}' has no safetensors weights; allow pickle weights only if you "
                                 "trust the checkpoint.") from err
        raise ModelLoadError(f"Could not load the weights of '{spec.source}': {brief(err)}") from err
    except Exception as err:  # noqa: BLE001 - safetensors, torch and transformers raise many types for bad files
        raise ModelLoadError(f"Could not load the weights of '{spec.source}' ({type(err).__name__}): "
                             f"{brief(err)}") from err


def _check_architecture(model_type: Any, source: str) -> None:
    """UnsupportedArchitectureError naming the supported architectures unless ``model_type`` is one of them."""
    if model_type not in ARCH_TABLE:
        raise UnsupportedArchitectureError(f"Architecture '{model_type or '?'}' of '{source}' is not supported. "
                                           f"Supported: {', '.join(SUPPORTED)}.")


def _finish(spec: ModelSpec, model: Any, tokenizer: Any, device: torch.device, dtype: torch.dtype,
            gguf: Any = None) -> LoadedModel:
    """Eval mode, no gradients, a pad token, the adapter resolved: the LoadedModel."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = resolve_adapter(model)
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, adapter=adapter, device=device, dtype=dtype,
                       gguf=gguf)


def _load_gguf_file(spec: ModelSpec, path: Path, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    """A local .gguf file, dequantised in memory by transformers (its architecture checked first)."""
    if spec.revision:
        raise InputError("A .gguf file has no revisions; leave the revision empty.")
    check_gguf(path)  # a readable header with sane sizes, before transformers dequantises anything
    quant = gguf_quantisation(path)
    model, tokenizer = load_gguf(path, dtype)
    _check_architecture(getattr(model.config, "model_type", None), path.name)
    if spec.adapter:
        model = _apply_lora(model, spec.adapter, spec.allow_pickle)
    model = model.to(device)
    return _finish(spec, model, tokenizer, device, dtype,
                   gguf=GGUFSource(file=path.name, sha256=sha256_file(path), quantisation=quant))


def _apply_lora(model: Any, adapter_dir: str, allow_pickle: bool = False) -> Any:
    """Apply a PEFT LoRA adapter folder and merge it, giving a plain model of the same architecture. Its weights
    follow the models' pickle policy: safetensors only unless pickle weights are explicitly allowed."""
    p = Path(os.path.expanduser(adapter_dir))
    if not (p / "adapter_config.json").is_file():
        raise ModelLoadError(f"'{adapter_dir}' is not a PEFT adapter folder (no adapter_config.json).")
    check_adapter_folder(p, allow_pickle)
    try:
        from peft import PeftModel  # lazy: peft adds seconds to every import of the engine; only adapters need it
        return PeftModel.from_pretrained(model, str(p)).merge_and_unload()
    except LogitscopeError:
        raise
    except Exception as err:  # peft raises many types for mismatched adapters
        raise ModelLoadError(f"The adapter in '{adapter_dir}' does not fit this model: {brief(err)}") from err


def model_from_pretrained_object(model: Any, tokenizer: Any, name: str = "in-memory") -> LoadedModel:
    """Wrap an already-built model and tokenizer (tests, notebooks) as a LoadedModel."""
    param = next(model.parameters())
    if tokenizer is None:
        model.eval()
        model.requires_grad_(False)
        return LoadedModel(spec=ModelSpec(source=name), model=model, tokenizer=tokenizer,
                           adapter=resolve_adapter(model), device=param.device, dtype=param.dtype)
    return _finish(ModelSpec(source=name), model, tokenizer, param.device, param.dtype)

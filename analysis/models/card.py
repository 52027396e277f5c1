"""The model card: what was loaded, its shape, where it runs, and its self-check result."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from analysis.core.errors import LogitscopeError
from analysis.core.loading import LoadedModel, resolve_source
from analysis.models.memory import weight_bytes
from analysis.models.selfcheck import SelfCheck, self_check
from analysis.models.weights import weights_sha256
from analysis.prompts import adds_bos, has_chat_template


@dataclass(frozen=True)
class ModelCard:
    """Facts about a loaded model, shown on the home page and written into export metadata."""

    name: str
    source: str
    revision: str | None
    adapter: str | None
    architecture: str
    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    context_length: int
    n_params: int
    norm_kind: str
    parallel_residual: bool
    softcap: float | None
    device: str
    dtype: str
    memory_mb: float  # memory_bytes in MiB
    check: SelfCheck
    adds_bos: bool = False
    chat_template: bool = False
    source_note: str | None = None
    source_sha256: str | None = None
    memory_bytes: int = 0  # the loaded weights (parameters + buffers), as the model cache accounts them
    weights_sha256: str | None = None  # sha256 over the weight files' sha256 (analysis.models.weights); None: no local files

    def as_dict(self) -> dict:
        """JSON-ready dict (for export metadata)."""
        return asdict(self)


def model_card(lm: LoadedModel, check: SelfCheck | None = None) -> ModelCard:
    """Build the card, running the self-check unless one is given."""
    ad = lm.adapter
    params = list(lm.model.parameters())
    n_params = sum(p.numel() for p in params)
    nbytes = sum(weight_bytes(lm.model).values())
    return ModelCard(
        name=lm.name, source=lm.spec.source, revision=lm.spec.revision, adapter=lm.spec.adapter,
        architecture=type(lm.model).__name__, model_type=ad.model_type, n_layers=ad.n_layers, d_model=ad.d_model,
        n_heads=ad.n_heads, vocab_size=ad.vocab_size, context_length=lm.context_length, n_params=n_params,
        norm_kind=ad.final_norm.kind, parallel_residual=ad.parallel_residual, softcap=ad.softcap,
        device=str(lm.device), dtype=str(lm.dtype).replace("torch.", ""), memory_mb=round(nbytes / 2**20, 2),
        check=check if check is not None else self_check(lm),
        adds_bos=adds_bos(lm.tokenizer), chat_template=has_chat_template(lm.tokenizer),
        source_note=lm.gguf.note() if lm.gguf is not None else None,
        source_sha256=lm.gguf.sha256 if lm.gguf is not None else None, memory_bytes=nbytes,
        weights_sha256=_weights_sha256(lm),
    )


def _weights_sha256(lm: LoadedModel) -> str | None:
    """The fingerprint of the local weight files the model was loaded from (None for a hub model or in-memory)."""
    try:
        path, local = resolve_source(lm.spec.source)
    except LogitscopeError:
        return None
    return weights_sha256(path, lm.spec.adapter) if local else None

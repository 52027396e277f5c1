"""Architecture adapters: where each supported model family keeps its blocks, norms and write points.

One table keyed on ``config.model_type``. Nothing is guessed: an architecture outside the table, or a
checkpoint whose modules do not match its row, is refused with a message naming what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from analysis.core.errors import UnsupportedArchitectureError

NORM_LAYERNORM = "layernorm"  # gamma * (x - mu) / sigma + beta
NORM_RMS = "rmsnorm"  # gamma * x / rms(x)
NORM_RMS_PLUS_ONE = "rmsnorm(1+w)"  # Gemma: (1 + gamma) * x / rms(x)


@dataclass(frozen=True)
class ArchRow:
    """Module paths of one architecture family (relative paths are inside a block)."""

    blocks: str
    final_norm: str
    norm_kind: str
    attn: str  # the attention module (its output[0] is the attention output before any post-norm)
    o_proj: str  # output projection of attention, input = concatenated heads
    attn_write: str  # module whose output is what attention adds to the residual stream
    mlp_write: str  # module whose output is what the MLP adds to the residual stream
    down_proj: str  # neuron site = the input of this module
    down_proj_conv1d: bool = False  # GPT-2 Conv1D stores weights as [in, out]
    attn_write_is_post_norm: bool = False  # Gemma-2: attention passes through a norm before the residual


ARCH_TABLE: dict[str, ArchRow] = {
    "gpt2": ArchRow("transformer.h", "transformer.ln_f", NORM_LAYERNORM, "attn", "attn.c_proj", "attn", "mlp",
                    "mlp.c_proj", down_proj_conv1d=True),
    "gpt_neox": ArchRow("gpt_neox.layers", "gpt_neox.final_layer_norm", NORM_LAYERNORM, "attention",
                        "attention.dense", "attention", "mlp", "mlp.dense_4h_to_h"),
    "llama": ArchRow("model.layers", "model.norm", NORM_RMS, "self_attn", "self_attn.o_proj", "self_attn", "mlp",
                     "mlp.down_proj"),
    "mistral": ArchRow("model.layers", "model.norm", NORM_RMS, "self_attn", "self_attn.o_proj", "self_attn", "mlp",
                       "mlp.down_proj"),
    "qwen2": ArchRow("model.layers", "model.norm", NORM_RMS, "self_attn", "self_attn.o_proj", "self_attn", "mlp",
                     "mlp.down_proj"),
    "gemma2": ArchRow("model.layers", "model.norm", NORM_RMS_PLUS_ONE, "self_attn", "self_attn.o_proj",
                      "post_attention_layernorm", "post_feedforward_layernorm", "mlp.down_proj",
                      attn_write_is_post_norm=True),
    "phi3": ArchRow("model.layers", "model.norm", NORM_RMS, "self_attn", "self_attn.o_proj", "self_attn", "mlp",
                    "mlp.down_proj"),
    "opt": ArchRow("model.decoder.layers", "model.decoder.final_layer_norm", NORM_LAYERNORM, "self_attn",
                   "self_attn.out_proj", "self_attn", "fc2", "fc2"),
}

SUPPORTED = tuple(sorted(ARCH_TABLE))


def _get(root: nn.Module, path: str) -> nn.Module | None:
    """Resolve a dotted module path, or None if any part is missing."""
    mod: Any = root
    for part in path.split("."):
        if not hasattr(mod, part):
            return None
        mod = getattr(mod, part)
    return mod if isinstance(mod, nn.Module) else None


@dataclass(frozen=True)
class FinalNorm:
    """The final norm's parameters, enough to apply it with a recomputed or a frozen scale."""

    kind: str
    weight: torch.Tensor  # the raw parameter (for Gemma the gain is 1 + weight)
    bias: torch.Tensor | None
    eps: float

    @property
    def gain(self) -> torch.Tensor:
        """The effective multiplicative gain gamma [d]."""
        return 1.0 + self.weight.float() if self.kind == NORM_RMS_PLUS_ONE else self.weight.float()


@dataclass(frozen=True)
class Adapter:
    """A resolved architecture adapter for one loaded model."""

    model_type: str
    row: ArchRow
    blocks: tuple[nn.Module, ...]
    final_norm_module: nn.Module
    final_norm: FinalNorm
    unembed: nn.Module  # Linear [V, d] (+ optional bias)
    parallel_residual: bool
    softcap: float | None
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int
    vocab_size: int

    def block_part(self, layer: int, rel_path: str) -> nn.Module:
        """The module at ``rel_path`` inside block ``layer`` (0-based block index)."""
        mod = _get(self.blocks[layer], rel_path)
        assert mod is not None, f"{rel_path} resolved at load time"
        return mod

    def attn_write(self, layer: int) -> nn.Module:
        """Module whose output is block ``layer``'s attention write into the residual stream."""
        return self.block_part(layer, self.row.attn_write)

    def mlp_write(self, layer: int) -> nn.Module:
        """Module whose output is block ``layer``'s MLP write into the residual stream."""
        return self.block_part(layer, self.row.mlp_write)

    def down_proj(self, layer: int) -> nn.Module:
        """The MLP down-projection of block ``layer``; its input is the neuron activation."""
        return self.block_part(layer, self.row.down_proj)

    def o_proj(self, layer: int) -> nn.Module:
        """The attention output projection of block ``layer``; its input is the concatenated heads."""
        return self.block_part(layer, self.row.o_proj)

    def neuron_out_weights(self, layer: int) -> torch.Tensor:
        """w_out of every neuron of block ``layer``: [n_neurons, d_model] (a view, never edit in place)."""
        w = cast(torch.Tensor, self.down_proj(layer).weight)
        return w if self.row.down_proj_conv1d else w.T

    @property
    def W_U(self) -> torch.Tensor:
        """Unembedding matrix [V, d] (may be tied to the input embedding: never edit in place)."""
        return cast(torch.Tensor, self.unembed.weight)

    @property
    def b_U(self) -> torch.Tensor | None:
        """Unembedding bias [V] or None."""
        return getattr(self.unembed, "bias", None)


def _final_norm_params(kind: str, mod: nn.Module, where: str) -> FinalNorm:
    weight = getattr(mod, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UnsupportedArchitectureError(f"The final norm ({where}) has no weight parameter; cannot read it out.")
    eps = None
    for name in ("eps", "variance_epsilon", "epsilon"):
        if isinstance(getattr(mod, name, None), (int, float)):
            eps = float(getattr(mod, name))
            break
    if eps is None:
        raise UnsupportedArchitectureError(f"The final norm ({where}) has no epsilon attribute; cannot freeze its scale.")
    bias = getattr(mod, "bias", None) if kind == NORM_LAYERNORM else None
    return FinalNorm(kind=kind, weight=weight, bias=bias if isinstance(bias, torch.Tensor) else None, eps=eps)


def resolve_adapter(model: nn.Module) -> Adapter:
    """Build the adapter for a loaded causal LM, or raise UnsupportedArchitectureError naming what is missing."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCH_TABLE:
        raise UnsupportedArchitectureError(
            f"Architecture '{model_type}' is not supported. Supported: {', '.join(SUPPORTED)}. "
            "Logitscope needs to know where the blocks, the final norm and the unembedding live, and does not guess."
        )
    row = ARCH_TABLE[model_type]
    assert config is not None  # a missing config has no model_type, refused above
    if model_type == "opt":
        if not getattr(config, "do_layer_norm_before", True):
            raise UnsupportedArchitectureError(
                "This OPT checkpoint applies layer norm after each block (do_layer_norm_before=False, e.g. opt-350m); "
                "its residual stream is not a sum of block writes, so the lens and attributions would be wrong."
            )
        if getattr(config, "word_embed_proj_dim", config.hidden_size) != config.hidden_size:
            raise UnsupportedArchitectureError(
                "This OPT checkpoint projects between embedding and hidden size (project_in/project_out); "
                "that readout is not supported."
            )
    missing = []
    blocks = cast("nn.ModuleList | None", _get(model, row.blocks))  # every row's blocks are a ModuleList
    norm = _get(model, row.final_norm)
    unembed: nn.Module | None = (cast(Any, model).get_output_embeddings() if hasattr(model, "get_output_embeddings")
                                 else None)
    if blocks is None or len(list(blocks)) == 0:
        missing.append(f"blocks ({row.blocks})")
    if norm is None:
        missing.append(f"final norm ({row.final_norm})")
    if unembed is None or not isinstance(getattr(unembed, "weight", None), torch.Tensor):
        missing.append("unembedding (get_output_embeddings)")
    if not missing:
        assert blocks is not None  # else "blocks" is missing
        for rel in (row.attn, row.o_proj, row.attn_write, row.mlp_write, row.down_proj):
            if _get(blocks[0], rel) is None:
                missing.append(f"block part '{rel}' in {row.blocks}.0")
    if missing:
        raise UnsupportedArchitectureError(
            f"This '{model_type}' checkpoint does not have the modules Logitscope expects: missing {', '.join(missing)}."
        )
    assert blocks is not None and norm is not None and unembed is not None  # else each is listed as missing
    block_list = tuple(blocks)
    W_U = cast(torch.Tensor, unembed.weight)  # checked to be a tensor above
    d_model = int(W_U.shape[1])
    n_heads = int(getattr(config, "num_attention_heads", getattr(config, "n_head", 0)))
    head_dim = int(getattr(config, "head_dim", None) or d_model // max(n_heads, 1))
    softcap = getattr(config, "final_logit_softcapping", None)
    return Adapter(
        model_type=model_type,
        row=row,
        blocks=block_list,
        final_norm_module=norm,
        final_norm=_final_norm_params(row.norm_kind, norm, row.final_norm),
        unembed=unembed,
        parallel_residual=bool(getattr(config, "use_parallel_residual", False)) if model_type == "gpt_neox" else False,
        softcap=float(softcap) if softcap else None,
        n_layers=len(block_list),
        d_model=d_model,
        n_heads=n_heads,
        head_dim=head_dim,
        vocab_size=int(W_U.shape[0]),
    )

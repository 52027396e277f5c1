"""Logit flow result types: the per-direction Attribution, one prompt's FlowResult and a prompt set's FlowSetResult.

They hold the contributions computed by analysis.flow.attribution (see its module docstring for every definition) and the
set-level views: means over prompts, grids aligned at the final token, and one summary row per prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.core.errors import InputError

VIEWS = ("target", "competitor", "difference")


@dataclass(frozen=True)
class Attribution:
    """Contributions at the final position T to one readout direction (target, competitor or their difference).

    Logit units (pre-cap, frozen final scale) unless the name starts with imp_ (nats of log-probability).
    L = blocks, H = query heads, T = prompt tokens.
    """

    direction: str
    logit: float  # the model's pre-cap logit (difference) at T
    bias: float  # part no component owns: u . beta_final + b_U
    embed: float  # DLA of the embedding output at T
    attn: np.ndarray  # [L] DLA of each block's attention write at T (includes the o_proj bias)
    mlp: np.ndarray  # [L] DLA of each block's MLP write at T
    attn_bias: np.ndarray  # [L] DLA of the o_proj bias (0 where there is none)
    heads: np.ndarray  # [L, H] DLA of each head's write at T (sum_h + attn_bias = attn)
    sources: np.ndarray  # [L, H, T] DLA of head h's write into T coming from source p (sum_p = heads)
    attn_at_pos: np.ndarray  # [L, T] NOT additive: DLA of the attention write at p through T's readout
    mlp_at_pos: np.ndarray  # [L, T] NOT additive: DLA of the MLP write at p through T's readout
    imp_attn: np.ndarray  # [L] Imp(attention write | block input)
    imp_mlp: np.ndarray  # [L] Imp(MLP write | mid-block residual)
    imp_heads: np.ndarray  # [L, H] Imp(head write | block input)
    imp_sources: np.ndarray | None  # [L, H, T] Imp(head x source write | block input), None when skipped
    imp_total: float  # log p(final) - log p(embedding), both through the frozen readout (= sum of imp_attn + imp_mlp)

    @property
    def attn_grid(self) -> np.ndarray:
        """[L, T] attention contribution from source p into T at layer l (rows sum to attn - attn_bias)."""
        return self.sources.sum(axis=1)

    @property
    def total(self) -> float:
        """embed + all sublayers + bias: equals ``logit`` (the decomposition identity)."""
        return float(self.embed + self.attn.sum() + self.mlp.sum() + self.bias)


@dataclass(frozen=True)
class FlowResult:
    """The logit flow of one prompt at its final position (see the module docstring for definitions)."""

    prompt: str
    tokens: tuple[str, ...]  # [T] token texts
    token_ids: tuple[int, ...]
    target: str
    target_id: int
    competitor: str | None
    competitor_id: int | None
    top_token: str  # the model's own top-1 at T
    target_logprob: float  # log p(target) at T from the model
    target_rank: int  # 1 = the model's top-1
    sigma: float  # the frozen final-norm scale at T
    n_layers: int
    n_heads: int
    model_type: str
    notes: tuple[str, ...]
    checks: dict[str, float]  # relative errors of the identities (see check_names)
    by_view: dict[str, Attribution] = field(repr=False)

    def view(self, name: str = "target") -> Attribution:
        """The Attribution for 'target', 'competitor' or 'difference' (the last two need a competitor)."""
        if name not in self.by_view:
            raise InputError(f"The '{name}' view needs a competing token; this prompt has none.")
        return self.by_view[name]

    @property
    def views(self) -> tuple[str, ...]:
        """The views this result has."""
        return tuple(v for v in VIEWS if v in self.by_view)


@dataclass(frozen=True)
class FlowSetResult:
    """Logit flow over a prompt set: one FlowResult per prompt plus averages."""

    results: tuple[FlowResult, ...]
    notes: tuple[str, ...]

    def members(self, view: str) -> list[Attribution]:
        """The per-prompt Attributions that have ``view``."""
        return [r.by_view[view] for r in self.results if view in r.by_view]

    def mean(self, view: str, name: str) -> np.ndarray:
        """Mean over prompts of a per-layer field (attn, mlp, attn_bias, heads, imp_attn, imp_mlp, imp_heads)."""
        items = self.members(view)
        if not items:
            raise InputError(f"No prompt in this set has a '{view}' view (it needs a competing token).")
        return np.mean([np.asarray(getattr(a, name), dtype=np.float64) for a in items], axis=0)

    def aligned(self, view: str, name: str, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean over prompts of a [L, T] grid aligned at the final token: ([L, K] mean, [K] prompt counts).

        Column K-1 is the final position T, column K-1-j is T-j. ``name``: attn_grid, attn_at_pos, mlp_at_pos.
        """
        items = self.members(view)
        if not items:
            raise InputError(f"No prompt in this set has a '{view}' view (it needs a competing token).")
        grids = [np.asarray(getattr(a, name), dtype=np.float64) for a in items]
        K = width or max(g.shape[1] for g in grids)
        L = grids[0].shape[0]
        total = np.zeros((L, K))
        count = np.zeros(K)
        for g in grids:
            k = min(K, g.shape[1])
            total[:, K - k:] += g[:, g.shape[1] - k:]
            count[K - k:] += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return mean, count

    def table(self) -> list[dict[str, Any]]:
        """One row per prompt: texts, logits, sublayer totals and the largest head and source."""
        rows = []
        for i, r in enumerate(self.results):
            a = r.view("target")
            l, h = np.unravel_index(int(np.argmax(np.abs(a.heads))), a.heads.shape)
            grid = a.attn_grid
            gl, gp = np.unravel_index(int(np.argmax(np.abs(grid))), grid.shape)
            row: dict[str, Any] = {
                "prompt": r.prompt, "target": r.target, "competitor": r.competitor, "top_token": r.top_token,
                "target_rank": r.target_rank, "target_logprob": r.target_logprob, "target_logit": a.logit,
                "embed": a.embed, "attention_total": float(a.attn.sum()), "mlp_total": float(a.mlp.sum()),
                "bias": a.bias, "top_head": f"L{int(l)}H{int(h)}", "top_head_dla": float(a.heads[l, h]),
                "top_source": f"block {int(gl)} <- {r.tokens[gp]!r} (pos {int(gp)})",
                "top_source_dla": float(grid[gl, gp]),
            }
            if "difference" in r.by_view:
                d = r.by_view["difference"]
                row.update({"logit_difference": d.logit, "diff_attention_total": float(d.attn.sum()),
                            "diff_mlp_total": float(d.mlp.sum())})
            row["max_identity_error"] = max(r.checks.values()) if r.checks else 0.0
            row["index"] = i
            rows.append(row)
        return rows

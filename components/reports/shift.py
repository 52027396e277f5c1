"""Checkpoint shift report: the A -> B shift, per-layer lens KL and the two-pair similarity -> bundle files."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.shift import LayerKL, ShiftResult, Similarity
from components.charts.shift import kl_along_text, layer_kl_line, shift_heatmap, similarity_summary, token_bars
from components.reports import Report

PAGE = "checkpoint_shift"
BUNDLE = "checkpoint_shift"
DEFAULTS = {"n_tokens": 12, "top_n": 100, "max_prompts": 20, "n_cols": 30, "columns": "top",
            "pair2": ("llama-world-base", "llama-world-tuned")}


def default_reference(has_responses: bool) -> str:
    """The page's default reference continuation: the set's responses when every row has one, else B's greedy."""
    return "response" if has_responses else "greedy"


def shift_settings(reference: str, n_tokens: int, top_n: int, max_prompts: int, n_cols: int) -> dict:
    """The settings recorded in the bundle's metadata (second_pair/similarity_columns are added when run)."""
    return {"reference": reference, "n_tokens": int(n_tokens), "top_n": int(top_n), "max_prompts": int(max_prompts),
            "heatmap_columns": int(n_cols)}


def heatmap_frame(res: ShiftResult, second: tuple | None = None) -> pd.DataFrame:
    """Long table of every prompt's per-step top-N shifts (and the second pair's mapped shift)."""
    rows = []
    for i, p in enumerate(res.prompts):
        for t in range(len(p.tokens)):
            for r in range(p.top_ids.shape[1]):
                row = {"prompt": i, "step": t, "step_token": p.tokens[t], "rank": r + 1,
                       "token": p.top_tokens[t][r], "token_id": int(p.top_ids[t, r]),
                       "shift_nats": float(p.top_shift[t, r]), "p_a": float(np.exp(p.top_logp_a[t, r])),
                       "p_b": float(np.exp(p.top_logp_b[t, r]))}
                if second is not None:
                    row["second_pair_shift_nats"] = float(second[i][t, r])
                rows.append(row)
    return pd.DataFrame(rows)


def totals_frame(res: ShiftResult) -> pd.DataFrame:
    """Per-token totals over the set, most promoted first."""
    t = res.totals
    return pd.DataFrame({"token": list(t.tokens), "token_id": t.ids, "steps_in_top_n": t.count,
                         "probability_moved": t.mass, "total_shift_nats": t.total,
                         "mean_shift_nats": t.mean})


def kl_frame(res: ShiftResult) -> pd.DataFrame:
    """Per-step KL(B||A) and the reference token's probabilities, every prompt."""
    rows = []
    for i, p in enumerate(res.prompts):
        for t, tok in enumerate(p.tokens):
            rows.append({"prompt": i, "prompt_text": p.prompt, "step": t, "token": tok, "kl_b_a_nats": float(p.kl[t]),
                         "logp_a": float(p.logp_a[t]), "logp_b": float(p.logp_b[t])})
    return pd.DataFrame(rows)


def shift_report(res: ShiftResult, lk: LayerKL | None = None, *, name_a: str, name_b: str, pick: int = 0,
                 n_cols: int = DEFAULTS["n_cols"]) -> Report:
    """Most promoted/suppressed tokens, the shift heatmap and KL along the text of prompt pick, and the per-layer
    lens KL when A and B share a tokenizer and depth (lk)."""
    rep = Report()
    rep.add("token_bars", token_bars(res.totals, k=15, title=f"Most promoted and suppressed tokens: {name_a} → {name_b}"))
    rep.tables["token_totals"] = totals_frame(res)
    sel = res.prompts[pick]
    rep.add("shift_heatmap", shift_heatmap(sel, n_cols=int(n_cols), label_1=f"{name_a} → {name_b}",
                                           title=f"Logit shift per step (log p_B − log p_A, nats), prompt {pick + 1}"))
    rep.tables["shift_top_n"] = heatmap_frame(res)
    rep.add("kl_along_text", kl_along_text(sel))
    rep.tables["kl_per_step"] = kl_frame(res)
    if lk is not None:
        rep.add("layer_kl", layer_kl_line([(f"{name_a} vs {name_b}", lk)]),
                pd.DataFrame({"layer": np.arange(len(lk.mean)), "mean_lens_kl_a_b_nats": lk.mean}))
    return rep


def similarity_report(sim: Similarity, prompts: Sequence[str], *, name_a: str, name_b: str, label_a2: str,
                      label_b2: str, pick: int = 0, n_cols: int = DEFAULTS["n_cols"]) -> Report:
    """Whether the second pair (label_a2 -> label_b2) shifts like A -> B: summary, per-prompt table, both heatmaps."""
    rep = Report()
    rep.add("similarity", similarity_summary(sim, title=f"Shift similarity: {name_a}→{name_b} vs {label_a2}→{label_b2}"),
            pd.DataFrame({"prompt": list(prompts), "pearson": sim.pearson_by_prompt, "cosine": sim.cosine_by_prompt,
                          "control_pearson": sim.control_pearson_by_prompt,
                          "control_cosine": sim.control_cosine_by_prompt}))
    rep.tables["similarity_per_prompt"] = rep.tables.pop("similarity")
    rep.add("shift_heatmap_pairs",
            shift_heatmap(sim.pair1.prompts[pick], n_cols=int(n_cols), second=sim.second_on_first[pick],
                          label_1=f"{name_a} → {name_b}", label_2=f"{label_a2} → {label_b2} (same tokens, mapped)",
                          title=f"Both pairs' shifts on pair 1's columns, prompt {pick + 1} (nats)"),
            heatmap_frame(sim.pair1, sim.second_on_first))
    rep.tables["shift_top_n_pairs"] = rep.tables.pop("shift_heatmap_pairs")
    return rep

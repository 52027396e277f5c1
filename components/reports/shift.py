"""The checkpoint shift method, declared once: its settings, its computation (``compute``, and ``compute_similarity``
for a second pair), its report (``report``): the A -> B shift, per-layer lens KL and the two-pair similarity.

The page draws its widgets from ``ShiftSettings``, caches ``compute`` (and ``compute_similarity``) and shows
``report``; ``python -m logitscope shift`` derives its flags from the same declaration and calls ``run``;
metadata.json records ``settings_metadata``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.core.errors import InputError
from analysis.core.loading import LoadedModel
from analysis.core.progress import Progress
from analysis.core.wording import plural, verb
from analysis.models.pair import ModelPair, stage
from analysis.prompts import PromptSet
from analysis.shift import LayerKL, ShiftResult, Similarity, compatibility, compute_shift, layer_kl, shift_similarity
from components.charts.shift import kl_along_text, layer_kl_line, shift_heatmap, similarity_summary, token_bars
from components.reports import Input, Inputs, Memo, Report, direct
from components.settings import as_metadata, compute_key, setting

PAGE = "checkpoint_shift"
BUNDLE = "checkpoint_shift"
KEY = "shift"
NEEDS_B = True  # the page compares checkpoint A with checkpoint B (it asks for B and stops without it)
INPUTS = (Input("--prompts", "persona_eval", "the prompts (with a response column: the reference continuation)"),)
SHARDS: tuple[str, ...] = ()  # runs in this process
PAIR2 = ("llama-world-base", "llama-world-tuned")  # the page's second pair to start from (model picks, not settings)
REFERENCES = {"response": "The prompt set's response", "greedy": "B's greedy output"}
SIMILARITY_COLUMNS = {"top": "Union of both pairs' top-N", "all": "All mapped tokens"}
SIMILARITY_ONLY = ("similarity_columns",)  # compute settings that only the second pair's comparison reads


@dataclass(frozen=True)
class ShiftSettings:
    """Every setting of the checkpoint shift (display-only ones never recompute)."""

    reference: str | None = setting(None, "the continuation both checkpoints are teacher-forced on: the set's "
                                    "responses or B's greedy output (unset: the responses when every row has one, "
                                    "else B's greedy output)", label="Reference continuation", choices=REFERENCES,
                                    widget="radio")
    n_tokens: int = setting(12, "greedy tokens N of B's output, when it is the reference", label="Greedy tokens (N)",
                            lo=1, hi=128)
    top_n: int = setting(100, "columns kept per step: B's (the reference model's) most likely tokens",
                         label="Top-N tokens per step", lo=5, hi=500)
    max_prompts: int = setting(20, "the first N prompts of the set (at most the set's size)", label="Max prompts",
                               lo=1)
    columns_shown: int = setting(15, "tokens (columns) shown in the shift heatmaps", label="Heatmap columns", lo=5,
                                 hi=200, display=True)
    show_prompt: int = setting(1, "the prompt of the heatmaps and of the KL along the text (1-based)",
                               label="Prompt", lo=1, display=True)
    similarity_columns: str = setting("top", "tokens compared between the two pairs' shifts: the union of both "
                                      "pairs' top-N, or all mapped tokens", label="Tokens compared",
                                      choices=SIMILARITY_COLUMNS, widget="radio")


@dataclass(frozen=True)
class ShiftResults:
    """What ``compute`` returns: A -> B's shift on the first prompts of the set, the per-layer lens KL when A and B
    share a tokenizer and a depth (else None, and ``message`` says why), the reference actually used."""

    shift: ShiftResult
    layer_kl: LayerKL | None
    message: str
    prompts: tuple[str, ...]
    reference: str
    name_a: str
    name_b: str


@dataclass(frozen=True)
class SimilarityResults:
    """What ``compute_similarity`` returns: whether the second pair (label_a2 -> label_b2) shifts like A -> B."""

    similarity: Similarity
    label_a2: str
    label_b2: str


def default_reference(has_responses: bool) -> str:
    """The default reference continuation: the set's responses when every row has one, else B's greedy."""
    return "response" if has_responses else "greedy"


def resolve_reference(prompt_set: PromptSet, s: ShiftSettings) -> str:
    """The reference used on this set (the declared one, else the set's default); InputError when 'response' is
    asked of a set with rows without a response."""
    has_resp = all(r.response for r in prompt_set.rows)
    reference = s.reference or default_reference(has_resp)
    if reference == "response" and not has_resp:
        raise InputError("Some prompts in this set have no response: choose B's greedy output as the reference "
                         "(--reference greedy), or use a set with a 'response' column.")
    return reference


def shift_key(s: ShiftSettings) -> tuple:
    """The cache key of ``compute``: the compute settings but those only the second pair's comparison reads."""
    return tuple((name, value) for name, value in compute_key(s) if name not in SIMILARITY_ONLY)


def _inputs(prompt_set: PromptSet, s: ShiftSettings) -> tuple[str, list[str], list[str | None]]:
    """(reference, prompts, responses) of the set's first max_prompts rows."""
    reference = resolve_reference(prompt_set, s)
    rows = prompt_set.rows[: s.max_prompts]
    responses = [r.response for r in rows] if reference == "response" else [None for _ in rows]
    return reference, [r.prompt for r in rows], responses


def compute(models: ModelPair, inputs: Inputs, s: ShiftSettings, progress: Progress = None, memo: Memo = direct
            ) -> ShiftResults:
    """A -> B's shift teacher-forced on the reference (the first max_prompts rows of --prompts), and the per-layer
    lens KL when A and B allow it; the two are parts of their own (``memo``)."""
    prompt_set = inputs["--prompts"]
    a, b = models.a, models.b
    if b is None:
        raise InputError("The checkpoint shift compares two checkpoints: load checkpoint B.")
    reference, prompts, responses = _inputs(prompt_set, s)
    comp = compatibility(a, b)
    split = 0.8 if comp.lens_kl else 1.0
    key = (a.spec, b.spec, prompt_set.sha256, reference, s.max_prompts, s.n_tokens)
    res = memo("shift.shift", (*key, s.top_n), compute_shift, a, b, prompts, responses, reference=reference,
               n_tokens=s.n_tokens, top_n=s.top_n, progress=stage(progress, 0.0, split, "shift"))
    lk = None
    if comp.lens_kl:
        lk = memo("shift.layer_kl", key, layer_kl, a, b, prompts, responses, reference=reference, n_tokens=s.n_tokens,
                  progress=stage(progress, split, 1.0, "per-layer lens KL"))
    return ShiftResults(res, lk, comp.message, tuple(prompts), reference, a.name, b.name)


def compute_similarity(models: ModelPair, second: tuple[LoadedModel, LoadedModel], inputs: Inputs, s: ShiftSettings,
                       progress: Progress = None, memo: Memo = direct) -> SimilarityResults:
    """Whether the second pair (base, tuned) shifts like A -> B on the same prompts and reference."""
    prompt_set = inputs["--prompts"]
    if models.b is None:
        raise InputError("The checkpoint shift compares two checkpoints: load checkpoint B.")
    reference, prompts, responses = _inputs(prompt_set, s)
    key = (models.a.spec, models.b.spec, second[0].spec, second[1].spec, prompt_set.sha256, reference, s.max_prompts,
           s.n_tokens, s.top_n, s.similarity_columns)
    sim = memo("shift.similarity", key, shift_similarity, (models.a, models.b), second, prompts, responses,
               reference=reference, n_tokens=s.n_tokens, top_n=s.top_n, columns=s.similarity_columns, progress=progress)
    return SimilarityResults(sim, second[0].name, second[1].name)


def shown_prompt(s: ShiftSettings, results: ShiftResults) -> int:
    """The 0-based prompt of the heatmaps (InputError when show_prompt is past the prompts compared)."""
    count = len(results.shift.prompts)
    if not 1 <= s.show_prompt <= count:
        raise InputError(f"The prompt to show ({s.show_prompt}) is out of range: {plural(count, 'prompt')} "
                         f"{verb(count, 'was', 'were')} compared (1..{count}).")
    return s.show_prompt - 1


def report(results: ShiftResults, s: ShiftSettings, similarity: SimilarityResults | None = None) -> Report:
    """The page's figures and tables for these results and display settings (no engine call); the second pair's
    when ``similarity`` is given."""
    pick = shown_prompt(s, results)
    rep = shift_report(results.shift, results.layer_kl, name_a=results.name_a, name_b=results.name_b, pick=pick,
                       n_cols=s.columns_shown)
    if results.message:
        rep.notes.insert(0, results.message)
    if similarity is not None:
        rep.merge(similarity_part(similarity, results, s))
    return rep


def similarity_part(similarity: SimilarityResults, results: ShiftResults, s: ShiftSettings) -> Report:
    """The second pair's figures and tables (what ``report`` adds when given ``similarity``)."""
    return similarity_report(similarity.similarity, results.prompts, name_a=results.name_a, name_b=results.name_b,
                             label_a2=similarity.label_a2, label_b2=similarity.label_b2,
                             pick=shown_prompt(s, results), n_cols=s.columns_shown)


def settings_metadata(s: ShiftSettings, results: ShiftResults, similarity: SimilarityResults | None = None) -> dict:
    """metadata.json's settings: every declared setting, with the reference actually used and the number of prompts
    compared (max_prompts, at most the set's size), and the second pair's labels (None when not compared)."""
    meta = as_metadata(s)
    meta["reference"] = results.reference
    meta["max_prompts"] = len(results.prompts)
    meta["second_pair"] = [similarity.label_a2, similarity.label_b2] if similarity is not None else None
    return meta


def run(models: ModelPair, inputs: Inputs, s: ShiftSettings, progress: Progress = None, memo: Memo = direct, *,
        second: tuple[LoadedModel, LoadedModel] | None = None) -> tuple[Report, dict]:
    """compute (+ compute_similarity with a second pair) + report, as the CLI runs it: (report, metadata settings)."""
    split = 0.6 if second is not None else 1.0
    results = compute(models, inputs, s, stage(progress, 0.0, split), memo)
    sim = None
    if second is not None:
        sim = compute_similarity(models, second, inputs, s, stage(progress, split, 1.0, "similarity"), memo)
    return report(results, s, sim), settings_metadata(s, results, sim)



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
                 n_cols: int = ShiftSettings.columns_shown) -> Report:
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
                      label_b2: str, pick: int = 0, n_cols: int = ShiftSettings.columns_shown) -> Report:
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


# Settings whose page default comes from the model or the data rather than the declaration (tests/test_declarations).
PAGE_DEFAULT_EXEMPT = {"reference": "the set's responses when every row has one, else B's greedy output"}

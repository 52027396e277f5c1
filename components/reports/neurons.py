"""The confidence neurons method, declared once: its settings, its computations (one per tab: ``compute_scan``,
``compute_ablation``, ``compute_induction``), its report (``report``) and the command line's ``run``.

The page draws its widgets from ``NeuronsSettings``, caches each tab's computation on that tab's settings
(``part_key``) and shows ``report``; ``python -m logitscope neurons`` derives its flags from the same declaration and
calls ``run``; metadata.json records ``settings_metadata``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

import analysis.neurons as NR
from analysis.core.errors import InputError, LogitscopeError
from analysis.core.progress import Progress
from analysis.models.pair import ModelPair, stage
from analysis.neurons import Unigram, unigram_distribution
from analysis.prompts import PromptSet
from components.charts import cards as card_charts
from components.charts import neurons as charts
from components.reports import Input, Inputs, Memo, Report, direct
from components.settings import as_metadata, compute_key, fields_of, setting

PAGE = "confidence_neurons"
BUNDLE = "confidence_neurons"
KEY = "neurons"
INPUTS = (Input("--prompts", NR.DEFAULT_REFERENCE, "the reference set: token frequencies and mean activations"),
          Input("--eval-prompts", NR.DEFAULT_REFERENCE, "prompts the ablation is evaluated on", part="ablate"),
          Input("--induction-prompts", "induction", "set of 'R R' texts of the induction study", part="induction"))
NEEDS_B = False
SHARDS = ("means",)  # the reference means of mean and clipped-mean ablation (analysis.neurons.means)
PARTS = ("ablate", "induction")  # the tabs run on demand (the scan always runs)
MODE_LABELS = {"mean": "Mean (over the reference set)", "zero": "Zero",
               "clipped": "Clipped mean (only activations above the mean are pulled down)"}
SOURCE_LABELS = {"prompts": "Prompt set of 'R R' texts",
                 "random": "Random tokens R + R (BOS first if the tokenizer adds one)"}


@dataclass(frozen=True)
class NeuronsSettings:
    """Every setting of the confidence neurons page (display-only ones never recompute)."""

    # reference set and scan
    max_reference: int = setting(128, "use at most this many reference prompts (token frequencies and mean "
                                 "activations)", label="Use at most this many reference prompts", lo=1, hi=10_000)
    processing: bool = setting(True, "paper processing: fold the final norm's gain into W_U, centre W_U over the "
                               "vocabulary and centre w_out for LayerNorm models (on copies), as TransformerLens does",
                               label="Paper processing")
    k: int | None = setting(None, "null-space size k of the entropy scan (none or empty: 1% of d_model)",
                            label="Null-space size k (empty = 1% of d_model)", lo=1, hi=100_000)
    spectrum_a: int | None = setting(None, "neuron of A's last block whose spectrum is shown (default: the scan's top "
                                     "one)", label="Neuron for the spectrum", lo=0, display=True, cli=False)
    spectrum_b: int | None = setting(None, "neuron of B's last block whose spectrum is shown (default: the scan's top "
                                     "one)", label="Neuron for the spectrum", lo=0, display=True, cli=False)
    parts: tuple[str, ...] = setting(PARTS, f"parts run after the scan, comma separated, from {','.join(PARTS)}, or "
                                     "none (the page runs a part when its tab's button is pressed)", label="Parts",
                                     choices=PARTS)
    # ablate
    neurons: str = setting("", "neurons to ablate, L{block}.N{index} comma separated (0-based block, e.g. L3.N130; the "
                           "old 3.130 form works too); empty = the top 3 of checkpoint A's scan by ρ. Any block works; "
                           "for earlier blocks the direct effect is the direct path only",
                           label="Neurons to ablate (L{block}.N{index}, comma separated)")
    mode: str = setting("mean", "ablation: replace the activations by their mean over the reference set, zero, or "
                        "the clipped mean", label="Ablation", choices=MODE_LABELS)
    max_prompts: int = setting(16, "evaluate the ablation on at most this many prompts", label="Max prompts", lo=1,
                               hi=2000)
    n_random: int = setting(10, "random baseline neurons: seeded random neurons of the same block(s), each ablated "
                            "alone", label="Random baseline neurons", lo=0, hi=200)
    seed: int = setting(0, "seed of the random baseline neurons", label="Seed", lo=0, hi=10_000)
    skip_first: int = setting(0, "skip the first positions of each prompt (the paper drops positions < 3)",
                              label="Skip first positions", lo=0, hi=64)
    as_set: bool = setting(True, "also ablate the neurons together, as one set", label="Also ablate them together")
    # induction
    induction_source: str = setting("prompts", "the induction study's repeated sequences: a prompt set of 'R R' texts "
                                    "or random tokens R + R", label="Sequences", choices=SOURCE_LABELS,
                                    widget="radio")
    induction_neurons: str = setting("", "neurons of the induction study, L{block}.N{index} comma separated; empty = "
                                     "the last-block neurons that change most on the repeat",
                                     label="Neurons (L{block}.N{index}; empty = the last-block neurons that change "
                                           "most on the repeat)")
    induction_auto: int = setting(3, "how many last-block neurons are picked when no induction neurons are given",
                                  label="Neurons picked when none are given", lo=1, hi=20)
    sequences: int = setting(16, "number of repeated sequences (random ones, or the first rows of the set)",
                             label="Sequences", lo=1, hi=200)
    length: int = setting(30, "random R length in tokens", label="Random R length", lo=2, hi=500)
    random_sets: int = setting(3, "random neuron sets ablated as a baseline", label="Random neuron sets", lo=0, hi=20)
    induction_seed: int = setting(0, "seed of the random sequences and neuron sets", label="Seed", lo=0, hi=10_000)
    # neuron card
    card_neuron: str = setting("", "neuron of the neuron card, L{block}.N{index} (0-based block); empty = the top "
                               "entropy neuron of A's scan (by rho)", label="Neuron (L{block}.N{index})")
    card_k: int = setting(10, "top tokens and top activating reference prompts shown in the neuron card",
                          label="Top k", lo=1, hi=NR.TOP_TOKENS, display=True)
    card_window: int = setting(8, "context tokens shown each side of the marked token in the neuron card's examples",
                               label="Context tokens each side", lo=0, hi=64, display=True)


S = NeuronsSettings
# The computation each part depends on (the ablation's default neurons and reference come from the scan's part).
PART_FIELDS = {
    "scan": ("max_reference", "processing", "k"),
    "ablate": ("max_reference", "processing", "k", "neurons", "mode", "max_prompts", "n_random", "seed",
               "skip_first", "as_set"),
    "induction": ("induction_source", "induction_neurons", "induction_auto", "sequences", "length", "random_sets",
                  "induction_seed"),
    "card": ("max_reference", "processing", "k", "card_neuron"),
}
if {n for names in PART_FIELDS.values() for n in names} != {f.name for f in fields_of(S) if not f.spec.display} - {"parts"}:
    raise TypeError("PART_FIELDS must cover every compute setting of NeuronsSettings (but parts: which run)")


def part_key(s: NeuronsSettings, part: str) -> tuple:
    """The cache key of one part: the compute settings it depends on (never a display-only one)."""
    return tuple((name, value) for name, value in compute_key(s) if name in PART_FIELDS[part])


@dataclass(frozen=True)
class ScanResults:
    """The scan of every checkpoint: entropy scans, and where the reference set allows, unigrams and frequency
    scans (or why the frequency scan failed); the reference prompts used and the checkpoints' names."""

    scans: Mapping[str, NR.EntropyScan]
    freqs: Mapping[str, NR.FrequencyScan]
    unigrams: Mapping[str, Unigram]
    freq_errors: Mapping[str, str]
    reference: tuple[str, ...]
    names: Mapping[str, str]


@dataclass(frozen=True)
class NeuronsResults:
    """The scan and the parts that were run ({which: result} each, None when not run)."""

    scan: ScanResults
    ablation: Mapping[str, NR.AblationResult] | None = None
    induction: Mapping[str, NR.InductionResult] | None = None
    cards: Mapping[str, NR.NeuronCard] | None = None
    card_notes: tuple[str, ...] = ()


def reference_prompts(prompt_set: PromptSet | None, max_reference: int) -> tuple[str, ...]:
    """The reference prompts used: the set's non-empty prompts, at most max_reference of them."""
    return tuple(p for p in (prompt_set.prompts if prompt_set is not None else []) if p.strip())[:max_reference]


def default_neurons(scan_a: NR.EntropyScan) -> str:
    """The page's default neurons to ablate: the top 3 of checkpoint A's scan by rho."""
    return ", ".join(scan_a.labels(scan_a.ranked[:3]))


def ablation_neurons(s: NeuronsSettings, scan: ScanResults) -> str:
    """The neurons the ablation uses: the typed ones, else the default from A's scan."""
    return s.neurons if s.neurons.strip() else default_neurons(scan.scans["A"])


def compute_scan(models: ModelPair, prompt_set: PromptSet | None, s: NeuronsSettings,
                 progress: Progress = None) -> ScanResults:
    """scan_entropy of the last block of every checkpoint and, with a reference set (``prompt_set``), its unigram
    distribution and scan_frequency over every block (a failed frequency scan is recorded, not raised)."""
    reference = reference_prompts(prompt_set, s.max_reference)
    scans, freqs, unigrams, errors = {}, {}, {}, {}
    items = models.items()
    for i, (which, lm, _card) in enumerate(items):
        scans[which] = NR.scan_entropy(lm.adapter, k=s.k, processing=s.processing, extra=())
        if reference:
            try:
                unigrams[which] = unigram_distribution(lm.tokenizer, list(reference), lm.adapter.vocab_size)
                freqs[which] = NR.scan_frequency(lm.adapter, unigrams[which], processing=s.processing)
            except LogitscopeError as err:
                errors[which] = str(err)
        if progress:
            progress((i + 1) / len(items), f"{which} scanned")
    return ScanResults(scans, freqs, unigrams, errors, reference, {w: card.name for w, _, card in items})


def compute_ablation(models: ModelPair, eval_set: PromptSet, s: NeuronsSettings, scan: ScanResults,
                     progress: Progress = None) -> dict[str, NR.AblationResult]:
    """build_units + ablate on the first max_prompts prompts of ``eval_set``, per checkpoint (InputError on bad
    neuron ids, or an empty reference set with mean or clipped-mean ablation)."""
    reference = scan.reference
    if s.mode != "zero" and not reference:
        raise InputError("The reference set is empty: mean and clipped-mean ablation need reference prompts (the "
                         "page's 'Reference set', the command line's --prompts).")
    text = ablation_neurons(s, scan)
    ids = {which: NR.parse_neuron_ids(text, lm.adapter) for which, lm, _ in models.items()}
    prompts = list(eval_set.prompts[:s.max_prompts])
    items = models.items()
    out = {}
    for i, (which, lm, _card) in enumerate(items):
        lo, hi = i / len(items), (i + 1) / len(items)
        units = NR.build_units(lm, list(ids[which]), mode=s.mode, reference=list(reference), as_set=s.as_set,
                                n_random=s.n_random, seed=s.seed,
                                progress=stage(progress, lo, lo + 0.2 * (hi - lo), which))
        uni = scan.unigrams.get(which) or unigram_distribution(lm.tokenizer, list(reference), lm.adapter.vocab_size)
        out[which] = NR.ablate(lm, prompts, units, mode=s.mode, log_p_freq=uni.log_p, min_position=s.skip_first,
                                progress=stage(progress, lo + 0.2 * (hi - lo), hi, which))
    return out


def compute_induction(models: ModelPair, induction_set: PromptSet | None, s: NeuronsSettings,
                      progress: Progress = None) -> dict[str, NR.InductionResult]:
    """The induction study per checkpoint on the set's "R R" prompts (source 'prompts') or random R + R tokens
    (BOS first when the tokenizer adds one); neurons typed, else the induction_auto that change most."""
    items = models.items()
    out = {}
    for i, (which, lm, _card) in enumerate(items):
        if s.induction_source == "random":
            seq = NR.random_sequences(lm.tokenizer, lm.adapter.vocab_size, n=s.sequences, length=s.length,
                                       seed=s.induction_seed)
        else:
            if induction_set is None:
                raise InputError("The induction study needs a prompt set of 'R R' texts (or random sequences).")
            seq = NR.prompt_sequences(lm.tokenizer, induction_set, max_rows=s.sequences)
        ids = NR.parse_neuron_ids(s.induction_neurons, lm.adapter) if s.induction_neurons.strip() else ()
        chosen = list(ids) or list(NR.select_neurons(lm, seq, n=s.induction_auto))
        out[which] = NR.induction_study(lm, seq, chosen, n_random_sets=s.random_sets, seed=s.induction_seed,
                                         progress=stage(progress, i / len(items), (i + 1) / len(items), which))
    return out


def card_neuron(s: NeuronsSettings, scan: ScanResults) -> str:
    """The neuron card's neuron: the typed one, else the top entropy neuron of A's scan (by rho)."""
    a = scan.scans["A"]
    return s.card_neuron.strip() or NR.neuron_label(a.block, int(a.ranked[0]))


def compute_card(models: ModelPair, s: NeuronsSettings, scan: ScanResults) -> tuple[dict[str, NR.NeuronCard], list]:
    """The neuron card of ``card_neuron`` on every checkpoint over the scan's reference prompts: ({which: card},
    notes for the checkpoints it failed on); InputError on a bad id (or an empty reference set)."""
    if not scan.reference:
        raise InputError("The neuron card needs reference prompts (the page's reference set, the CLI's --prompts).")
    (block, index), = NR.parse_neuron_ids(card_neuron(s, scan), models.a.adapter)[:1]
    out, notes = {}, []
    for which, lm, _card in models.items():
        try:
            out[which] = NR.neuron_card(lm, block, index, list(scan.reference))
        except LogitscopeError as err:
            if which == "A":
                raise
            notes.append(f"{which}, neuron card: {err}")
    return out, notes


def card_report(cards: Mapping[str, NR.NeuronCard], s: NeuronsSettings, names: Mapping[str, str]) -> Report:
    """Per checkpoint: the neuron's top tokens, its top activating reference prompts (table) and its histogram."""
    rep = Report()
    for which, card in cards.items():
        name = names.get(which, which)
        rep.add(f"card_tokens_{which}", card_charts.neuron_tokens_figure(card, s.card_k, name),
                card_charts.neuron_tokens_frame(card, s.card_k))
        rep.tables[f"card_examples_{which}"] = card_charts.examples_frame(card, s.card_k, s.card_window)
        rep.add(f"card_histogram_{which}", card_charts.activation_histogram(card, name),
                card_charts.activation_frame(card))
        rep.notes.extend(f"{which}, neuron card: {n}" for n in card.notes)
    return rep


def scan_part(models: ModelPair, inputs: Inputs, s: NeuronsSettings, memo: Memo = direct) -> ScanResults:
    """compute_scan on the reference set (--prompts), through ``memo``."""
    ref = inputs.get("--prompts")
    return memo("neurons.scan", (models.specs(), getattr(ref, "sha256", None), part_key(s, "scan")), compute_scan,
                models, ref, s)


def ablation_part(models: ModelPair, inputs: Inputs, s: NeuronsSettings, scan: ScanResults, progress: Progress = None,
                  memo: Memo = direct) -> dict[str, NR.AblationResult]:
    """compute_ablation on --eval-prompts, through ``memo`` (its key holds the scan's settings it depends on)."""
    eval_set = inputs.get("--eval-prompts")
    if eval_set is None:
        raise InputError("The ablation needs a prompt set to evaluate on.")
    key = (models.specs(), getattr(inputs.get("--prompts"), "sha256", None), eval_set.sha256, part_key(s, "ablate"))
    return memo("neurons.ablate", key, compute_ablation, models, eval_set, s, scan, progress=progress)


def induction_part(models: ModelPair, inputs: Inputs, s: NeuronsSettings, progress: Progress = None,
                   memo: Memo = direct) -> dict[str, NR.InductionResult]:
    """compute_induction on --induction-prompts (or random sequences), through ``memo``."""
    ind = inputs.get("--induction-prompts") if s.induction_source == "prompts" else None
    key = (models.specs(), getattr(ind, "sha256", None), part_key(s, "induction"))
    return memo("neurons.induction", key, compute_induction, models, ind, s, progress=progress)


def card_part(models: ModelPair, inputs: Inputs, s: NeuronsSettings, scan: ScanResults,
              memo: Memo = direct) -> tuple[dict[str, NR.NeuronCard], list]:
    """compute_card over the scan's reference prompts, through ``memo``."""
    key = (models.specs(), getattr(inputs.get("--prompts"), "sha256", None), part_key(s, "card"))
    return memo("neurons.card", key, compute_card, models, s, scan)


def input_needed(inp: Input, s: NeuronsSettings) -> bool:
    """Whether a run reads an input: the reference set always, the others when their part runs (the induction's
    set only for sequences from prompts)."""
    if inp.flag == "--induction-prompts":
        return "induction" in s.parts and s.induction_source == "prompts"
    return inp.part is None or inp.part in s.parts


def compute(models: ModelPair, inputs: Inputs, s: NeuronsSettings, progress: Progress = None,
            memo: Memo = direct) -> NeuronsResults:
    """The scan on the reference set (--prompts), then the ablation on --eval-prompts and the induction study, as
    ``s.parts`` asks (the command line's order and progress: scan 0-10%, ablation 10-60%, induction 60-100%), and
    the neuron card when there are reference prompts. Each is a part of its own (``memo``)."""
    scan = scan_part(models, inputs, s, memo)
    if progress is not None:
        progress(0.1, "scan")
    ablation = induction = None
    if "ablate" in s.parts:
        ablation = ablation_part(models, inputs, s, scan, stage(progress, 0.1, 0.6, "ablate"), memo)
    if "induction" in s.parts:
        induction = induction_part(models, inputs, s, stage(progress, 0.6, 1.0, "induction"), memo)
    cards, notes = card_part(models, inputs, s, scan, memo) if scan.reference else (None, [])
    return NeuronsResults(scan, ablation, induction, cards, tuple(notes))


def spectrum_picks(s: NeuronsSettings, scan: ScanResults) -> dict[str, int]:
    """{which: neuron index of the spectrum}: the chosen one, else the scan's top one."""
    chosen = {"A": s.spectrum_a, "B": s.spectrum_b}
    return {w: int(sc.top[0]) if chosen.get(w) is None else int(chosen[w]) for w, sc in scan.scans.items()}


def _set_meta(ps: PromptSet | None) -> dict | None:
    return None if ps is None else {"name": ps.name, "sha256": ps.sha256}


def settings_metadata(s: NeuronsSettings, inputs: Inputs, results: NeuronsResults) -> dict:
    """metadata.json's settings: every declared setting (the neurons ablated and the spectrum neurons as used), the
    null-space size used, the reference set, the parts in the bundle, the sets they ran on and the induction's
    neurons (auto-selected ones included)."""
    prompt_set, eval_set, induction_set = (inputs.get(f) for f in ("--prompts", "--eval-prompts",
                                                                    "--induction-prompts"))
    meta = as_metadata(s)
    scan = results.scan
    meta["neurons"] = NR.canonical_neuron_text(ablation_neurons(s, scan))
    meta["induction_neurons"] = NR.canonical_neuron_text(s.induction_neurons)
    picks = spectrum_picks(s, scan)
    meta["spectrum_a"], meta["spectrum_b"] = picks.get("A"), picks.get("B")
    meta["k_used"] = {w: int(sc.k) for w, sc in scan.scans.items()}
    meta["reference"] = {**(_set_meta(prompt_set) or {"name": None, "sha256": None}), "n_used": len(scan.reference)}
    meta["parts"] = [p for p, r in (("ablate", results.ablation), ("induction", results.induction)) if r is not None]
    meta["eval_set"] = _set_meta(eval_set) if results.ablation is not None else None
    meta["induction_set"] = (_set_meta(induction_set) if results.induction is not None
                             and s.induction_source == "prompts" else None)
    meta["induction_neurons_used"] = ({w: ", ".join(r.neurons) for w, r in results.induction.items()}
                                      if results.induction is not None else None)
    meta["card_neuron_used"] = NR.canonical_neuron_text(card_neuron(s, scan)) if results.cards else None
    return meta


def inputs_used(inputs: Inputs, results: NeuronsResults, s: NeuronsSettings) -> dict[str, PromptSet] | None:
    """{CLI flag: set} of every prompt set the bundle's results ran on (report_metadata keeps their prompts)."""
    sets = {"--prompts": inputs.get("--prompts"),
            "--eval-prompts": inputs.get("--eval-prompts") if results.ablation is not None else None,
            "--induction-prompts": (inputs.get("--induction-prompts") if results.induction is not None
                                    and s.induction_source == "prompts" else None)}
    return {flag: ps for flag, ps in sets.items() if ps is not None} or None


def report(results: NeuronsResults, s: NeuronsSettings) -> Report:
    """The page's figures and tables for these results and display settings (no engine call)."""
    scan = results.scan
    rep = neurons_report(scan.scans, scan.freqs, picks=spectrum_picks(s, scan), names=scan.names,
                         ablations=results.ablation, inductions=results.induction)
    return rep.merge(card_report(results.cards, s, scan.names)) if results.cards else rep


def run(models: ModelPair, inputs: Inputs, s: NeuronsSettings, progress: Progress = None, memo: Memo = direct
        ) -> tuple[Report, dict]:
    """compute + report, as the CLI runs it: (report, metadata settings)."""
    results = compute(models, inputs, s, progress, memo)
    return report(results, s), settings_metadata(s, inputs, results)


# ------------------------------------------------------------------------------------------ report parts
def scan_report(scans: Mapping[str, NR.EntropyScan], freqs: Mapping[str, NR.FrequencyScan] | None = None,
                picks: Mapping[str, int] | None = None) -> Report:
    """Norm-vs-rho and norm-vs-logit-variance scatters, the spectrum of one neuron (default: the scan's top one) and
    the frequency scan (when given) per checkpoint."""
    rep = Report()
    for which, scan in scans.items():
        for y in ("rho", "logit_var"):
            rep.add(f"norm_vs_{y}_{which}", charts.scan_scatter(scan, y))
        rep.tables[f"scan_{which}"] = charts.scan_frame(scan)
        rep.add(f"spectrum_{which}", charts.spectrum_figure(scan, (picks or {}).get(which, int(scan.top[0]))))
        fs = (freqs or {}).get(which)
        if fs is not None:
            rep.add(f"frequency_{which}", charts.frequency_figure(fs), charts.frequency_frame(fs))
    return rep


def compare_report(scan_a: NR.EntropyScan, scan_b: NR.EntropyScan, name_a: str, name_b: str) -> Report:
    """rho of A vs B per neuron when the shapes match; the comparison's message is the report's note."""
    rep = Report()
    fig, msg = charts.compare_scans(scan_a, scan_b, name_a, name_b)
    rep.notes.append(msg)
    if fig is not None:
        rep.add("rho_A_vs_B", fig, charts.compare_frame(scan_a, scan_b))
    return rep


def ablation_report(results: Mapping[str, NR.AblationResult], scans: Mapping[str, NR.EntropyScan] | None = None
                    ) -> Report:
    """Total vs direct effect boxes, the mediation scatter (rho from the scan when given), the per-unit summary and
    the per-token effects per checkpoint."""
    rep = Report()
    for which, res in results.items():
        summ = charts.ablation_summary_frame(res)
        rep.add(f"te_de_boxes_{which}", charts.ablation_boxes(res))
        rep.tables[f"ablation_summary_{which}"] = summ
        sc = (scans or {}).get(which)
        rho = {lab: float(sc.rho[i]) for i, lab in enumerate(sc.labels())} if sc is not None else None
        rep.add(f"mediation_{which}", charts.mediation_scatter(res, rho))
        rep.tables[f"ablation_tokens_{which}"] = charts.ablation_token_frame(res)
    return rep


def ablation_text(summ: pd.DataFrame, res: NR.AblationResult) -> str:
    """The ablation's verdict in words: mean |ΔL| of TE and DE and M per named unit, the random baseline's means."""
    named = summ[summ["kind"] != "random"]
    rnd = summ[summ["kind"] == "random"]
    lines = [f"{r.unit}: mean|ΔL| TE {r.mean_abs_dloss_te:.4f}, DE {r.mean_abs_dloss_de:.4f}, M = {r.M:.2f}"
             for r in named.itertuples()]
    if len(rnd):
        lines.append(f"random neurons (n = {len(rnd)}): mean|ΔL| TE {rnd.mean_abs_dloss_te.mean():.4f}, "
                     f"DE {rnd.mean_abs_dloss_de.mean():.4f}")
    return "  \n".join(lines) + f"  \n{res.dloss_te.shape[1]} tokens; KL is {res.kl_direction}."


def induction_report(results: Mapping[str, NR.InductionResult]) -> Report:
    """Clean vs ablated entropy and loss per position, and the study's summary, per checkpoint."""
    rep = Report()
    for which, res in results.items():
        rep.add(f"induction_{which}", charts.induction_figure(res), charts.induction_frame(res))
        rep.tables[f"induction_summary_{which}"] = pd.DataFrame([res.summary])
    return rep


def neurons_report(scans: Mapping[str, NR.EntropyScan], freqs: Mapping[str, NR.FrequencyScan] | None = None, *,
                   picks: Mapping[str, int] | None = None, names: Mapping[str, str] | None = None,
                   ablations: Mapping[str, NR.AblationResult] | None = None,
                   inductions: Mapping[str, NR.InductionResult] | None = None) -> Report:
    """Every part that was run, in the page's tab order (Scan, Ablate, Induction)."""
    rep = scan_report(scans, freqs, picks)
    if "A" in scans and "B" in scans:
        names = names or {"A": "A", "B": "B"}
        rep.merge(compare_report(scans["A"], scans["B"], names["A"], names["B"]))
    if ablations:
        rep.merge(ablation_report(ablations, scans))
    if inductions:
        rep.merge(induction_report(inductions))
    return rep


# Settings whose page default comes from the model or the data rather than the declaration (tests/test_declarations).
PAGE_DEFAULT_EXEMPT = {"parts": "the parts whose tab's button was pressed (the scan always runs)",
                       "neurons": "the top 3 of checkpoint A's scan by rho (default_neurons)",
                       "spectrum_a": "a choice among A's scan's top neurons, default its top one",
                       "spectrum_b": "a choice among B's scan's top neurons, default its top one",
                       "card_neuron": "the top entropy neuron of checkpoint A's scan by rho (card_neuron)"}

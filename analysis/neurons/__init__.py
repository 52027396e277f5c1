"""Confidence neurons (docs/methods.md section 4, Stolfo et al. 2024): weight-based scans for entropy and
token-frequency neurons, their ablation (total vs direct effect with the final norm's scale frozen), the reference
means the ablations write, the induction case study and the neuron card.
"""
from analysis.neurons.ablation import AblationResult, ablate, build_units, position_effects, unit_groups
from analysis.neurons.card import TOP_TOKENS, NeuronCard, neuron_card
from analysis.neurons.induction import (
    InductionResult,
    induction_study,
    prompt_sequences,
    random_sequences,
    select_neurons,
)
from analysis.neurons.means import activation_sums, mean_activations
from analysis.neurons.scan import (
    EntropyScan,
    FrequencyScan,
    canonical_neuron_text,
    logit_var,
    neuron_label,
    null_fraction,
    out_weights,
    parse_neuron_ids,
    parse_neuron_label,
    scan_entropy,
    scan_frequency,
    unembed_matrix,
    unembed_svd,
)
from analysis.neurons.unigram import DEFAULT_REFERENCE, Unigram, kl_to_unigram, unigram_distribution

__all__ = [
    "AblationResult",
    "DEFAULT_REFERENCE",
    "EntropyScan",
    "FrequencyScan",
    "InductionResult",
    "NeuronCard",
    "TOP_TOKENS",
    "Unigram",
    "ablate",
    "activation_sums",
    "build_units",
    "canonical_neuron_text",
    "induction_study",
    "kl_to_unigram",
    "logit_var",
    "mean_activations",
    "neuron_card",
    "neuron_label",
    "null_fraction",
    "out_weights",
    "parse_neuron_ids",
    "parse_neuron_label",
    "position_effects",
    "prompt_sequences",
    "random_sequences",
    "scan_entropy",
    "scan_frequency",
    "select_neurons",
    "unembed_matrix",
    "unembed_svd",
    "unigram_distribution",
    "unit_groups",
]

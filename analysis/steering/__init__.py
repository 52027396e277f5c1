"""Steering and persona vectors (docs/methods.md section 3): vectors fitted per layer on a contrastive prompt set
(``extract_vectors`` -> SteeringVectors) with their default layer, monitoring along them, steered forward passes and
generation, the global logit shift and sweep, persona drift between checkpoints, flagged training rows and the
vector card.
"""
from analysis.steering.activations import READ_RULES, token_ids
from analysis.steering.card import VectorCard, vector_card
from analysis.steering.contrast import split_contrast
from analysis.steering.drift import Drift, Flagged, flag_data, persona_drift
from analysis.steering.fit import METHODS, fit_direction
from analysis.steering.layer import DEFAULT_LAYER_RULE, choose_default_layer, cohens_d, default_window
from analysis.steering.steer import (
    STEER_RULE_LABELS,
    STEER_RULES,
    GenerationComparison,
    Steer,
    Sweep,
    compare_generations,
    generate_ids,
    logit_shift,
    next_token_prob,
    steered_logits,
    steering_hook,
    steering_sweep,
)
from analysis.steering.traits import DEMO_TRAIT_TOKENS, TraitTokens, default_trait_tokens
from analysis.steering.vectors import (
    METHOD_LABELS,
    READ_RULE_LABELS,
    Monitoring,
    SteeringVectors,
    check_compatible,
    extract_vectors,
    load_vectors,
    monitor,
    save_vectors,
)

__all__ = [
    "DEFAULT_LAYER_RULE",
    "DEMO_TRAIT_TOKENS",
    "Drift",
    "Flagged",
    "GenerationComparison",
    "METHODS",
    "METHOD_LABELS",
    "Monitoring",
    "READ_RULES",
    "READ_RULE_LABELS",
    "STEER_RULES",
    "STEER_RULE_LABELS",
    "Steer",
    "SteeringVectors",
    "Sweep",
    "TraitTokens",
    "VectorCard",
    "check_compatible",
    "choose_default_layer",
    "cohens_d",
    "compare_generations",
    "default_trait_tokens",
    "default_window",
    "extract_vectors",
    "fit_direction",
    "flag_data",
    "generate_ids",
    "load_vectors",
    "logit_shift",
    "monitor",
    "next_token_prob",
    "persona_drift",
    "save_vectors",
    "split_contrast",
    "steered_logits",
    "steering_hook",
    "steering_sweep",
    "token_ids",
    "vector_card",
]

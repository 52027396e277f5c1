"""Logit flow (docs/methods.md section 2): direct logit attribution of the prediction at a prompt's final position
to the embeddings, each attention and MLP write, each head and each head x source position, with log-probability
importances (``logit_flow_set`` -> FlowSetResult), and the attention patterns of every head.
"""
from analysis.flow.attention import (
    attention_pattern,
    attention_pattern_set,
    attention_patterns,
    head_label,
    parse_head_label,
)
from analysis.flow.attribution import (
    BATCH_SIZE,
    CHECK_NAMES,
    IMP_BLOCK_BYTES,
    SOURCE_IMP_LIMIT,
    failed_checks,
    imp_chunk_rows,
    importance,
    logit_flow,
    logit_flow_set,
    memory_chunks,
    tolerance,
)
from analysis.flow.capture import VALUE_SITES, capture_hooks, eager_attention, value_site
from analysis.flow.heads import o_proj_weight
from analysis.flow.results import FlowResult, FlowSetResult
from analysis.flow.tokens import resolve_token

__all__ = [
    "BATCH_SIZE",
    "CHECK_NAMES",
    "FlowResult",
    "FlowSetResult",
    "IMP_BLOCK_BYTES",
    "SOURCE_IMP_LIMIT",
    "VALUE_SITES",
    "attention_pattern",
    "attention_pattern_set",
    "attention_patterns",
    "capture_hooks",
    "eager_attention",
    "failed_checks",
    "head_label",
    "imp_chunk_rows",
    "importance",
    "logit_flow",
    "logit_flow_set",
    "memory_chunks",
    "o_proj_weight",
    "parse_head_label",
    "resolve_token",
    "tolerance",
    "value_site",
]

"""Kernel ops with their pure-torch references. Each function takes ``backend=None|"auto"|"kernel"|"reference"``
(see ``_backend.py``) and validates its inputs the same way for every backend.

Families (one module each; the module docstring documents shapes, dtypes and cache layouts):
    norm            rms_norm (zero-centred, optional residual)
    gdn             chunk_gated_delta_rule, fused_recurrent_gated_delta_rule (flash-linear-attention conventions)
    gdn_conv        causal_conv1d (prefill, varlen, per-slot state), causal_conv1d_update (decode)
    gdn_layer       gdn_gating, gated_rms_norm, gdn_prefill / gdn_decode (layer-level fused entry points)
    attention_prep  attention_prep (q/gate split, q/k norm, M-RoPE, paged KV write), mrope_cos_sin
    attention       paged_prefill_attention, paged_decode_attention, varlen_attention
    moe             moe_route, fused_moe, moe_block
    mlp             swiglu_mlp
    projection      linear, swiglu_linear (projections of up to 64 rows: the skinny kernels; GEMMs on cuBLAS)
"""

from .attention import (
    paged_attention_reference,
    paged_decode_attention,
    paged_prefill_attention,
    varlen_attention,
    varlen_attention_reference,
)
from .attention_prep import attention_prep, attention_prep_reference, mrope_cos_sin
from .gdn import (
    chunk_gated_delta_rule,
    chunk_gated_delta_rule_reference,
    fused_recurrent_gated_delta_rule,
    fused_recurrent_gated_delta_rule_reference,
)
from .gdn_conv import causal_conv1d, causal_conv1d_reference, causal_conv1d_update, causal_conv1d_update_reference
from .gdn_layer import (
    gated_rms_norm,
    gated_rms_norm_reference,
    gdn_decode,
    gdn_decode_reference,
    gdn_gating,
    gdn_gating_reference,
    gdn_prefill,
    gdn_prefill_reference,
)
from .mlp import swiglu_mlp, swiglu_mlp_reference
from .moe import fused_moe, fused_moe_reference, moe_block, moe_block_reference, moe_route, moe_route_reference
from .norm import rms_norm, rms_norm_reference
from .projection import linear, linear_reference, swiglu_linear, swiglu_linear_reference

__all__ = [
    "attention_prep", "attention_prep_reference", "causal_conv1d", "causal_conv1d_reference", "causal_conv1d_update",
    "causal_conv1d_update_reference", "chunk_gated_delta_rule", "chunk_gated_delta_rule_reference", "fused_moe",
    "fused_moe_reference", "fused_recurrent_gated_delta_rule", "fused_recurrent_gated_delta_rule_reference",
    "gated_rms_norm", "gated_rms_norm_reference", "gdn_decode", "gdn_decode_reference", "gdn_gating",
    "gdn_gating_reference", "gdn_prefill", "gdn_prefill_reference", "linear", "linear_reference", "moe_block",
    "moe_block_reference", "moe_route", "moe_route_reference", "mrope_cos_sin", "paged_attention_reference",
    "paged_decode_attention", "paged_prefill_attention", "rms_norm", "rms_norm_reference", "swiglu_linear",
    "swiglu_linear_reference", "swiglu_mlp", "swiglu_mlp_reference", "varlen_attention", "varlen_attention_reference",
]

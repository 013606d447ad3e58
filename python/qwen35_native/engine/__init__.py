"""Generation engine: sampling parameters, the batched on-device sampler, penalties, stop handling and incremental
detokenization (the scheduler/generation loop builds on these)."""

from .detokenizer import IncrementalDetokenizer
from .penalties import TokenPresence, apply_penalties
from .sampling import (
    HostSamplerOutput,
    SamplerOutput,
    SamplingTensors,
    apply_min_p,
    apply_top_k_top_p,
    draw_seed,
    penalized_logits,
    request_uniform,
    sample,
    sampling_logits,
)
from .sampling_params import SamplingParams
from .stopping import StopChecker, eos_token_ids

__all__ = [
    "HostSamplerOutput",
    "IncrementalDetokenizer",
    "SamplerOutput",
    "SamplingParams",
    "SamplingTensors",
    "StopChecker",
    "TokenPresence",
    "apply_min_p",
    "apply_penalties",
    "apply_top_k_top_p",
    "draw_seed",
    "eos_token_ids",
    "penalized_logits",
    "request_uniform",
    "sample",
    "sampling_logits",
]

"""Generation engine: ``LLM`` (generate / chat, streaming), the continuous-batching scheduler and engine loop, the
model runner with CUDA graphs for decode steps, sampling parameters, the batched on-device sampler, penalties, stop
handling and incremental detokenization."""

from .core import LLMEngine, Request, SequenceUpdate
from .detokenizer import IncrementalDetokenizer
from .llm import LLM
from .model_runner import ModelRunner, StepPlan
from .outputs import (
    ChatCompletion,
    ChatDelta,
    ChatResponse,
    CompletionOutput,
    GenerationDelta,
    RequestMetrics,
    RequestOutput,
    TokenLogprob,
)
from .penalties import TokenPresence, apply_penalties
from .sampling import (
    HostSamplerOutput,
    SamplerOutput,
    SamplingFlags,
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
from .scheduler import Scheduler
from .stopping import StopChecker, eos_token_ids
from .structured import StructuredOutputs

__all__ = [
    "LLM",
    "ChatCompletion",
    "ChatDelta",
    "ChatResponse",
    "CompletionOutput",
    "GenerationDelta",
    "HostSamplerOutput",
    "IncrementalDetokenizer",
    "LLMEngine",
    "ModelRunner",
    "Request",
    "RequestMetrics",
    "RequestOutput",
    "SamplerOutput",
    "SamplingFlags",
    "SamplingParams",
    "SamplingTensors",
    "Scheduler",
    "SequenceUpdate",
    "StepPlan",
    "TokenLogprob",
    "StopChecker",
    "StructuredOutputs",
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

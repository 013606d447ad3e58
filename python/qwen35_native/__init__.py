"""qwen35_native: hand-written CUDA kernels and a small PyTorch layer for the Qwen3.5 model family.

Public surface (DESIGN.md §4): ``ops`` (kernels with pure-torch references), ``emulator`` (thread-order control
of the SIMT emulator that runs the CUDA sources on the CPU), ``from_pretrained`` and ``configs`` (the model),
``multimodal`` (image / video preprocessing and prompt expansion), the engine (``LLM``, ``SamplingParams``), and
``serve`` (the OpenAI-compatible HTTP server).
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import (
    _C,  # noqa: F401  (registers torch.ops.qwen35_native.*)
    configs,
    emulator,
    multimodal,
    ops,
    serve,
)
from ._version import __version__
from .engine import LLM, SamplingParams, StructuredOutputs
from .model import from_pretrained

__all__ = ["LLM", "__version__", "SamplingParams", "StructuredOutputs", "build_info", "configs", "emulator",
           "from_pretrained", "multimodal", "ops", "serve"]


def build_info() -> dict:
    """What this build of the extension contains: CUDA kernels, emulator, torch version it runs under."""
    return {
        "version": __version__,
        "with_cuda_kernels": bool(_C.WITH_CUDA),
        "with_emulator": bool(_C.WITH_EMULATOR),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }

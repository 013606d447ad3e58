"""Backend selection shared by every op wrapper (DESIGN.md §4).

- ``None`` / ``"auto"``: the CUDA kernel for CUDA tensors when it supports the shapes, else the reference.
- ``"kernel"``: the kernel must run (CPU tensors run the CUDA source under the SIMT emulator); an unsupported
  shape is an error.
- ``"reference"``: the pure-torch reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

BACKENDS = (None, "auto", "kernel", "reference")


def use_kernel(op: str, backend: str | None, device: torch.device, supported: bool = True, why: str = "") -> bool:
    """True when ``op`` should run our kernel for tensors on ``device``.

    ``supported`` says whether the kernel handles these shapes/dtypes; ``why`` explains it when not.
    """
    if backend not in BACKENDS:
        raise ValueError(f"qwen35_native.{op}: backend must be None, 'auto', 'kernel' or 'reference', got {backend!r}")
    if backend == "reference":
        return False
    if backend == "kernel":
        if not supported:
            raise ValueError(f"qwen35_native.{op}: backend='kernel' does not support this input: {why}")
        return True
    return supported and device.type == "cuda"


# Ops whose kernels exist (the kernel engineers add their op names here when the kernel lands). The model reads it
# at load time to log which ops run where and to pick a backend per op (see ``model/backends.py``).
KERNEL_OPS: set[str] = {"rms_norm", "moe_route", "fused_moe", "moe_block", "causal_conv1d", "causal_conv1d_update",
                        "gdn_gating", "gated_rms_norm", "chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule",
                        "gdn_prefill", "gdn_decode", "attention_prep", "paged_prefill_attention",
                        "paged_decode_attention", "varlen_attention", "linear", "swiglu_linear", "swiglu_mlp"}

# What a kernel needs from a whole model, for ops whose kernels cover only some configurations: op ->
# ``fn(config, dtype) -> None`` (supported) or the reason it is not (``config``: the model's Qwen35Config).
# Registered by the op modules; a model loaded with backend="kernel" runs the reference for such ops (and logs why)
# instead of failing at the first call, while calling the op itself with backend="kernel" stays an error.
MODEL_SUPPORT: dict[str, Callable[[object, torch.dtype], str | None]] = {}


def has_kernel(op: str) -> bool:
    return op in KERNEL_OPS


def kernel_unsupported_for_model(op: str, config, dtype: torch.dtype) -> str | None:
    """None when ``op``'s kernel handles the model's shapes and dtype, else why not."""
    check = MODEL_SUPPORT.get(op)
    return None if check is None else check(config, dtype)


def no_kernel_yet(op: str, backend: str | None) -> None:
    """For ops without a kernel: validates ``backend`` and raises for ``backend="kernel"``; else the reference runs."""
    if backend not in BACKENDS:
        raise ValueError(f"qwen35_native.{op}: backend must be None, 'auto', 'kernel' or 'reference', got {backend!r}")
    if backend == "kernel":
        raise NotImplementedError(f"qwen35_native.{op}: no kernel yet for this op; use backend=None, 'auto' or "
                                  f"'reference' (the pure-torch reference)")

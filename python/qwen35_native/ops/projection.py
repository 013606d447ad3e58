"""Projections of a few tokens (decode steps): ``linear`` and ``swiglu_linear``.

``linear(x, weight)`` is ``F.linear(x, weight)`` (no bias); ``swiglu_linear(x, w13)`` is
``silu(x @ w_gate^T) * (x @ w_up^T)`` for a fused ``w13 = [gate; up]`` ``[2I, H]`` (the layout of the MoE shared
expert and the dense MLP), with the roundings of the unfused ops: both products, silu and the product in x's dtype.

With at most ``MAX_ROWS`` (64) rows a projection streams its weight once and does at most 64 FLOPs per weight
element: where cuBLAS measured 37 % of the H200's HBM rate on the model's projections at batch 1
(bench/results/2026-11-28-NVIDIA-H200-session9.md, the decode-step kernel table). The skinny kernels
(csrc/kernels/linear/) keep 16 loads of 16 bytes of weights in flight per lane, sum in fp32 and round once: fp32
FMAs up to 8 rows, tensor cores (mma.sync with the weight as the A operand) from 9 to 64. Above 64 rows the
products are GEMMs and run on cuBLAS (``F.linear``), as DESIGN.md §2 says.

Backends: ``None`` / ``"auto"``: the kernel for CUDA tensors of up to 64 rows that it takes (float16 / bfloat16,
``in_features % 8 == 0``, 16-byte aligned rows and weight), else ``F.linear``; the environment variable
``QWEN35_SKINNY_LINEAR=0`` keeps cuBLAS (for side-by-side timing). ``"kernel"``: the kernel for up to 64 rows (CPU
tensors: the SIMT emulator), an error where it cannot take the input, ``F.linear`` above. ``"reference"``:
``F.linear``.

Tests: tests/kernels/test_linear.py. Bench: bench/linear.py.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import _checks
from ._backend import MODEL_SUPPORT, use_kernel

MAX_ROWS = 64
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_KERNEL_DTYPES = (torch.float16, torch.bfloat16)


def linear_reference(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(x, weight)


def swiglu_linear_reference(x: torch.Tensor, w13: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x, w13).chunk(2, dim=-1)
    return F.silu(gate) * up


def _aligned_start(t: torch.Tensor) -> bool:
    # storages start 16-byte aligned (caching allocator, CPU allocator); the offset decides. No data_ptr(): the
    # wrappers stay traceable by torch.compile (fake tensors have no data)
    return t.storage_offset() * t.element_size() % 16 == 0


def _rows_aligned(x2: torch.Tensor) -> bool:
    return _aligned_start(x2) and (x2.shape[0] <= 1 or (x2.stride(0) * x2.element_size()) % 16 == 0)


def skinny_unsupported(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """None when the skinny kernel takes ``x`` (``[..., K]``, at most 64 rows) and ``weight``, else why not."""
    rows = x.numel() // max(x.shape[-1], 1)
    if x.dtype not in _KERNEL_DTYPES:
        return f"x has dtype {x.dtype}; the kernel takes float16 / bfloat16"
    if rows > MAX_ROWS:
        return f"x has {rows} rows; the kernel takes at most {MAX_ROWS} (more are GEMMs: F.linear)"
    if x.shape[-1] % 8:
        return f"in_features={x.shape[-1]} is not a multiple of 8"
    if not weight.is_contiguous() or not _aligned_start(weight):
        return "weight is not contiguous and 16-byte aligned"
    if x.is_contiguous():   # the common case, checked cheaply (eager decode steps call this ~200 times)
        return None if _aligned_start(x) else "x does not start 16-byte aligned"
    if x.stride(-1) != 1 or not _checks.rows_have_uniform_stride(x) or not _rows_aligned(x.reshape(-1, x.shape[-1])):
        return "x rows are not contiguous and 16-byte aligned"
    return None


def _enabled_by_env() -> bool:
    return os.environ.get("QWEN35_SKINNY_LINEAR", "1") != "0"


def _run(op: str, x: torch.Tensor, weight: torch.Tensor, backend: str | None, swiglu: bool, fallback: bool):
    """The kernel's output for ``x``, or None where the caller should run ``F.linear``."""
    rows = x.numel() // max(x.shape[-1], 1)
    if backend == "reference" or rows > MAX_ROWS or x.shape[-1] == 0:
        use_kernel(op, backend, x.device)   # validates the backend name
        return None
    why = skinny_unsupported(x, weight)
    if why is not None and fallback:
        return None
    auto_ok = backend == "kernel" or _enabled_by_env()
    if not use_kernel(op, backend, x.device, supported=why is None and auto_ok, why=why or ""):
        return None
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    y = x.new_empty((x2.shape[0], weight.shape[0] // 2 if swiglu else weight.shape[0]))
    torch.ops.qwen35_native.skinny_linear(x2, weight, swiglu, y)
    return y if x.dim() == 2 else y.view(*x.shape[:-1], y.shape[-1])


def _check(op: str, x: torch.Tensor, weight: torch.Tensor, name: str) -> None:
    _checks.check_tensor(op, "x", x, _DTYPES, min_dim=1)
    _checks.check_tensor(op, name, weight, (x.dtype,), dim=2)
    _checks.check_same_device(op, name, weight, x, "x")
    if weight.shape[1] != x.shape[-1]:
        _checks.fail(op, f"{name} must have shape [out_features, in_features={x.shape[-1]}], got "
                         f"{list(weight.shape)}")


def linear(x: torch.Tensor, weight: torch.Tensor, backend: str | None = None, fallback: bool = False) -> torch.Tensor:
    """``x @ weight^T`` (``F.linear`` without bias).

    Args:
        x: ``[..., K]`` float32/float16/bfloat16.
        weight: ``[N, K]`` in x's dtype.
        fallback: with ``backend="kernel"``, ``F.linear`` where the kernel cannot take the input instead of an error
            (what the model's layers and ``moe_block`` / ``swiglu_mlp`` use).
    Returns:
        ``[..., N]`` in x's dtype (fp32 sums, one rounding).
    """
    _check("linear", x, weight, "weight")
    y = _run("linear", x, weight, backend, False, fallback)
    return linear_reference(x, weight) if y is None else y


def swiglu_linear(x: torch.Tensor, w13: torch.Tensor, backend: str | None = None,
                  fallback: bool = False) -> torch.Tensor:
    """``silu(x @ w13[:I]^T) * (x @ w13[I:]^T)``.

    Args:
        x: ``[..., K]`` float32/float16/bfloat16.
        w13: ``[2I, K]`` gate rows first, then up rows; x's dtype.
        fallback: as in ``linear``.
    Returns:
        ``[..., I]`` in x's dtype.
    """
    _check("swiglu_linear", x, w13, "w13")
    if w13.shape[0] % 2:
        _checks.fail("swiglu_linear", f"w13 must have shape [2*I, K] (gate rows, then up rows), got {list(w13.shape)}")
    y = _run("swiglu_linear", x, w13, backend, True, fallback)
    return swiglu_linear_reference(x, w13) if y is None else y


def swiglu_mlp_projected(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, backend: str | None) -> torch.Tensor:
    """``down(swiglu(x w13^T))`` with both projections on the skinny kernel where it takes them (two launches
    instead of two GEMMs, silu and the product), else the unfused ops."""
    h = swiglu_linear(x, w13, backend=backend, fallback=True)
    return linear(h, w2, backend=backend, fallback=True)


def _model_support(config, dtype: torch.dtype) -> str | None:
    return None if dtype in _KERNEL_DTYPES else f"the skinny linear kernel takes float16 / bfloat16, not {dtype}"


MODEL_SUPPORT["linear"] = _model_support
MODEL_SUPPORT["swiglu_mlp"] = _model_support


@torch.library.register_fake("qwen35_native::skinny_linear")
def _skinny_linear_fake(x, weight, swiglu, out):
    return None

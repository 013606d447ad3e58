"""Zero-centred RMSNorm, optionally fused with the residual add (MODEL_SPEC §3a).

Kernel: csrc/kernels/norm/rms_norm.cu. Tests: tests/kernels/test_norm.py. Bench: bench/norm.py.
"""

from __future__ import annotations

import torch

from . import _checks
from ._backend import use_kernel

_OP = "rms_norm"


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                       residual: torch.Tensor | None = None):
    """Pure-torch reference. fp32 math; ``x + residual`` is rounded to x's dtype (the model's residual stream)."""
    if residual is not None:
        x = (x.float() + residual.float()).to(x.dtype)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    y = (y * (1.0 + weight.float())).to(x.dtype)
    return y if residual is None else (y, x)


def _check(x, weight, eps, residual) -> None:
    _checks.check_tensor(_OP, "x", x, _checks.FLOAT_DTYPES, min_dim=1)
    _checks.check_tensor(_OP, "weight", weight, (x.dtype, torch.float32), dim=1)
    _checks.check_same_device(_OP, "weight", weight, x, "x")
    _checks.check_shape(_OP, "weight", weight, [x.shape[-1]], "[hidden_size]")
    _checks.check_rows(_OP, "x", x)
    if not weight.is_contiguous():
        raise ValueError(f"qwen35_native.{_OP}: weight must be contiguous, got strides {list(weight.stride())}")
    if not eps >= 0:
        raise ValueError(f"qwen35_native.{_OP}: eps must be >= 0, got {eps}")
    if residual is not None:
        _checks.check_tensor(_OP, "residual", residual, (x.dtype,))
        _checks.check_same_device(_OP, "residual", residual, x, "x")
        _checks.check_shape(_OP, "residual", residual, list(x.shape), "x.shape")
        _checks.check_rows(_OP, "residual", residual)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, residual: torch.Tensor | None = None,
             backend: str | None = None):
    """``y = s / sqrt(mean(s^2, -1) + eps) * (1 + weight)`` with ``s = x`` or ``s = x + residual``.

    Args:
        x: ``[..., H]`` float32/float16/bfloat16, last dim contiguous, leading dims collapsible to rows.
        weight: ``[H]`` in x's dtype or float32 (zero-centred: the scale is ``1 + weight``).
        residual: optional ``[..., H]`` in x's dtype; then ``s = x + residual`` rounded to x's dtype.
    Returns:
        ``y`` (x's shape and dtype), or ``(y, s)`` when ``residual`` is given.
    """
    _check(x, weight, eps, residual)
    if not use_kernel(_OP, backend, x.device):
        return rms_norm_reference(x, weight, eps, residual)
    if residual is None:
        return torch.ops.qwen35_native.rms_norm(x, weight, float(eps))
    return torch.ops.qwen35_native.fused_add_rms_norm(x, residual, weight, float(eps))


@torch.library.register_fake("qwen35_native::rms_norm")
def _rms_norm_fake(x, weight, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("qwen35_native::fused_add_rms_norm")
def _fused_add_rms_norm_fake(x, residual, weight, eps):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, memory_format=torch.contiguous_format))

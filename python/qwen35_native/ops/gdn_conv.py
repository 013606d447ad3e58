"""Causal depthwise conv1d + SiLU over the GDN q|k|v channels (MODEL_SPEC §3b.3), prefill and decode.

``y_t[c] = silu( sum_{j < W} weight[c, j] * x_{t - W + 1 + j}[c] )`` with the inputs before a sequence's first
token taken from its conv state (the last ``W - 1`` inputs seen) or zeros. HF rounds the conv output to the model
dtype before the SiLU; the reference does the same (fp32 sums, two roundings).

Layouts:
    x ``[T, C]`` token-major (rows may be strided: the model passes a column slice of the fused input projection);
    weight ``[C, W]`` (the checkpoint's ``conv1d.weight [C, 1, W]`` squeezed); conv state cache
    ``[num_slots, C, W - 1]`` in x's dtype, column ``W - 2`` is the newest input; sequence n owns slot
    ``slots[n]``.

Kernels: csrc/kernels/gdn/causal_conv1d.cu (widths 2..4). Tests: tests/model/test_ops_gdn_layer.py (vs HF),
tests/kernels/test_gdn_conv.py (kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from ._backend import use_kernel

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_KERNEL_WIDTHS = (2, 3, 4)


def _kernel_support(weight, conv_state) -> tuple[bool, str]:
    if weight.shape[1] not in _KERNEL_WIDTHS:
        return False, f"kernel width {weight.shape[1]} (the kernel supports 2..4)"
    if conv_state is not None and not conv_state.is_contiguous():
        return False, "conv_state is not contiguous (the kernel updates the cache in place)"
    return True, ""


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.shape[-1] <= 1 or x.stride(-1) == 1 else x.contiguous()


def _check_common(op, x, weight, activation):
    _checks.check_tensor(op, "x", x, _DTYPES, dim=2)
    _checks.check_tensor(op, "weight", weight, (x.dtype, torch.float32), dim=2)
    _checks.check_same_device(op, "weight", weight, x, "x")
    _checks.check_dim_size(op, "weight", weight, 0, x.shape[1], "channels of x")
    if weight.shape[1] < 2:
        _checks.fail(op, f"weight must have a kernel width >= 2, got shape {list(weight.shape)}")
    if activation not in ("silu", None):
        _checks.fail(op, f"activation must be 'silu' or None, got {activation!r}")


def _check_state(op, conv_state, slots, n, x, width):
    _checks.check_tensor(op, "conv_state", conv_state, (x.dtype,), dim=3)
    _checks.check_same_device(op, "conv_state", conv_state, x, "x")
    if conv_state.shape[1] != x.shape[1] or conv_state.shape[2] != width - 1:
        _checks.fail(op, f"conv_state must have shape [num_slots, C={x.shape[1]}, W-1={width - 1}], got "
                         f"{list(conv_state.shape)}")
    if slots is None:
        _checks.fail(op, "slots must be given with conv_state (one cache slot per sequence)")
    _checks.check_same_device(op, "slots", slots, x, "x")
    _checks.check_indices(op, "slots", slots, n, conv_state.shape[0], "num_slots")
    _checks.check_unique(op, "slots", slots)


def _conv_activation(windows: torch.Tensor, weight: torch.Tensor, activation, dtype) -> torch.Tensor:
    """windows [..., C, W] (oldest first) -> y [..., C]: fp32 sum, rounded to dtype, then SiLU rounded again."""
    y = (windows.float() * weight.float()).sum(-1).to(dtype)
    return F.silu(y.float()).to(dtype) if activation == "silu" else y


def causal_conv1d_reference(x, weight, cu_seqlens=None, conv_state=None, slots=None, has_initial_state=None,
                            activation="silu"):
    """Pure-torch prefill conv (see :func:`causal_conv1d`)."""
    T, C = x.shape
    W = weight.shape[1]
    bounds = [0, T] if cu_seqlens is None else cu_seqlens.tolist()
    y = torch.empty(T, C, dtype=x.dtype, device=x.device)
    for n in range(len(bounds) - 1):
        s, e = bounds[n], bounds[n + 1]
        init = x.new_zeros(C, W - 1)
        if conv_state is not None and has_initial_state is not None and bool(has_initial_state[n]):
            init = conv_state[int(slots[n])]
        seq = torch.cat([init, x[s:e].t()], dim=1)                    # [C, W-1+L]
        if e > s:
            windows = seq.unfold(1, W, 1)                             # [C, L, W]
            y[s:e] = _conv_activation(windows, weight[:, None, :], activation, x.dtype).t()
        if conv_state is not None:
            conv_state[int(slots[n])] = seq[:, seq.shape[1] - (W - 1):]
    return y


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                  conv_state: torch.Tensor | None = None, slots: torch.Tensor | None = None,
                  has_initial_state: torch.Tensor | None = None, activation: str | None = "silu",
                  backend: str | None = None) -> torch.Tensor:
    """Prefill: causal depthwise conv1d (+ SiLU) over packed sequences, reading/writing per-slot conv states.

    Args:
        x: ``[T, C]`` float32/float16/bfloat16, channels contiguous (rows may be strided).
        weight: ``[C, W]`` in x's dtype or float32.
        cu_seqlens: int32/int64 ``[N+1]`` sequence offsets in x (None: one sequence).
        conv_state: optional ``[num_slots, C, W-1]`` cache in x's dtype; when given, the last ``W-1`` inputs of
            sequence n (including earlier state when the sequence is shorter) are written to ``conv_state[slots[n]]``.
        slots: int32/int64 ``[N]`` cache slot per sequence (distinct), required with conv_state.
        has_initial_state: bool ``[N]``: sequence n continues from ``conv_state[slots[n]]`` (else from zeros).
        activation: ``"silu"`` or None.
    Returns:
        ``y [T, C]`` in x's dtype (contiguous).
    """
    op = "causal_conv1d"
    _check_common(op, x, weight, activation)
    n = 1
    if cu_seqlens is not None:
        _checks.check_same_device(op, "cu_seqlens", cu_seqlens, x, "x")
        n = _checks.check_cu_seqlens(op, cu_seqlens, x.shape[0])
    if conv_state is not None:
        _check_state(op, conv_state, slots, n, x, weight.shape[1])
    if has_initial_state is not None:
        _checks.check_tensor(op, "has_initial_state", has_initial_state, (torch.bool,), dim=1)
        if has_initial_state.numel() != n or conv_state is None:
            _checks.fail(op, f"has_initial_state must have {n} entries and come with conv_state, got shape "
                             f"{list(has_initial_state.shape)}")
    supported, why = _kernel_support(weight, conv_state)
    if not use_kernel(op, backend, x.device, supported, why):
        return causal_conv1d_reference(x, weight, cu_seqlens, conv_state, slots, has_initial_state, activation)
    cu = cu_seqlens.contiguous() if cu_seqlens is not None else None
    slots = slots.contiguous() if slots is not None else None
    has_init = has_initial_state.contiguous() if has_initial_state is not None else None
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.ops.qwen35_native.causal_conv1d(_last_dim_contiguous(x), weight.contiguous(), cu, conv_state, slots,
                                          has_init, activation == "silu", y)
    return y


def causal_conv1d_update_reference(x, conv_state, weight, slots, activation="silu"):
    """Pure-torch decode conv step (see :func:`causal_conv1d_update`)."""
    idx = slots.long()
    windows = torch.cat([conv_state[idx], x[:, :, None]], dim=2)        # [N, C, W]
    conv_state[idx] = windows[:, :, 1:]
    return _conv_activation(windows, weight, activation, x.dtype)


def causal_conv1d_update(x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, slots: torch.Tensor,
                         activation: str | None = "silu", backend: str | None = None) -> torch.Tensor:
    """Decode: one new token per sequence; shifts it into ``conv_state[slots[n]]`` in place and returns the conv.

    Args:
        x: ``[N, C]`` one token of each of N sequences (rows may be strided).
        conv_state: ``[num_slots, C, W-1]`` in x's dtype, updated in place.
        weight: ``[C, W]`` in x's dtype or float32.
        slots: int32/int64 ``[N]`` distinct cache slots.
    Returns:
        ``y [N, C]`` in x's dtype.
    """
    op = "causal_conv1d_update"
    _check_common(op, x, weight, activation)
    _check_state(op, conv_state, slots, x.shape[0], x, weight.shape[1])
    supported, why = _kernel_support(weight, conv_state)
    if not use_kernel(op, backend, x.device, supported, why):
        return causal_conv1d_update_reference(x, conv_state, weight, slots, activation)
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.ops.qwen35_native.causal_conv1d_update(_last_dim_contiguous(x), conv_state, weight.contiguous(),
                                                 slots.contiguous(), activation == "silu", y)
    return y

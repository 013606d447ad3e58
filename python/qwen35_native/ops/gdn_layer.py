"""Gated DeltaNet layer pieces (MODEL_SPEC §3b): gating, gated RMSNorm, and the layer-level fused entry points
the model calls (conv + gating + L2 norm + scan + gated norm, reading and writing the state caches by slot).

Cache layouts (DESIGN.md §4), one pair per GDN layer:
    conv_state ``[num_slots, conv_dim, W - 1]`` in the model dtype (the last W-1 pre-conv q|k|v inputs);
    ssm_state  ``[num_slots, Hv, K, V]`` float32 (the delta-rule state S of each value head, S[k, v]).
    Sequence n owns slot ``slots[n]``; a sequence with ``has_initial_state[n] == False`` starts from zeros and its
    slots are overwritten (the engine never has to clear a slot).

Sizes are read from the tensors: ``Hv = A_log.numel()``, ``V = norm_weight.numel()``, ``K = ssm_state.shape[2]``,
``Hk = (conv_dim - Hv * V) / (2 * K)``; the q|k|v channel order is ``[Hk*K | Hk*K | Hv*V]``, head-major.

Kernels: csrc/kernels/gdn/ (gdn_prefill: conv + chunk scan, gdn_decode: conv update + recurrent step; K = V = 128,
conv widths 2..4; the prefill scan takes float16/bfloat16). Tests: tests/model/test_ops_gdn_layer.py (vs HF),
tests/kernels/test_gdn_layer.py, tests/kernels/test_gdn_norm_gating.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from ._backend import MODEL_SUPPORT, use_kernel
from .gdn import (
    AUTO_SEGMENT,
    KERNEL_HEAD_DIM,
    SHORTCUT_LOG_DECAY,
    chunk_gated_delta_rule_reference,
    fused_recurrent_gated_delta_rule_reference,
)
from .gdn_conv import causal_conv1d_reference, causal_conv1d_update_reference

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def gdn_gating_reference(a, b, A_log, dt_bias):
    g = -A_log.float().exp() * F.softplus(a.float() + dt_bias.float())
    beta = torch.sigmoid(b.float()).to(b.dtype)   # HF: sigmoid in b's dtype; one rounding either way
    return g, beta


def gdn_gating(a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
               backend: str | None = None):
    """``g = -exp(A_log) * softplus(a + dt_bias)`` (fp32) and ``beta = sigmoid(b)`` (rounded to b's dtype).

    Args:
        a, b: ``[..., Hv]`` float32/float16/bfloat16 (same dtype).
        A_log, dt_bias: ``[Hv]`` float32 or a's dtype.
    Returns:
        ``(g [..., Hv] float32, beta [..., Hv] in b's dtype)``.
    """
    op = "gdn_gating"
    _checks.check_tensor(op, "a", a, _DTYPES, min_dim=1)
    _checks.check_tensor(op, "b", b, (a.dtype,))
    _checks.check_shape(op, "b", b, list(a.shape), "a.shape")
    for name, t in (("A_log", A_log), ("dt_bias", dt_bias)):
        _checks.check_tensor(op, name, t, (torch.float32, a.dtype), dim=1)
        _checks.check_shape(op, name, t, [a.shape[-1]], "[Hv]")
        _checks.check_same_device(op, name, t, a, "a")
    _checks.check_same_device(op, "b", b, a, "a")
    if not use_kernel(op, backend, a.device):
        return gdn_gating_reference(a, b, A_log, dt_bias)
    g = torch.empty(a.shape, dtype=torch.float32, device=a.device)
    beta = torch.empty(a.shape, dtype=b.dtype, device=a.device)
    hv = a.shape[-1]
    torch.ops.qwen35_native.gdn_gating(_rows(a, hv), _rows(b, hv), A_log.contiguous(), dt_bias.contiguous(),
                                       g.view(-1, hv), beta.view(-1, hv))
    return g, beta


def _rows(x: torch.Tensor, width: int) -> torch.Tensor:
    """``x [..., width]`` as rows ``[n, width]`` with contiguous columns (a view when the layout allows)."""
    rows = x.reshape(-1, width)
    return rows if width <= 1 or rows.stride(1) == 1 else rows.contiguous()


def gated_rms_norm_reference(x, z, weight, eps=1e-6):
    xf = x.float()
    n = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)   # HF rounds before * w
    y = (weight.float() * n.float()).to(torch.promote_types(weight.dtype, x.dtype))
    return (y.float() * F.silu(z.float())).to(x.dtype)


def gated_rms_norm(x: torch.Tensor, z: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6,
                   backend: str | None = None) -> torch.Tensor:
    """``rmsnorm(x) * weight * silu(z)`` over the last dim (plain ``weight``, not ``1 + weight``; norm before gate).

    Args:
        x: ``[..., V]`` float32/float16/bfloat16 (one row per token and value head).
        z: ``[..., V]`` gate, x's dtype, same shape.
        weight: ``[V]`` x's dtype or float32, shared by all heads.
    Returns:
        ``[..., V]`` in x's dtype.
    """
    op = "gated_rms_norm"
    _checks.check_tensor(op, "x", x, _DTYPES, min_dim=1)
    _checks.check_tensor(op, "z", z, (x.dtype,))
    _checks.check_shape(op, "z", z, list(x.shape), "x.shape")
    _checks.check_tensor(op, "weight", weight, (x.dtype, torch.float32), dim=1)
    _checks.check_shape(op, "weight", weight, [x.shape[-1]], "[V]")
    for name, t in (("z", z), ("weight", weight)):
        _checks.check_same_device(op, name, t, x, "x")
    if not eps >= 0:
        _checks.fail(op, f"eps must be >= 0, got {eps}")
    if not use_kernel(op, backend, x.device):
        return gated_rms_norm_reference(x, z, weight, eps)
    v = x.shape[-1]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    torch.ops.qwen35_native.gated_rms_norm(_rows(x, v), _rows(z, v), weight.contiguous(), float(eps), y.view(-1, v))
    return y


def _sizes(op, qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state):
    """Validates the layer-level arguments; returns (Hk, Hv, K, V)."""
    T = qkv.shape[0] if qkv.dim() == 2 else -1
    _checks.check_tensor(op, "mixed_qkv", qkv, _DTYPES, dim=2)
    Hv, V = A_log.numel(), norm_weight.numel()
    _checks.check_tensor(op, "ssm_state", ssm_state, (torch.float32,), dim=4)
    K = ssm_state.shape[2]
    conv_dim = qkv.shape[1]
    if K == 0 or (conv_dim - Hv * V) <= 0 or (conv_dim - Hv * V) % (2 * K):
        _checks.fail(op, f"mixed_qkv width {conv_dim} must be 2*Hk*K + Hv*V with K={K} (ssm_state), Hv={Hv} "
                         f"(A_log), V={V} (norm_weight)")
    Hk = (conv_dim - Hv * V) // (2 * K)
    if Hv % Hk:
        _checks.fail(op, f"value heads Hv={Hv} must be a multiple of key heads Hk={Hk}")
    _checks.check_dim_size(op, "ssm_state", ssm_state, 1, Hv, "Hv")
    _checks.check_dim_size(op, "ssm_state", ssm_state, 3, V, "V")
    for name, t, shape in (("z", z, [T, Hv * V]), ("a", a, [T, Hv]), ("b", b, [T, Hv])):
        _checks.check_tensor(op, name, t, (qkv.dtype,))
        _checks.check_shape(op, name, t, shape, "[T, ...]")
    _checks.check_tensor(op, "conv_weight", conv_weight, (qkv.dtype, torch.float32), dim=2)
    _checks.check_dim_size(op, "conv_weight", conv_weight, 0, conv_dim, "conv_dim")
    for name, t in (("A_log", A_log), ("dt_bias", dt_bias), ("norm_weight", norm_weight)):
        _checks.check_tensor(op, name, t, (torch.float32, qkv.dtype), dim=1)
    _checks.check_shape(op, "dt_bias", dt_bias, [Hv], "[Hv]")
    _checks.check_tensor(op, "conv_state", conv_state, (qkv.dtype,), dim=3)
    if list(conv_state.shape[1:]) != [conv_dim, conv_weight.shape[1] - 1]:
        _checks.fail(op, f"conv_state must have shape [num_slots, {conv_dim}, {conv_weight.shape[1] - 1}], got "
                         f"{list(conv_state.shape)}")
    if ssm_state.shape[0] != conv_state.shape[0]:
        _checks.fail(op, f"ssm_state and conv_state must have the same number of slots, got "
                         f"{ssm_state.shape[0]} and {conv_state.shape[0]}")
    for name, t in (("z", z), ("a", a), ("b", b), ("conv_weight", conv_weight), ("A_log", A_log),
                    ("dt_bias", dt_bias), ("norm_weight", norm_weight), ("conv_state", conv_state),
                    ("ssm_state", ssm_state)):
        _checks.check_same_device(op, name, t, qkv, "mixed_qkv")
    return Hk, Hv, K, V


def _dims(mixed_qkv, A_log, norm_weight, ssm_state):
    Hv, V, K = A_log.numel(), norm_weight.numel(), ssm_state.shape[2]
    return (mixed_qkv.shape[1] - Hv * V) // (2 * K), Hv, K, V


def _core_inputs(y, a, b, A_log, dt_bias, Hk, Hv, K, V):
    """Conv output [T, conv_dim] -> q, k [1, T, Hk, K], v [1, T, Hv, V], g, beta [1, T, Hv]."""
    T = y.shape[0]
    q, k, v = torch.split(y, [Hk * K, Hk * K, Hv * V], dim=1)
    g, beta = gdn_gating_reference(a, b, A_log, dt_bias)
    return (q.reshape(1, T, Hk, K), k.reshape(1, T, Hk, K), v.reshape(1, T, Hv, V), g[None], beta[None])


def gdn_prefill_reference(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state,
                          cu_seqlens, slots, has_initial_state, eps=1e-6):
    Hk, Hv, K, V = _dims(mixed_qkv, A_log, norm_weight, ssm_state)
    T = mixed_qkv.shape[0]
    y = causal_conv1d_reference(mixed_qkv, conv_weight, cu_seqlens, conv_state, slots, has_initial_state)
    q, k, v, g, beta = _core_inputs(y, a, b, A_log, dt_bias, Hk, Hv, K, V)
    idx = slots.long()
    init = torch.where(has_initial_state[:, None, None, None], ssm_state[idx], 0.0)  # never reads stale slots
    o, final = chunk_gated_delta_rule_reference(q, k, v, g, beta, None, init, True, cu_seqlens, True)
    ssm_state[idx] = final
    out = gated_rms_norm_reference(o[0], z.reshape(T, Hv, V), norm_weight, eps)
    return out.reshape(T, Hv * V)


def gdn_decode_reference(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state,
                         slots, eps=1e-6, out_slots=None):
    if out_slots is not None:  # in place at slots, then the new states moved to out_slots and the old ones back
        moved = out_slots.long() != slots.long()
        src, dst = slots.long()[moved], out_slots.long()[moved]
        old = conv_state[src].clone(), ssm_state[src].clone()
        out = gdn_decode_reference(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state,
                                   ssm_state, slots, eps)
        conv_state[dst], ssm_state[dst] = conv_state[src], ssm_state[src]
        conv_state[src], ssm_state[src] = old
        return out
    Hk, Hv, K, V = _dims(mixed_qkv, A_log, norm_weight, ssm_state)
    N = mixed_qkv.shape[0]
    y = causal_conv1d_update_reference(mixed_qkv, conv_state, conv_weight, slots)
    q, k, v, g, beta = (t.transpose(0, 1) for t in _core_inputs(y, a, b, A_log, dt_bias, Hk, Hv, K, V))  # B=N, T=1
    idx = slots.long()
    o, final = fused_recurrent_gated_delta_rule_reference(q, k, v, g, beta, None, ssm_state[idx], True, None, True)
    ssm_state[idx] = final
    out = gated_rms_norm_reference(o[:, 0], z.reshape(N, Hv, V), norm_weight, eps)
    return out.reshape(N, Hv * V)


def _layer_kernel_support(mixed_qkv, conv_weight, conv_state, ssm_state, prefill: bool) -> tuple[bool, str]:
    if prefill and mixed_qkv.dtype not in (torch.float16, torch.bfloat16):
        return False, f"mixed_qkv has dtype {str(mixed_qkv.dtype)[6:]} (the prefill kernel takes float16/bfloat16)"
    if ssm_state.shape[2] != KERNEL_HEAD_DIM or ssm_state.shape[3] != KERNEL_HEAD_DIM:
        return False, f"head dims K={ssm_state.shape[2]}, V={ssm_state.shape[3]} (the kernels support K = V = 128)"
    if conv_weight.shape[1] not in (2, 3, 4):
        return False, f"conv kernel width {conv_weight.shape[1]} (the kernels support 2..4)"
    if not (conv_state.is_contiguous() and ssm_state.is_contiguous()):
        return False, "the state caches must be contiguous (the kernels update them in place)"
    return True, ""


def _model_support(prefill: bool):
    """Whether the layer kernels cover a model (``config``: its Qwen35Config): None, or why not."""
    def why_not(config, dtype) -> str | None:
        cfg = config.text
        if prefill and dtype not in (torch.float16, torch.bfloat16):
            return f"the prefill kernel takes float16/bfloat16, the model is {str(dtype)[6:]}"
        if (cfg.linear_key_head_dim, cfg.linear_value_head_dim) != (KERNEL_HEAD_DIM, KERNEL_HEAD_DIM):
            return f"the kernels support K = V = {KERNEL_HEAD_DIM}"
        return None if cfg.linear_conv_kernel_dim in (2, 3, 4) else "the kernels support conv widths 2..4"
    return why_not


MODEL_SUPPORT["gdn_prefill"] = _model_support(prefill=True)
MODEL_SUPPORT["gdn_decode"] = _model_support(prefill=False)


def _cols(t: torch.Tensor) -> torch.Tensor:
    """A [T, C] tensor with contiguous columns (rows may stay strided: column slices of a fused projection)."""
    return t if t.shape[1] <= 1 or t.stride(1) == 1 else t.contiguous()


def _check_batch(op, mixed_qkv, conv_state, cu_seqlens, slots, has_initial_state):
    n = mixed_qkv.shape[0]
    if cu_seqlens is not None:
        _checks.check_same_device(op, "cu_seqlens", cu_seqlens, mixed_qkv, "mixed_qkv")
        n = _checks.check_cu_seqlens(op, cu_seqlens, mixed_qkv.shape[0])
    _checks.check_same_device(op, "slots", slots, mixed_qkv, "mixed_qkv")
    _checks.check_indices(op, "slots", slots, n, conv_state.shape[0], "num_slots")
    _checks.check_unique(op, "slots", slots)
    if has_initial_state is not None:
        _checks.check_tensor(op, "has_initial_state", has_initial_state, (torch.bool,), dim=1)
        _checks.check_same_device(op, "has_initial_state", has_initial_state, mixed_qkv, "mixed_qkv")
        if has_initial_state.numel() != n:
            _checks.fail(op, f"has_initial_state must have {n} entries, got shape {list(has_initial_state.shape)}")


def gdn_prefill(mixed_qkv: torch.Tensor, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                conv_weight: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor, norm_weight: torch.Tensor,
                conv_state: torch.Tensor, ssm_state: torch.Tensor, cu_seqlens: torch.Tensor, slots: torch.Tensor,
                has_initial_state: torch.Tensor, eps: float = 1e-6, backend: str | None = None) -> torch.Tensor:
    """One GDN layer's token mixing for packed sequences of any length (prefill or prefill chunks).

    conv1d+SiLU (from/to ``conv_state``) -> split q|k|v -> gating -> L2-normalised, scaled chunked delta rule
    (from/to ``ssm_state``) -> gated RMSNorm with z.

    Args:
        mixed_qkv: ``[T, conv_dim]`` the in_proj_qkv output (model dtype; rows may be strided).
        z: ``[T, Hv*V]``; a, b: ``[T, Hv]``; all in mixed_qkv's dtype (rows may be strided).
        conv_weight: ``[conv_dim, W]``; A_log, dt_bias: ``[Hv]``; norm_weight: ``[V]`` (fp32 or model dtype).
        conv_state, ssm_state: the layer's caches (module docstring), updated in place at ``slots``.
        cu_seqlens: int32/int64 ``[N+1]``; slots: int32/int64 ``[N]`` distinct; has_initial_state: bool ``[N]``.
    Returns:
        ``[T, Hv*V]`` in mixed_qkv's dtype (input of out_proj).
    """
    op = "gdn_prefill"
    _sizes(op, mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state)
    _check_batch(op, mixed_qkv, conv_state, cu_seqlens, slots, has_initial_state)
    if has_initial_state is None:
        _checks.fail(op, "has_initial_state must be a bool tensor [N]")
    supported, why = _layer_kernel_support(mixed_qkv, conv_weight, conv_state, ssm_state, prefill=True)
    if use_kernel(op, backend, mixed_qkv.device, supported, why):
        out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        torch.ops.qwen35_native.gdn_prefill(
            _cols(mixed_qkv), _cols(z), _cols(a), _cols(b), conv_weight.contiguous(), A_log.contiguous(),
            dt_bias.contiguous(), norm_weight.contiguous(), conv_state, ssm_state, cu_seqlens.contiguous(),
            slots.contiguous(), has_initial_state.contiguous(), float(eps), AUTO_SEGMENT, SHORTCUT_LOG_DECAY, out)
        return out
    return gdn_prefill_reference(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state,
                                 ssm_state, cu_seqlens, slots, has_initial_state, eps)


def gdn_decode(mixed_qkv: torch.Tensor, z: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
               conv_weight: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor, norm_weight: torch.Tensor,
               conv_state: torch.Tensor, ssm_state: torch.Tensor, slots: torch.Tensor, eps: float = 1e-6,
               backend: str | None = None, out_slots: torch.Tensor | None = None) -> torch.Tensor:
    """One GDN layer's token mixing for one new token of each of N sequences continuing from their cached states.

    Same math as :func:`gdn_prefill` with ``T == N``, one token per sequence, ``has_initial_state`` all true:
    conv update and recurrent step, both states updated in place at ``slots`` ``[N]``. Returns ``[N, Hv*V]``.
    ``out_slots`` ``[N]`` (the dtype of slots): write the new states there instead and leave ``slots`` as they
    were (speculative verification chains a sequence's positions through scratch slots); each entry either equals
    its ``slots`` entry (in place) or is no sequence's slot.
    """
    op = "gdn_decode"
    _sizes(op, mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state)
    _check_batch(op, mixed_qkv, conv_state, None, slots, None)
    if out_slots is not None:
        _check_out_slots(op, mixed_qkv, conv_state, slots, out_slots)
    supported, why = _layer_kernel_support(mixed_qkv, conv_weight, conv_state, ssm_state, prefill=False)
    if use_kernel(op, backend, mixed_qkv.device, supported, why):
        out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
        torch.ops.qwen35_native.gdn_decode(
            _cols(mixed_qkv), _cols(z), _cols(a), _cols(b), conv_weight.contiguous(), A_log.contiguous(),
            dt_bias.contiguous(), norm_weight.contiguous(), conv_state, ssm_state, slots.contiguous(), float(eps), out,
            None if out_slots is None else out_slots.contiguous())
        return out
    return gdn_decode_reference(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state,
                                ssm_state, slots, eps, out_slots)


def _check_out_slots(op, mixed_qkv, conv_state, slots, out_slots):
    _checks.check_same_device(op, "out_slots", out_slots, mixed_qkv, "mixed_qkv")
    _checks.check_indices(op, "out_slots", out_slots, slots.numel(), conv_state.shape[0], "num_slots")
    if out_slots.dtype != slots.dtype:
        _checks.fail(op, f"out_slots must have the dtype of slots ({str(slots.dtype)[6:]}), got "
                         f"{str(out_slots.dtype)[6:]}")
    _checks.check_unique(op, "out_slots", out_slots)
    if out_slots.device.type == "cpu":  # a new state must not land on another sequence's old one before it is read
        mine, taken = out_slots.tolist(), slots.tolist()
        if any(o != s and o in set(taken) for o, s in zip(mine, taken)):
            _checks.fail(op, f"out_slots must equal slots or name slots no sequence reads, got out_slots {mine} "
                             f"for slots {taken}")

"""Argument packing for the GDN kernel ops: flash-linear-attention ``[B, T, H, D]`` inputs become the packed
``[B*T, H, D]`` tensors with 16-byte aligned rows the CUDA kernels load (copies only when a layout is unusable),
plus the fake (meta) implementations of the GDN torch ops."""

from __future__ import annotations

from dataclasses import dataclass

import torch

_ALIGN = 16


def rows16(x: torch.Tensor) -> torch.Tensor:
    """``x [T, H, D]`` with contiguous heads and 16-byte aligned token rows (a copy when not)."""
    T, H, D = x.shape
    ok = (x.stride(2) == 1 and (H <= 1 or x.stride(1) == D) and (T <= 1 or (x.stride(0) * x.element_size()) % _ALIGN == 0)
          and x.data_ptr() % _ALIGN == 0)
    return x if ok else x.clone(memory_format=torch.contiguous_format)


def heads_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x [T, H]`` with contiguous heads."""
    return x if x.shape[1] <= 1 or x.stride(1) == 1 else x.contiguous()


def aligned_contiguous(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    return x if x.data_ptr() % _ALIGN == 0 else x.clone()


@dataclass
class PackedGdn:
    tensors: tuple[torch.Tensor, ...]    # q, k, v [B*T, H, D]; g, beta [B*T, Hv]
    scale: float
    initial_state: torch.Tensor | None
    cu_seqlens: torch.Tensor | None


def pack_fla(q, k, v, g, beta, scale, initial_state, cu_seqlens, build_cu: bool) -> PackedGdn:
    """FLA-style arguments (already validated) -> the packed kernel arguments. ``build_cu``: make cu_seqlens
    ``[0, T, 2T, ...]`` for B sequences of T tokens when none is given."""
    B, T, Hk, K = q.shape
    Hv = v.shape[2]
    packed = (rows16(q.reshape(B * T, Hk, K)), rows16(k.reshape(B * T, Hk, K)),
              rows16(v.reshape(B * T, Hv, v.shape[3])), heads_contiguous(g.reshape(B * T, Hv)),
              heads_contiguous(beta.reshape(B * T, Hv)))
    state = aligned_contiguous(initial_state) if initial_state is not None else None
    if cu_seqlens is not None:
        cu = cu_seqlens.contiguous()
    elif build_cu:
        cu = torch.arange(B + 1, device=q.device, dtype=torch.int32) * T
    else:
        cu = None
    return PackedGdn(packed, float(K ** -0.5 if scale is None else scale), state, cu)


# ---- fake (meta) implementations of the GDN torch ops ----

@torch.library.register_fake("qwen35_native::causal_conv1d")
def _causal_conv1d_fake(x, weight, cu_seqlens, conv_state, slots, has_initial_state, silu):
    return x.new_empty(x.shape)


@torch.library.register_fake("qwen35_native::causal_conv1d_update")
def _causal_conv1d_update_fake(x, conv_state, weight, slots, silu):
    return x.new_empty(x.shape)


@torch.library.register_fake("qwen35_native::gdn_gating")
def _gdn_gating_fake(a, b, A_log, dt_bias):
    return a.new_empty(a.shape, dtype=torch.float32), a.new_empty(a.shape)


@torch.library.register_fake("qwen35_native::gated_rms_norm")
def _gated_rms_norm_fake(x, z, weight, eps):
    return x.new_empty(x.shape)


def _state_like(q, n, hv, k, v):
    return q.new_empty((n, hv, k, v), dtype=torch.float32)


@torch.library.register_fake("qwen35_native::chunk_gated_delta_rule")
def _chunk_fake(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm,
                segment_len, shortcut_log_decay):
    n = cu_seqlens.shape[0] - 1 if output_final_state else 0
    return v.new_empty(v.shape), _state_like(q, n, v.shape[1], q.shape[2], v.shape[2])


@torch.library.register_fake("qwen35_native::fused_recurrent_gated_delta_rule")
def _recurrent_fake(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, num_seqs,
                    use_qk_l2norm, output_intermediate_states):
    n = (cu_seqlens.shape[0] - 1 if cu_seqlens is not None else num_seqs) if output_final_state else 0
    t = q.shape[0] if output_intermediate_states else 0
    return (v.new_empty(v.shape), _state_like(q, n, v.shape[1], q.shape[2], v.shape[2]),
            _state_like(q, t, v.shape[1], q.shape[2], v.shape[2]))


@torch.library.register_fake("qwen35_native::gdn_prefill")
def _gdn_prefill_fake(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state,
                      cu_seqlens, slots, has_initial_state, eps, segment_len, shortcut_log_decay):
    return z.new_empty(z.shape)


@torch.library.register_fake("qwen35_native::gdn_decode")
def _gdn_decode_fake(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state, slots,
                     eps):
    return z.new_empty(z.shape)

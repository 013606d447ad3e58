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
    rows_ok = T <= 1 or (x.stride(0) * x.element_size()) % _ALIGN == 0
    ok = x.stride(2) == 1 and (H <= 1 or x.stride(1) == D) and rows_ok and x.data_ptr() % _ALIGN == 0
    return x if ok else x.clone(memory_format=torch.contiguous_format)


def heads_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x [T, H]`` with contiguous heads."""
    return x if x.shape[1] <= 1 or x.stride(1) == 1 else x.contiguous()


def empty_state(n: int, hv: int, device) -> torch.Tensor:
    return torch.empty((n, hv, 128, 128), dtype=torch.float32, device=device)


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


# ---- fake (meta) implementations of the GDN torch ops: out-variants, nothing to return ----

@torch.library.register_fake("qwen35_native::causal_conv1d")
def _causal_conv1d_fake(x, weight, cu_seqlens, conv_state, slots, has_initial_state, silu, y):
    return None


@torch.library.register_fake("qwen35_native::causal_conv1d_update")
def _causal_conv1d_update_fake(x, conv_state, weight, slots, silu, y):
    return None


@torch.library.register_fake("qwen35_native::gdn_gating")
def _gdn_gating_fake(a, b, A_log, dt_bias, g, beta):
    return None


@torch.library.register_fake("qwen35_native::gated_rms_norm")
def _gated_rms_norm_fake(x, z, weight, eps, y):
    return None


@torch.library.register_fake("qwen35_native::chunk_gated_delta_rule")
def _chunk_fake(q, k, v, g, beta, scale, initial_state, cu_seqlens, use_qk_l2norm, segment_len, shortcut_log_decay,
                o, final_state, arch=0):
    return None


@torch.library.register_fake("qwen35_native::fused_recurrent_gated_delta_rule")
def _recurrent_fake(q, k, v, g, beta, scale, initial_state, cu_seqlens, num_seqs, use_qk_l2norm, o, final_state,
                    intermediate_states):
    return None


@torch.library.register_fake("qwen35_native::gdn_prefill")
def _gdn_prefill_fake(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state,
                      cu_seqlens, slots, has_initial_state, eps, segment_len, shortcut_log_decay, out):
    return None


@torch.library.register_fake("qwen35_native::gdn_decode")
def _gdn_decode_fake(mixed_qkv, z, a, b, conv_weight, A_log, dt_bias, norm_weight, conv_state, ssm_state, slots,
                     eps, out, out_slots=None):
    return None

"""Pre-attention of the gated full-attention layers (MODEL_SPEC §3c.1-4): split the fused projection into query,
gate, key and value, zero-centred q/k RMSNorm per head, partial interleaved M-RoPE, and the paged KV-cache write.

Fused projection layout (one row per token), ``D = head_dim``::

    qkv = [ q_0 | gate_0 | q_1 | gate_1 | ... | q_{Hq-1} | gate_{Hq-1} | k (Hkv*D) | v (Hkv*D) ]

(the checkpoint's q_proj rows are per-head ``[q_h | gate_h]`` blocks; k_proj and v_proj follow).

M-RoPE: ``inv_freq[i] = theta^(-2i/R)`` for ``i < R/2`` (R = rotary dims, the FIRST R dims of each head);
frequency slot i takes its position from stream T, except ``i % 3 == 1, i < 3*sec[1]`` (stream H) and
``i % 3 == 2, i < 3*sec[2]`` (stream W); cos/sin are computed in fp32 and rounded to the activation dtype (as
HF does); ``x' = x*cos + rotate_half(x)*sin`` on dims [0, R) with rotate_half pairing d with d + R/2.

KV cache (DESIGN.md §4): per layer ``k_cache, v_cache [num_blocks, block_size, Hkv, D]`` in the model dtype; K is
stored after k_norm and RoPE, V raw. Token t goes to flat slot ``slot_mapping[t] = block * block_size + offset``
(``-1``: not written). The attention kernels want ``block_size = 64`` (any power of two works; see ``attention.py``).

Kernel: csrc/kernels/attention/attention_prep.cu (one CTA per token, one warp per head: split, fp32 norm, rotary,
cache write). Tests: tests/kernels/test_attention_prep.py, tests/model/test_ops_attention.py (vs transformers).
"""

from __future__ import annotations

import torch

from . import _checks
from ._backend import use_kernel
from .norm import rms_norm_reference

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


_INV_FREQ: dict[tuple, torch.Tensor] = {}


def rope_inv_freq(rotary_dim: int, rope_theta: float, device) -> torch.Tensor:
    """``theta^(-2i/R)``, ``i < R/2``, float32 as HF computes it; cached per (R, theta, device). The kernel
    multiplies positions by exactly these values, so kernel and reference rotate by the same fp32 angles."""
    key = (rotary_dim, float(rope_theta), str(device))
    if key not in _INV_FREQ:
        _INV_FREQ[key] = 1.0 / (rope_theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=device)
                                               / rotary_dim))
    return _INV_FREQ[key]


def mrope_cos_sin(positions: torch.Tensor, rotary_dim: int, mrope_section, rope_theta: float,
                  dtype: torch.dtype):
    """cos, sin ``[T, rotary_dim]`` (rounded to ``dtype``) for 3-stream positions ``[3, T]`` (T, H, W)."""
    half = rotary_dim // 2
    inv_freq = rope_inv_freq(rotary_dim, rope_theta, positions.device)
    freqs = positions.float()[:, :, None] * inv_freq                           # [3, T, R/2]
    f = freqs[0].clone()
    for stream, offset in ((1, 1), (2, 2)):
        idx = torch.arange(offset, min(3 * mrope_section[stream], half), 3, device=positions.device)
        f[:, idx] = freqs[stream][:, idx]
    emb = torch.cat([f, f], dim=-1)                                            # [T, R]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x ``[T, H, D]``; rotates dims [0, R) with cos/sin ``[T, R]`` in fp32, rounds once to x's dtype."""
    R = cos.shape[-1]
    xr = x[..., :R].float()
    rotated = torch.cat([-xr[..., R // 2:], xr[..., :R // 2]], dim=-1)
    out = xr * cos.float()[:, None] + rotated * sin.float()[:, None]
    return torch.cat([out.to(x.dtype), x[..., R:]], dim=-1)


def _dims(qkv, q_norm_weight, k_cache):
    D, Hkv = q_norm_weight.numel(), k_cache.shape[2]
    return (qkv.shape[1] - 2 * Hkv * D) // (2 * D), Hkv, D


def attention_prep_reference(qkv, q_norm_weight, k_norm_weight, positions, k_cache, v_cache, slot_mapping,
                             rotary_dim, mrope_section, rope_theta, eps=1e-6):
    T = qkv.shape[0]
    Hq, Hkv, D = _dims(qkv, q_norm_weight, k_cache)
    qg = qkv[:, :2 * Hq * D].reshape(T, Hq, 2 * D)
    q, gate = qg[..., :D], qg[..., D:].reshape(T, Hq * D)
    k = qkv[:, 2 * Hq * D:(2 * Hq + Hkv) * D].reshape(T, Hkv, D)
    v = qkv[:, (2 * Hq + Hkv) * D:].reshape(T, Hkv, D)
    cos, sin = mrope_cos_sin(positions, rotary_dim, mrope_section, rope_theta, qkv.dtype)
    q = apply_rotary(rms_norm_reference(q, q_norm_weight, eps), cos, sin)
    k = apply_rotary(rms_norm_reference(k, k_norm_weight, eps), cos, sin)
    write = slot_mapping >= 0
    slots = slot_mapping[write].long()
    k_cache.view(-1, Hkv, D)[slots] = k[write]
    v_cache.view(-1, Hkv, D)[slots] = v[write]
    return q.contiguous(), gate.contiguous()


def check_kv_cache(op: str, k_cache: torch.Tensor, v_cache: torch.Tensor, dtype: torch.dtype, head_dim: int,
                   device: torch.device) -> None:
    _checks.check_tensor(op, "k_cache", k_cache, (dtype,), dim=4)
    _checks.check_tensor(op, "v_cache", v_cache, (dtype,), dim=4)
    _checks.check_shape(op, "v_cache", v_cache, list(k_cache.shape), "k_cache.shape")
    _checks.check_dim_size(op, "k_cache", k_cache, 3, head_dim, "head_dim")
    for name, t in (("k_cache", k_cache), ("v_cache", v_cache)):
        if not t.is_contiguous():
            _checks.fail(op, f"{name} must be contiguous [num_blocks, block_size, kv_heads, head_dim]")
        if t.device != device:
            _checks.fail(op, f"{name} must be on {device}, got {t.device}")


def attention_prep(qkv: torch.Tensor, q_norm_weight: torch.Tensor, k_norm_weight: torch.Tensor,
                   positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                   slot_mapping: torch.Tensor, rotary_dim: int, mrope_section, rope_theta: float,
                   eps: float = 1e-6, backend: str | None = None):
    """Split the fused q|gate|k|v projection, q/k norm, M-RoPE, and write K/V into the paged cache.

    Args:
        qkv: ``[T, (2*Hq + 2*Hkv) * D]`` float32/float16/bfloat16 (layout in the module docstring; rows may be
            strided). Hkv comes from the cache, D from ``q_norm_weight``.
        q_norm_weight, k_norm_weight: ``[D]`` zero-centred (scale ``1 + w``), qkv's dtype or float32.
        positions: int32/int64 ``[3, T]`` M-RoPE positions (T, H, W streams; equal for text).
        k_cache, v_cache: ``[num_blocks, block_size, Hkv, D]`` in qkv's dtype, written in place.
        slot_mapping: int32/int64 ``[T]`` flat cache slot of each token, ``-1`` to skip.
        rotary_dim: R (even, <= D); mrope_section: 3 ints summing to R/2; rope_theta: base.
    Returns:
        ``(q [T, Hq, D] normed and rotated, gate [T, Hq*D])`` in qkv's dtype, contiguous.
    """
    op = "attention_prep"
    _checks.check_tensor(op, "qkv", qkv, _DTYPES, dim=2)
    _checks.check_tensor(op, "q_norm_weight", q_norm_weight, (qkv.dtype, torch.float32), dim=1)
    _checks.check_tensor(op, "k_norm_weight", k_norm_weight, (qkv.dtype, torch.float32), dim=1)
    D = q_norm_weight.numel()
    _checks.check_shape(op, "k_norm_weight", k_norm_weight, [D], "[head_dim]")
    check_kv_cache(op, k_cache, v_cache, qkv.dtype, D, qkv.device)
    Hkv = k_cache.shape[2]
    width = qkv.shape[1] - 2 * Hkv * D
    if width <= 0 or width % (2 * D):
        _checks.fail(op, f"qkv width {qkv.shape[1]} must be (2*Hq + 2*Hkv)*D with Hkv={Hkv}, D={D}")
    T = qkv.shape[0]
    _checks.check_tensor(op, "positions", positions, _checks.INDEX_DTYPES, dim=2)
    _checks.check_shape(op, "positions", positions, [3, T], "[3, T]")
    _checks.check_tensor(op, "slot_mapping", slot_mapping, _checks.INDEX_DTYPES, dim=1)
    _checks.check_shape(op, "slot_mapping", slot_mapping, [T], "[T]")
    for name, t in (("q_norm_weight", q_norm_weight), ("k_norm_weight", k_norm_weight), ("positions", positions),
                    ("slot_mapping", slot_mapping)):
        _checks.check_same_device(op, name, t, qkv, "qkv")
    if slot_mapping.device.type == "cpu" and T and int(slot_mapping.max()) >= k_cache.shape[0] * k_cache.shape[1]:
        _checks.fail(op, f"slot_mapping values must be < num_blocks*block_size="
                         f"{k_cache.shape[0] * k_cache.shape[1]}, got {int(slot_mapping.max())}")
    if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > D:
        _checks.fail(op, f"rotary_dim must be even and in (0, head_dim={D}], got {rotary_dim}")
    if len(mrope_section) != 3 or sum(mrope_section) != rotary_dim // 2:
        _checks.fail(op, f"mrope_section must be 3 ints summing to rotary_dim/2={rotary_dim // 2}, got "
                         f"{list(mrope_section)}")
    if not eps >= 0:
        _checks.fail(op, f"eps must be >= 0, got {eps}")
    if not use_kernel(op, backend, qkv.device):
        return attention_prep_reference(qkv, q_norm_weight, k_norm_weight, positions, k_cache, v_cache, slot_mapping,
                                        rotary_dim, mrope_section, rope_theta, eps)
    Hq = width // (2 * D)
    q = torch.empty(T, Hq, D, dtype=qkv.dtype, device=qkv.device)
    gate = torch.empty(T, Hq * D, dtype=qkv.dtype, device=qkv.device)
    qw, kw = (q_norm_weight, k_norm_weight) if q_norm_weight.dtype == k_norm_weight.dtype else \
        (q_norm_weight.float(), k_norm_weight.float())
    torch.ops.qwen35_native.attention_prep(
        qkv, qw.contiguous(), kw.contiguous(), positions.long(),
        k_cache, v_cache, slot_mapping.long(), rope_inv_freq(rotary_dim, rope_theta, qkv.device),
        [int(s) for s in mrope_section], float(eps), q, gate)
    return q, gate


@torch.library.register_fake("qwen35_native::attention_prep")
def _attention_prep_fake(qkv, q_norm_weight, k_norm_weight, positions, k_cache, v_cache, slot_mapping, inv_freq,
                         mrope_section, eps, q_out, gate_out):
    return None

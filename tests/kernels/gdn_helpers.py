"""Inputs, raw-op runners with poisoned + guarded outputs, and error measures shared by the GDN kernel tests
(tests/kernels/test_gdn_*.py). The references are the model issue's ops (qwen35_native.ops.*_reference), run in
float64 on the same already-rounded inputs (MODEL_SPEC §5.15)."""

from __future__ import annotations

import math

import pytest
import torch

from qwen35_native import ops
from utils import GuardedTensor

D = 128                                          # the kernels' K = V
HEADS = [(1, 1), (2, 6), (2, 8)]                 # (Hk, Hv)
OUT_TOL = 2e-2                                   # bf16 chunk scan output vs float64, relative (MODEL_SPEC §5.15)
STATE_TOL = 1e-2                                 # fp32 final state vs float64, relative
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def rel(actual, expected) -> float:
    a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
    return ((a - e).norm() / e.norm().clamp_min(1e-30)).item()


def f64(t):
    return None if t is None else t.detach().cpu().double()


def cu_of(lens, device="cpu", dtype=torch.int32):
    return torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=dtype, device=device)


def make_scan_inputs(lens, hk, hv, with_state, seed, dtype=torch.bfloat16, decay=(0.0, 0.5), l2norm=True,
                     device="cpu"):
    """Packed [1, T, H, 128] q, k, v; g = -U(decay) per token and head; beta = U(0, 1); optional initial states."""
    gen = torch.Generator().manual_seed(seed)
    T, n = sum(lens), len(lens)
    q = torch.randn(1, T, hk, D, generator=gen)
    k = torch.randn(1, T, hk, D, generator=gen)
    if not l2norm:  # keep beta |k|^2 < 2: the recurrence stays bounded without the in-kernel L2 norm
        q, k = q / math.sqrt(D), 0.9 * k / k.norm(dim=-1, keepdim=True)
    v = torch.randn(1, T, hv, D, generator=gen)
    lo, hi = decay
    g = -(lo + (hi - lo) * torch.rand(1, T, hv, generator=gen))
    beta = torch.rand(1, T, hv, generator=gen)
    state = 0.1 * torch.randn(n, hv, D, D, generator=gen) if with_state else None
    cast = [t.to(device=device, dtype=dtype) for t in (q, k, v, beta)]
    return (*cast[:3], g.to(device), cast[3], None if state is None else state.to(device))


class Guarded:
    """A poisoned (NaN) output inside sentinel guards; .check() asserts no guard was touched and every element
    was written."""

    def __init__(self, shape, dtype, device):
        self.g = GuardedTensor(shape, dtype, device=device)
        self.t = self.g.tensor

    def check(self, what):
        self.g.check(what)
        assert not torch.isnan(self.t).any(), f"{what}: elements left unwritten (still poisoned)"


def chunk_raw(q, k, v, g, beta, state, cu, l2norm=True, segment_len=0, shortcut=ops.gdn.SHORTCUT_LOG_DECAY,
              scale=None, arch=0):
    """The chunk kernel through the raw op on packed inputs, outputs poisoned and guarded; returns (o, final).
    arch: 0 automatic (the sm_90a kernel on sm_90 / the emulator's default arch), 80 or 90 forces a kernel."""
    T, hv = q.shape[1], v.shape[2]
    n = cu.numel() - 1
    o = Guarded((T, hv, D), q.dtype, q.device)
    final = Guarded((n, hv, D, D), torch.float32, q.device)
    torch.ops.qwen35_native.chunk_gated_delta_rule(
        q[0], k[0], v[0], g[0], beta[0], D ** -0.5 if scale is None else scale, state, cu, l2norm, segment_len,
        shortcut, o.t, final.t, arch)
    o.check("chunk_gated_delta_rule o")
    final.check("chunk_gated_delta_rule final_state")
    return o.t[None], final.t


def chunk_reference64(q, k, v, g, beta, state, cu, l2norm=True):
    return ops.chunk_gated_delta_rule_reference(f64(q), f64(k), f64(v), f64(g), f64(beta), None, f64(state), True,
                                                cu.cpu(), l2norm)


def layer_inputs(T, hk=1, hv=2, width=4, slots=4, seed=0, dtype=torch.bfloat16, device="cpu", decay_scale=1.0):
    """Raw layer inputs as the model passes them: column slices of one fused projection (strided rows)."""
    gen = torch.Generator().manual_seed(seed)
    conv_dim = 2 * hk * D + hv * D
    proj = torch.randn(T, conv_dim + hv * D + 2 * hv, generator=gen).to(device=device, dtype=dtype)
    qkv, z, b, a = proj.split([conv_dim, hv * D, hv, hv], dim=1)
    weights = dict(conv_weight=(0.5 * torch.randn(conv_dim, width, generator=gen)).to(device=device, dtype=dtype),
                   A_log=(decay_scale * torch.empty(hv).uniform_(0.01, 16, generator=gen)).log().to(device),
                   dt_bias=(1 + 0.5 * torch.randn(hv, generator=gen)).to(device=device, dtype=dtype),
                   norm_weight=(1 + 0.1 * torch.randn(D, generator=gen)).to(device=device, dtype=dtype))
    states = dict(conv_state=torch.randn(slots, conv_dim, width - 1, generator=gen).to(device=device, dtype=dtype),
                  ssm_state=(0.1 * torch.randn(slots, hv, D, D, generator=gen)).to(device))
    return qkv, z, a, b, weights, states

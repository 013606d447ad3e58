"""gdn_gating and gated_rms_norm on their kernels against the pure-torch references (which
tests/model/test_ops_gdn_layer.py checks against HF): dtypes, fp32 parameters, strided rows, outputs poisoned and
guarded, two thread orders. Kernels: csrc/kernels/gdn/gdn_gating.cu, gated_rms_norm.cu."""

import pytest
import torch
from gdn_helpers import DEVICES, Guarded, skip_without_cuda

from qwen35_native import ops

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_gating_matches_reference(dtype, device):
    skip_without_cuda(device)
    g = _gen(1)
    ab = (4 * torch.randn(37, 2 * 6 + 5, generator=g)).to(device=device, dtype=dtype)  # strided column slices
    a, b = ab[:, :6], ab[:, 8:14]
    a[0, 0] = 30.0  # softplus above its threshold: linear
    A_log = torch.empty(6).uniform_(0.01, 16, generator=g).log().to(device)
    dt_bias = (1 + torch.randn(6, generator=g)).to(device=device, dtype=dtype)
    out_g, out_b = Guarded((37, 6), torch.float32, device), Guarded((37, 6), dtype, device)
    torch.ops.qwen35_native.gdn_gating(a, b, A_log, dt_bias, out_g.t, out_b.t)
    out_g.check("gdn_gating g")
    out_b.check("gdn_gating beta")
    g_ref, beta_ref = ops.gdn_gating_reference(a, b, A_log, dt_bias)
    torch.testing.assert_close(out_g.t, g_ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(out_b.t, beta_ref)  # one rounding of sigmoid to b's dtype in both
    g2, beta2 = ops.gdn_gating(a.reshape(37, 1, 6), b.reshape(37, 1, 6), A_log, dt_bias.float(), backend="kernel")
    assert g2.shape == (37, 1, 6) and beta2.dtype == dtype
    torch.testing.assert_close(g2[:, 0], g_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weight_fp32", [False, True], ids=["w-x", "w-fp32"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_gated_rms_norm_matches_reference(dtype, weight_fp32, device):
    skip_without_cuda(device)
    g = _gen(2)
    xz = torch.randn(23, 2 * 128 + 8, generator=g).to(device=device, dtype=dtype)  # strided rows
    x, z = xz[:, :128], xz[:, 136:]
    w = (1 + 0.1 * torch.randn(128, generator=g)).to(device=device, dtype=torch.float32 if weight_fp32 else dtype)
    y = Guarded((23, 128), dtype, device)
    torch.ops.qwen35_native.gated_rms_norm(x, z, w, 1e-6, y.t)
    y.check("gated_rms_norm y")
    ref = ops.gated_rms_norm_reference(x, z, w)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.t.float(), ref.float(), rtol=tol, atol=tol)
    odd = torch.randn(5, 3, 100, generator=g).to(device=device, dtype=dtype)  # hidden not a multiple of 8
    w100 = torch.ones(100, device=device, dtype=dtype)
    torch.testing.assert_close(ops.gated_rms_norm(odd, odd, w100, backend="kernel").float(),
                               ops.gated_rms_norm_reference(odd, odd, w100).float(), rtol=tol, atol=tol)


def test_norm_and_gating_two_orders(two_orders):
    g = _gen(3)
    x, z = torch.randn(40, 128, generator=g).bfloat16(), torch.randn(40, 128, generator=g).bfloat16()
    two_orders(ops.gated_rms_norm, x, z, torch.ones(128).bfloat16(), backend="kernel")
    two_orders(ops.gdn_gating, x[:, :8], z[:, :8], torch.zeros(8), torch.ones(8).bfloat16(), backend="kernel")


def test_bad_inputs():
    x = torch.randn(4, 128).bfloat16()
    with pytest.raises(ValueError, match="gated_rms_norm: eps must be >= 0"):
        ops.gated_rms_norm(x, x, torch.ones(128).bfloat16(), eps=-1.0, backend="kernel")
    with pytest.raises(RuntimeError, match=r"gated_rms_norm: weight must have dtype BFloat16 or float32, got Half"):
        torch.ops.qwen35_native.gated_rms_norm(x, x, torch.ones(128).half(), 1e-6, torch.empty_like(x))
    with pytest.raises(RuntimeError, match=r"gdn_gating: A_log must have shape \[n\]=\[3\]"):
        torch.ops.qwen35_native.gdn_gating(x[:, :3], x[:, :3], torch.zeros(4), torch.zeros(3),
                                           torch.empty(4, 3), torch.empty(4, 3).bfloat16())

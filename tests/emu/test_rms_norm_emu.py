"""The RMSNorm op's CPU implementation is its CUDA source on the emulator: it matches the pure-torch
reference,
is bit-identical under different thread orders, and (on a GPU) matches the CUDA kernel."""

from __future__ import annotations

import pytest
import torch

from qwen35_native.ops import rms_norm, rms_norm_reference
from utils import assert_close_report, randn

SHAPES = [(1, 8), (3, 100), (7, 4096), (2, 5, 1030)]
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 2e-3)}


@pytest.mark.parametrize("dtype", list(TOL), ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rms_norm_emulated_matches_reference(two_orders, shape, dtype):
    x = randn(shape, dtype, seed=1)
    w = randn(shape[-1:], dtype, seed=2, scale=0.1)
    y = two_orders(rms_norm, x, w, 1e-6, backend="kernel", schedules=("forward", "reverse", "random:7"))
    assert_close_report(y, rms_norm_reference(x, w, 1e-6), *TOL[dtype], what="rms_norm")


def test_fused_add_rms_norm_emulated(two_orders):
    x, r = randn((4, 512), torch.bfloat16, seed=3), randn((4, 512), torch.bfloat16, seed=4)
    w = randn((512,), torch.float32, seed=5, scale=0.1)
    y, s = two_orders(rms_norm, x, w, 1e-6, residual=r, backend="kernel")
    y_ref, s_ref = rms_norm_reference(x, w, 1e-6, residual=r)
    assert torch.equal(s, s_ref)
    assert_close_report(y, y_ref, *TOL[torch.bfloat16], what="rms_norm")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(TOL), ids=lambda d: str(d)[6:])
def test_gpu_rms_norm_matches_emulator(dtype):
    x, w = randn((9, 2048), dtype, seed=6), randn((2048,), dtype, seed=7, scale=0.1)
    cpu = rms_norm(x, w, backend="kernel")
    gpu = rms_norm(x.cuda(), w.cuda(), backend="kernel").cpu()
    assert_close_report(gpu, cpu, *TOL[dtype], what="cuda vs emulator")

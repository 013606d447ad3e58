"""A 64x64x64 GEMM built from cp.async + ldmatrix (plain and .trans) + mma.sync, bf16 and fp16 inputs, fp32
accumulation: against torch.matmul in fp32 (to rounding), exactly on small integers, bit-identical under two
thread orders, and against the GPU."""

from __future__ import annotations

import pytest
import torch

from utils import assert_close_report, on_cuda, randint_small, randn

DTYPES = [torch.bfloat16, torch.float16]
SHAPES = [(64, 64, 64), (128, 64, 128)]


def operands(m, n, k, dtype, trans_b, small_ints, seed):
    make = randint_small if small_ints else randn
    a = make((m, k), dtype, seed=seed)
    b = make((k, n), dtype, seed=seed + 1)
    b_arg = b.contiguous() if trans_b else b.t().contiguous()  # [k, n] for .trans loads, Bt [n, k] otherwise
    return a, b, b_arg


@pytest.mark.parametrize("trans_b", [False, True], ids=["Bt", "B-trans"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_matmul(emu_ops, two_orders, shape, dtype, trans_b):
    m, n, k = shape
    a, b, b_arg = operands(m, n, k, dtype, trans_b, small_ints=False, seed=1)
    c = two_orders(emu_ops.gemm, a, b_arg, trans_b)
    assert_close_report(c, a.float() @ b.float(), rtol=1e-5, atol=1e-5, what="gemm")


@pytest.mark.parametrize("trans_b", [False, True], ids=["Bt", "B-trans"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_gemm_small_integers_exact(emu_ops, dtype, trans_b):
    a, b, b_arg = operands(64, 64, 64, dtype, trans_b, small_ints=True, seed=2)
    assert torch.equal(emu_ops.gemm(a, b_arg, trans_b), a.float() @ b.float())


@pytest.mark.gpu
@pytest.mark.parametrize("trans_b", [False, True], ids=["Bt", "B-trans"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d)[6:])
def test_gpu_gemm_matches_emulator(emu_ops, dtype, trans_b):
    a, b, b_arg = operands(128, 64, 128, dtype, trans_b, small_ints=True, seed=3)
    assert torch.equal(emu_ops.gemm(*on_cuda(a, b_arg), trans_b).cpu(), emu_ops.gemm(a, b_arg, trans_b))
    a, b, b_arg = operands(128, 64, 128, dtype, trans_b, small_ints=False, seed=4)
    assert_close_report(
        emu_ops.gemm(*on_cuda(a, b_arg), trans_b).cpu(),
        emu_ops.gemm(a, b_arg, trans_b),
        rtol=1e-5,
        atol=1e-5,
        what="gpu vs emulator",
    )

"""The sm_90a pieces together: a warp-specialised GEMM (one producer warp issuing TMA loads into a 2-stage
mbarrier pipeline, two consumer warpgroups on wgmma m64n128k16) against torch.matmul, exactly on small integers
and to fp32 rounding otherwise, in every swizzle mode, with ragged m / n / k (TMA zero fill) and a TMA-store
epilogue; bit-identical under two thread orders; pipeline bugs (a stage released before its wgmma completed, a
wait on the wrong parity, an unfenced mbarrier.init, a TMA store without fence.proxy.async) are caught. With
-m gpu the same kernel on an H100 must match the emulator."""

from __future__ import annotations

import pytest
import torch
from wgmma_layouts import SWIZZLES

from utils import assert_close_report, on_cuda, randint_small, randn, run_under_schedules

SW_IDS = [f"sw{s}" for s in SWIZZLES]
OK, EARLY_RELEASE, WRONG_PARITY, NO_INIT_FENCE, NO_STORE_FENCE = 0, 1, 2, 3, 4
# (m, n, k, TMA-store epilogue): one tile; two k-stage rounds over 2 row tiles; ragged everything
SHAPES = [(128, 128, 64, False), (256, 128, 192, False), (200, 136, 72, False), (136, 132, 200, True)]
SHAPE_IDS = ["x".join(map(str, s[:3])) + ("-tma-store" if s[3] else "") for s in SHAPES]


def operands(m, n, k, dtype, small_ints, seed):
    make = randint_small if small_ints else randn
    return make((m, k), dtype, seed=seed), make((n, k), dtype, seed=seed + 1)


@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_gemm_small_integers_exact(emu_ops, shape, swizzle):
    m, n, k, tma_store = shape
    a, bt = operands(m, n, k, torch.bfloat16, True, seed=m + swizzle)
    assert torch.equal(emu_ops.hopper_gemm(a, bt, swizzle, tma_store, OK), a.float() @ bt.float().t())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_gemm_matches_matmul(emu_ops, two_orders, dtype):
    a, bt = operands(256, 136, 136, dtype, False, seed=5)
    c = two_orders(emu_ops.hopper_gemm, a, bt, 128, True, OK)
    assert_close_report(c, a.double() @ bt.double().t(), rtol=1e-5, atol=1e-5, what="hopper gemm")


def test_stage_released_before_its_wgmma_completed_is_caught(emu_ops):
    a, bt = operands(128, 128, 256, torch.bfloat16, True, seed=7)
    outs = [
        run_under_schedules(emu_ops.hopper_gemm, a, bt, 128, False, EARLY_RELEASE, schedules=(order,))
        for order in ("forward", "reverse", "random:1")
    ]
    assert any(not torch.equal(c, a.float() @ bt.float().t()) for c in outs)


def test_wait_on_the_wrong_parity_is_caught(emu_ops):
    # The consumers' waits return before the TMA lands: NaNs from the poisoned stage, or the broken protocol
    # shows as an error naming the barrier (loads left in flight, a phase with too many arrivals, a deadlock).
    a, bt = operands(128, 128, 256, torch.bfloat16, True, seed=8)
    try:
        c = emu_ops.hopper_gemm(a, bt, 128, False, WRONG_PARITY)
    except RuntimeError as e:
        assert "mbarrier" in str(e), str(e)
        return
    assert not torch.equal(c, a.float() @ bt.float().t())


def test_unfenced_mbarrier_init_is_caught(emu_ops):
    a, bt = operands(128, 128, 64, torch.bfloat16, True, seed=9)
    with pytest.raises(RuntimeError, match="did not fence"):
        emu_ops.hopper_gemm(a, bt, 128, False, NO_INIT_FENCE)


def test_tma_store_without_proxy_fence_is_caught(emu_ops):
    a, bt = operands(128, 128, 64, torch.bfloat16, True, seed=10)
    with pytest.raises(RuntimeError, match="not made visible to the async proxy"):
        emu_ops.hopper_gemm(a, bt, 128, True, NO_STORE_FENCE)


@pytest.mark.gpu
@pytest.mark.parametrize("swizzle", SWIZZLES, ids=SW_IDS)
def test_gpu_gemm_matches_emulator(emu_ops, swizzle):
    for m, n, k, tma_store in SHAPES:
        for dtype in (torch.bfloat16, torch.float16):
            a, bt = operands(m, n, k, dtype, True, seed=m + n)
            gpu = emu_ops.hopper_gemm(*on_cuda(a, bt), swizzle, tma_store, OK).cpu()
            assert torch.equal(gpu, emu_ops.hopper_gemm(a, bt, swizzle, tma_store, OK)), (m, n, k, dtype)
    a, bt = operands(256, 136, 136, torch.bfloat16, False, seed=11)
    gpu = emu_ops.hopper_gemm(*on_cuda(a, bt), swizzle, True, OK).cpu()
    assert_close_report(gpu, emu_ops.hopper_gemm(a, bt, swizzle, True, OK), rtol=1e-5, atol=1e-5, what="gpu")

"""The two-order check catches missing barriers: a kernel without its __syncthreads (or __syncwarp) gives
different outputs under the "forward" and "reverse" thread orders, and the correct kernels do not."""

from __future__ import annotations

import pytest
import torch

from utils import on_cuda, randn, run_under_schedules

CORRECT_BLOCK, MISSING_SYNCTHREADS, MISSING_SYNCWARP, CORRECT_WARP = 0, 1, 2, 3


def expected(x: torch.Tensor, warp_local: bool) -> torch.Tensor:
    n = x.numel()
    idx = torch.arange(n)
    src = (idx // 32) * 32 + (idx + 1) % 32 if warp_local else (idx + 1) % n
    return 2 * x[src]


@pytest.mark.parametrize("n", [64, 256])
def test_correct_kernels_agree_across_orders(emu_ops, n):
    x = randn((n,), torch.float32, seed=n)
    orders = ("forward", "reverse", "random:1", "random:2")
    out = run_under_schedules(emu_ops.racy, x, CORRECT_BLOCK, schedules=orders)
    assert torch.equal(out, expected(x, warp_local=False))
    out = run_under_schedules(emu_ops.racy, x, CORRECT_WARP, schedules=orders)
    assert torch.equal(out, expected(x, warp_local=True))


@pytest.mark.parametrize("variant", [MISSING_SYNCTHREADS, MISSING_SYNCWARP], ids=["syncthreads", "syncwarp"])
def test_missing_barrier_is_caught(emu_ops, two_orders, variant):
    x = randn((128,), torch.float32, seed=variant)
    with pytest.raises(AssertionError, match="differ bitwise"):
        two_orders(emu_ops.racy, x, variant)


@pytest.mark.gpu
def test_gpu_correct_kernels_match_emulator(emu_ops):
    x = randn((256,), torch.float32, seed=3)
    for variant in (CORRECT_BLOCK, CORRECT_WARP):
        assert torch.equal(emu_ops.racy(on_cuda(x), variant).cpu(), emu_ops.racy(x, variant))

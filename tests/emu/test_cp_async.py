"""cp.async on the emulator: a double-buffered pipeline (4/8/16-byte copies, zero-filled ragged tail) gives
the
right answer under several thread orders, and a pipeline that reads a stage before waiting for it is
caught."""

from __future__ import annotations

import pytest
import torch

from utils import on_cuda, randn

SIZES = [1, 255, 256, 1000, 2053]


@pytest.mark.parametrize("copy_bytes", [4, 8, 16])
@pytest.mark.parametrize("n", SIZES)
def test_pipeline(emu_ops, two_orders, n, copy_bytes):
    x = randn((n,), torch.float32, seed=n)
    y = two_orders(emu_ops.pipeline, x, copy_bytes, False)
    assert torch.equal(y, 2 * x + 1)


@pytest.mark.parametrize("copy_bytes", [4, 16])
def test_missing_wait_is_caught(emu_ops, copy_bytes):
    # Reading the stage before cp.async.wait_group completes its group sees the poisoned / previous bytes.
    x = randn((2000,), torch.float32, seed=1)
    y = emu_ops.pipeline(x, copy_bytes, True)
    assert not torch.equal(y, 2 * x + 1)


def test_zero_fill_tail_reads_nothing_past_the_end(emu_ops):
    # n = 3: the first 16-byte copy reads 12 bytes; the rest of the tile is zero-filled from src-size 0
    # copies.
    x = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(emu_ops.pipeline(x, 16, False), 2 * x + 1)


@pytest.mark.gpu
@pytest.mark.parametrize("copy_bytes", [4, 8, 16])
def test_gpu_pipeline_matches_emulator(emu_ops, copy_bytes):
    x = randn((2053,), torch.float32, seed=2)
    assert torch.equal(
        emu_ops.pipeline(on_cuda(x), copy_bytes, False).cpu(), emu_ops.pipeline(x, copy_bytes, False)
    )

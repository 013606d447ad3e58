"""Warp shuffles (every kind, widths < 32, out-of-range and negative sources, 64-bit, partial masks), votes
and
ballots, __activemask, block reductions with shared memory and shuffles, and atomics (a histogram), on the
emulator against Python models of the PTX rules (PTX_FACTS.md §5), and against the GPU."""

from __future__ import annotations

import pytest
import torch

from utils import assert_close_report, on_cuda, randn

FULL = 0xFFFFFFFF
MODES = {"idx": 0, "up": 1, "down": 2, "xor": 3}
POISON32 = 0xFFFFFFFF


def shfl_source(mode: str, lane: int, b: int, width: int) -> int:
    """The lane a shfl.sync lane reads (itself when out of range), from the PTX definition."""
    segmask = (32 - width) & 0x1F
    clamp = 0 if mode == "up" else 0x1F
    b5 = b & 0x1F
    max_lane = (lane & segmask) | (clamp & ~segmask)
    min_lane = lane & segmask
    if mode == "idx":
        j, ok = min_lane | (b5 & ~segmask), True
        ok = j <= max_lane
    elif mode == "up":
        j = lane - b5
        ok = j >= max_lane
    elif mode == "down":
        j = lane + b5
        ok = j <= max_lane
    else:
        j = lane ^ b5
        ok = j <= max_lane
    return j if ok else lane


def shuffle_inputs(n: int, seed: int, operand_range=(-40, 40)):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-(2**62), 2**62, (n,), generator=g, dtype=torch.int64)
    operand = torch.randint(*operand_range, (n,), generator=g, dtype=torch.int32)
    return values, operand


def expected_shuffle(values, operand, mode, width, mask=FULL):
    n = values.numel()
    out64 = torch.zeros(n, dtype=torch.int64)
    for tid in range(n):
        lane, base = tid % 32, tid - tid % 32
        if not (mask >> lane) & 1:
            continue
        src = shfl_source(mode, lane, int(operand[tid]), width)
        out64[tid] = values[base + src] if (mask >> src) & 1 else -1
    return out64


@pytest.mark.parametrize("width", [1, 2, 4, 8, 16, 32])
@pytest.mark.parametrize("mode", list(MODES))
def test_shuffle_kinds_and_widths(emu_ops, mode, width):
    values, operand = shuffle_inputs(64, seed=width)
    out32, out64 = emu_ops.shuffle(values, operand, MODES[mode], width, FULL)
    expected = expected_shuffle(values, operand, mode, width)
    assert torch.equal(out64, expected)
    assert torch.equal(out32, expected.to(torch.int32))  # low word (two's complement truncation)


def test_shuffle_partial_mask_and_outside_source(emu_ops):
    values, operand = shuffle_inputs(32, seed=7, operand_range=(0, 16))
    mask = 0x0000FFFF  # lanes 16-31 do not take part (they exit)
    out32, out64 = emu_ops.shuffle(values, operand, MODES["idx"], 32, mask)
    assert torch.equal(out64, expected_shuffle(values, operand, "idx", 32, mask))
    # Reading a lane outside the mask is undefined on the GPU; the emulator returns all-ones bits (a NaN).
    operand[3] = 20
    out32, out64 = emu_ops.shuffle(values, operand, MODES["idx"], 32, mask)
    assert int(out64[3]) == -1 and (int(out32[3]) & 0xFFFFFFFF) == POISON32


def test_shuffle_bad_width_raises(emu_ops):
    values, operand = shuffle_inputs(32, seed=8)
    with pytest.raises(RuntimeError, match=r"width must be a power of two(.|\n)*kernel(.|\n)*thread"):
        emu_ops.shuffle(values, operand, MODES["xor"], 12, FULL)


def expected_votes(pred: torch.Tensor, mask: int) -> torch.Tensor:
    n = pred.numel()
    out = torch.full((n, 10), -1, dtype=torch.int64)
    p = [int(v) for v in pred]
    for tid in range(n):
        lane, base = tid % 32, tid - tid % 32
        lanes = [base + i for i in range(32) if (mask >> i) & 1]
        ballot = sum(1 << (t - base) for t in lanes if p[t])
        out[tid, 4] = sum(1 for v in p if v)
        out[tid, 5] = int(all(p))
        out[tid, 6] = int(any(p))
        out[tid, 3] = sum(1 << (t - base) for t in range(base, base + 32) if p[t]) if p[tid] else 0
        if (mask >> lane) & 1:
            out[tid, 0] = ballot
            out[tid, 1] = int(ballot != 0)
            out[tid, 2] = int(all(p[t] for t in lanes))
            out[tid, 7] = sum(1 << (t - base) for t in lanes if p[t] % 3 == p[tid] % 3)
            out[tid, 8] = sum(p[t] for t in lanes)
            out[tid, 9] = 1
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


@pytest.mark.parametrize("mask", [FULL, 0x0F0F00FF], ids=["full", "partial"])
def test_votes_ballot_activemask(emu_ops, two_orders, mask):
    g = torch.Generator().manual_seed(mask & 0xFF)
    pred = torch.randint(0, 5, (96,), generator=g, dtype=torch.int32) * (torch.rand(96, generator=g) < 0.6)
    pred = pred.to(torch.int32)
    out = two_orders(emu_ops.vote, pred, mask)
    assert torch.equal(out, expected_votes(pred, mask))


@pytest.mark.parametrize("threads", [32, 96, 256, 1024])
def test_block_reduce(emu_ops, two_orders, threads):
    x = randn((5, 1000 + threads), torch.float32, seed=threads)
    total, mx = two_orders(emu_ops.block_reduce, x, threads)
    assert_close_report(total, x.double().sum(-1), rtol=1e-5, atol=1e-4, what="block sum")
    assert torch.equal(mx, x.max(-1).values)


def test_atomics_histogram(emu_ops, two_orders):
    g = torch.Generator().manual_seed(11)
    keys = torch.randint(3, 61, (5000,), generator=g, dtype=torch.int32)
    bins, stats = two_orders(emu_ops.histogram, keys, 64)
    assert torch.equal(bins, torch.bincount(keys, minlength=64).to(torch.int32))
    assert stats.tolist() == [int(keys.max()), int(keys.min()), keys.numel(), 1]


def test_atomics_on_several_os_threads(emu_ops):
    from qwen35_native import emulator

    keys = torch.randint(0, 64, (20000,), dtype=torch.int32)
    with emulator.threads(2):
        bins, stats = emu_ops.histogram(keys, 64)
    assert torch.equal(bins, torch.bincount(keys, minlength=64).to(torch.int32))
    assert int(stats[2]) == keys.numel()


@pytest.mark.gpu
def test_gpu_warp_ops_match_emulator(emu_ops):
    for mode in MODES.values():
        for width in (4, 32):
            values, operand = shuffle_inputs(64, seed=mode * 7 + width)
            cpu = emu_ops.shuffle(values, operand, mode, width, FULL)
            gpu = emu_ops.shuffle(*on_cuda(values, operand), mode, width, FULL)
            assert all(torch.equal(c, g_.cpu()) for c, g_ in zip(cpu, gpu))
    pred = (torch.arange(96) % 3 == 0).to(torch.int32)
    cpu, gpu = emu_ops.vote(pred, FULL), emu_ops.vote(on_cuda(pred), FULL).cpu()
    cols = [0, 1, 2, 4, 5, 6, 7, 8, 9]  # __activemask (col 3) may differ: the GPU need not reconverge
    assert torch.equal(cpu[:, cols], gpu[:, cols])
    active = gpu[:, 3].to(torch.int64) & 0xFFFFFFFF
    for tid in range(96):
        if pred[tid]:
            assert (int(active[tid]) >> (tid % 32)) & 1
    x = randn((3, 777), torch.float32, seed=1)
    cpu_sum, cpu_max = emu_ops.block_reduce(x, 256)
    gpu_sum, gpu_max = emu_ops.block_reduce(on_cuda(x), 256)
    assert torch.equal(cpu_sum, gpu_sum.cpu()) and torch.equal(cpu_max, gpu_max.cpu())
    keys = torch.randint(0, 64, (5000,), dtype=torch.int32)
    assert torch.equal(emu_ops.histogram(on_cuda(keys), 64)[0].cpu(), emu_ops.histogram(keys, 64)[0])

"""Misuse of the sm_90a units that the emulator must catch, as an error naming the kernel, block and thread or as a
wrong result, never silently right: wgmma without fence.proxy.async / wgmma.fence / wait_group, accumulators read
before the wait, operands overwritten before it, wgmma by warps that are not a warpgroup or with non-uniform or
invalid descriptors (an MN-major start inside a swizzle row), mbarriers not initialised, overwritten, over-arrived
or never completed, named barriers that never fill, sm_90a instructions under an emulated sm_80. Also elect.sync
and named barriers used correctly."""

from __future__ import annotations

import re

import pytest
import torch
from wgmma_layouts import pack_acc, unpack_acc

from qwen35_native import emulator
from utils import randint_small

THREAD = r"at: block \(0, 0, 0\), thread \(\d+, 0, 0\) \(warp \d+, lane \d+\)"
NO_PROXY_FENCE, NO_FENCE, EARLY_READ, OVERWRITE, NO_WAIT, SECOND_BATCH_NO_FENCE = 1, 2, 3, 4, 5, 6


def run_wgmma(emu_ops, variant, n=64):
    a, bt = randint_small((64, 32), torch.bfloat16, seed=1), randint_small((n, 32), torch.bfloat16, seed=2)
    c = randint_small((64, n), torch.float32, seed=3)
    frags = torch.zeros(2, 128, 4, dtype=torch.int32)
    d = emu_ops.wgmma_probe(
        a.view(torch.int16), frags, bt.view(torch.int16), pack_acc(c), n, 32, False, False, True, 128, variant
    )
    return unpack_acc(d), a.float() @ bt.float().t() + c


def expect_error(fn, pattern):
    with pytest.raises(RuntimeError) as info:
        fn()
    msg = str(info.value)
    assert re.search(pattern, msg), msg
    assert re.search(THREAD, msg) and "kernel: " in msg, msg
    return msg


@pytest.mark.parametrize(
    ("variant", "pattern"),
    [
        (NO_PROXY_FENCE, "not made visible to the async proxy: fence.proxy.async"),
        (NO_FENCE, "wgmma.mma_async without wgmma.fence"),
        (SECOND_BATCH_NO_FENCE, "wgmma.mma_async without wgmma.fence"),
        (NO_WAIT, r"exits with 2 wgmma.mma_async operation\(s\) it never waited for"),
    ],
    ids=["no-proxy-fence", "no-wgmma-fence", "no-fence-after-wait", "no-wait"],
)
def test_wgmma_misuse_raises(emu_ops, variant, pattern):
    expect_error(lambda: run_wgmma(emu_ops, variant), pattern)


def test_accumulators_read_before_the_wait_are_nan(emu_ops):
    d, _ = run_wgmma(emu_ops, EARLY_READ)
    assert torch.isnan(d).all()


def test_operands_overwritten_before_the_wait_change_the_result(emu_ops):
    d, expected = run_wgmma(emu_ops, OVERWRITE)
    assert not torch.equal(d, expected)  # the overwrite (zeros, fenced) is what the wgmma reads at its wait
    assert torch.equal(run_wgmma(emu_ops, 0)[0], expected)


def fault(emu_ops, variant, threads=128):
    out = torch.zeros(threads)
    emu_ops.hopper_fault(out, variant, threads)
    return out


@pytest.mark.parametrize(
    ("variant", "threads", "pattern"),
    [
        (0, 256, r"deadlock.*\n.*wgmma.mma_async #0 of warpgroup 0 .* by warp\(s\) 1 2 3 but not by warp\(s\) 0"),
        (1, 128, "lane 5 of warp 0 passes other operands"),
        (2, 64, "holds no mbarrier of this block"),
        (3, 64, "was overwritten by an ordinary store"),
        (4, 64, "more arrivals in one phase than the count 1"),
        (5, 64, r"deadlock.*\n.*phase 0 \(parity 0\) waits for 1 arrival\(s\)(.|\n)*threads 0-63 wait for parity 0"),
        (6, 64, r"deadlock(.|\n)*named barrier 1: 32 of 64 threads arrived"),
        (9, 128, "non-zero base offset"),
        (10, 128, "lies past the launch's dynamic shared memory"),
        (12, 128, "an MN-major 128B-swizzled operand must start at the beginning of a swizzle row"),
        (0, 160, r"needs the whole warpgroup 1 \(warps 4-7, 128 threads\), but the block has 160 threads"),
    ],
    ids=[
        "not-a-warpgroup",
        "non-uniform-descriptor",
        "uninitialised-mbarrier",
        "overwritten-mbarrier",
        "too-many-arrivals",
        "mbarrier-deadlock",
        "named-barrier-deadlock",
        "base-offset",
        "operand-out-of-smem",
        "mn-major-start-in-a-row",
        "partial-warpgroup",
    ],
)
def test_faults_raise(emu_ops, variant, threads, pattern):
    expect_error(lambda: fault(emu_ops, variant, threads), pattern)


def test_elect_one_sync_elects_lane_0_of_each_warp(emu_ops):
    out = fault(emu_ops, 7, threads=96)
    assert torch.equal(out, (torch.arange(96) % 32 == 0).float())


def test_named_barrier_orders_two_groups(emu_ops, two_orders):
    out = two_orders(fault, emu_ops, 8, 128)
    assert torch.equal(out[64:], torch.arange(1, 65).float())


def test_sm90a_instructions_under_emulated_sm80(emu_ops):
    with emulator.arch("sm_80"):
        expect_error(lambda: fault(emu_ops, 11), r"needs sm_90a, but the emulated architecture is sm_80")
        with pytest.raises(RuntimeError, match="unsupported arch"):
            run_wgmma(emu_ops, 0)  # the launcher of an sm_90a-only kernel refuses
    assert torch.equal(fault(emu_ops, 11), torch.zeros(128))


def test_the_process_keeps_working_after_faults(emu_ops):
    for variant in (2, 5):
        with pytest.raises(RuntimeError):
            fault(emu_ops, variant, 64)
    d, expected = run_wgmma(emu_ops, 0)
    assert torch.equal(d, expected)

"""qwen35_native.emulator: settings, context managers that restore them, validation, statistics, and the
launch speed the issue asks for (a 256-thread block through 1,000 __syncthreads well under a second)."""

from __future__ import annotations

import time

import pytest
import torch

from qwen35_native import emulator

BARRIER_LOOP = 13  # fault_kernel variant: p.arg iterations of __syncthreads()


def test_schedule_context_manager_restores():
    assert emulator.available()
    before = emulator.get_schedule()
    with emulator.schedule("random:42"):
        assert emulator.get_schedule() == "random:42"
        with emulator.schedule("reverse"):
            assert emulator.get_schedule() == "reverse"
        assert emulator.get_schedule() == "random:42"
    assert emulator.get_schedule() == before


@pytest.mark.parametrize("bad", ["backwards", "random:", "random:-1", "random:x", ""])
def test_bad_schedule_raises(bad):
    with (
        pytest.raises(ValueError, match="schedule must be 'forward', 'reverse' or 'random:<seed>'"),
        emulator.schedule(bad),
    ):
        pass
    assert emulator.get_schedule() == "forward"


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="arch must be 'sm_80' or 'sm_90'"), emulator.arch("sm_70"):
        pass
    with pytest.raises(ValueError, match="threads must be >= 0"), emulator.threads(-1):
        pass
    with pytest.raises(ValueError, match=">= 16 KiB"):
        emulator.set_stack_size(8)
    with pytest.raises(TypeError):
        emulator.schedule(1)


def test_threads_give_the_same_results(emu_ops):
    x = torch.randn(4096 * 3, dtype=torch.float32)
    one = emu_ops.pipeline(x, 16, False)
    with emulator.threads(2):
        assert emulator.get_threads() == 2
        assert torch.equal(emu_ops.pipeline(x, 16, False), one)
    assert emulator.get_threads() == 1


def test_stats_count_work(emu_ops):
    emulator.reset_stats()
    emu_ops.racy(torch.zeros(64), 0)
    s = emulator.stats()
    assert s["launches"] == 1 and s["blocks"] == 1 and s["threads"] == 64 and s["barriers"] == 1
    assert s["context_switches"] >= 64


def test_barrier_speed(emu_ops):
    out = torch.zeros(256, dtype=torch.int32)
    emu_ops.fault(out, BARRIER_LOOP, 10, [1, 1, 1], [256, 1, 1], 0)  # warm-up: stacks mapped
    start = time.perf_counter()
    emu_ops.fault(out, BARRIER_LOOP, 1000, [1, 1, 1], [256, 1, 1], 0)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"256 threads x 1000 __syncthreads took {elapsed:.3f} s"

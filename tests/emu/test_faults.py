"""Faults in emulated kernels are Python errors naming the kernel, block and thread, never hangs or crashes:
barrier divergence, deadlocks, inconsistent or bad warp masks, lanes that exit while others wait for them,
dynamic shared memory past the launch's size, invalid addresses, __trap, integer division by zero, stack
overflow, and launches over the emulated architecture's limits. The process keeps working afterwards."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

from qwen35_native import emulator

THREAD = r"block \(\d+, 0, 0\), thread \(\d+, 0, 0\) \(warp \d+, lane \d+\)"
LAUNCHER = r"launched from: .*launch_fault"


def run_fault(emu_ops, variant, arg=0, grid=(1, 1, 1), block=(64, 1, 1), smem=256):
    out = torch.zeros(block[0] * block[1] * block[2], dtype=torch.int32)
    emu_ops.fault(out, variant, arg, list(grid), list(block), smem)
    return out


def expect_fault(emu_ops, pattern, variant, **kwargs):
    with pytest.raises(RuntimeError) as info:
        run_fault(emu_ops, variant, **kwargs)
    msg = str(info.value)
    for part in (pattern, THREAD, LAUNCHER, "kernel: "):
        assert re.search(part, msg), f"{part!r} not in:\n{msg}"
    return msg


@pytest.mark.parametrize(
    ("variant", "pattern"),
    [
        (0, r"barrier divergence: this thread exited while 16 thread\(s\) wait at __syncthreads\(\)"),
        (
            1,
            r"barrier divergence: (this thread exited while 32 thread\(s\) wait at __syncthreads\(\)|"
            r"__syncthreads\(\) at fault_test_kernels.cu:\d+ reached after 32 thread\(s\) "
            r"of the block exited)",
        ),
        (
            2,
            r"barrier divergence: this thread reached __syncthreads\(\) at fault_test_kernels.cu:\d+ "
            r"while 1 thread",
        ),
    ],
    ids=["divergent-branch", "exited-threads", "two-sites"],
)
def test_barrier_divergence_raises(emu_ops, variant, pattern):
    expect_fault(emu_ops, pattern, variant)


def test_lane_exits_while_warp_waits(emu_ops):
    expect_fault(
        emu_ops, r"this lane exited while lanes 0-15 wait for it in __shfl_sync\(mask=0xffffffff\)", 3
    )


def test_deadlock_raises(emu_ops):
    msg = expect_fault(emu_ops, r"deadlock: no thread of the block can proceed", 4)
    assert "lanes 0-15 wait in __shfl_sync(mask=0xffffffff)" in msg
    assert "waiting in __syncthreads()" in msg


def test_inconsistent_masks_deadlock_raises(emu_ops):
    expect_fault(emu_ops, r"deadlock \(inconsistent warp-collective masks\)", 5)


def test_lane_outside_its_mask_raises(emu_ops):
    expect_fault(
        emu_ops,
        r"__shfl_sync at fault_test_kernels.cu:\d+: the calling lane 0 is not in its mask 0xfffffffe",
        6,
    )


def test_dynamic_smem_out_of_bounds_raises(emu_ops):
    run_fault(emu_ops, 7, arg=63, smem=256)  # in bounds
    expect_fault(
        emu_ops,
        r"dynamic shared memory access out of bounds: byte offset 256 is past the launch's "
        r"smem_bytes = 256",
        7,
        arg=64,
        smem=256,
    )


def test_invalid_address_raises(emu_ops):
    expect_fault(emu_ops, r"invalid memory access at address", 8, arg=5)


def test_trap_and_division_by_zero_raise(emu_ops):
    expect_fault(emu_ops, r"__trap\(\) called", 10, arg=3)
    expect_fault(emu_ops, r"integer division by zero", 11, arg=0)


def test_stack_overflow_raises(emu_ops):
    msg = expect_fault(
        emu_ops, r"stack overflow: the thread used more than its 256 KiB stack", 9, arg=2000, block=(32, 1, 1)
    )
    assert "QWEN35_EMU_STACK_KB" in msg
    emulator.set_stack_size(2048)
    try:
        run_fault(emu_ops, 9, arg=2000, block=(32, 1, 1))  # fits in 2 MiB
    finally:
        emulator.set_stack_size(256)


def test_stack_overflow_in_subprocess_keeps_process_alive():
    script = textwrap.dedent("""
        import torch, qwen35_native._emu_tests
        out = torch.zeros(32, dtype=torch.int32)
        try:
            torch.ops.q35_emu_tests.fault(out, 9, 100000, [1, 1, 1], [32, 1, 1], 0)
        except RuntimeError as e:
            print("caught:", str(e).splitlines()[0])
        x = torch.arange(32, dtype=torch.float32)
        print("still works:", bool(torch.equal(torch.ops.q35_emu_tests.racy(x, 0), 2 * x.roll(-1))))
    """)
    env = dict(os.environ, QWEN35_EMU_STACK_KB="64")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "caught: qwen35_native emulator: stack overflow" in res.stdout
    assert "64 KiB" in res.stdout and "still works: True" in res.stdout


def test_spin_wait_with_nanosleep_makes_progress(emu_ops):
    for order in ("forward", "reverse"):
        with emulator.schedule(order):
            assert int(run_fault(emu_ops, 12)[0]) == 7


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"block": (1025, 1, 1)}, r"block \(1025, 1, 1\) has 1025 threads; at most 1024"),
        ({"block": (8, 8, 65)}, r"block \(8, 8, 65\) has 4160 threads"),
        ({"grid": (1, 65536, 1)}, r"grid \(1, 65536, 1\) exceeds"),
        ({"smem": 227 * 1024 + 1}, r"dynamic shared memory of 232449 bytes exceeds the 232448-byte limit"),
        ({"block": (0, 1, 1)}, r"grid \(1, 1, 1\) and block \(0, 1, 1\) must not be empty"),
    ],
    ids=["threads", "block-z", "grid-y", "smem", "empty"],
)
def test_launch_limits_raise(emu_ops, kwargs, pattern):
    with pytest.raises(RuntimeError, match=r"invalid launch for sm_90: " + pattern):
        run_fault(emu_ops, -1, **{"block": (32, 1, 1), **kwargs})


def test_sm80_shared_memory_limit(emu_ops):
    run_fault(emu_ops, -1, smem=200 * 1024)
    with emulator.arch("sm_80"):
        run_fault(emu_ops, -1, smem=163 * 1024)
        with pytest.raises(
            RuntimeError, match=r"invalid launch for sm_80: dynamic shared memory of 166913 bytes"
        ):
            run_fault(emu_ops, -1, smem=163 * 1024 + 1)
    assert emulator.get_arch() == "sm_90"


def test_faults_in_multiblock_grids_on_several_os_threads(emu_ops):
    with emulator.threads(2), pytest.raises(RuntimeError, match="barrier divergence"):
        run_fault(emu_ops, 0, grid=(8, 1, 1))
    x = torch.arange(64, dtype=torch.float32)
    assert torch.equal(emu_ops.racy(x, 0), 2 * x.roll(-1))

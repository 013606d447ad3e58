"""Speed of the SIMT emulator (csrc/emu/README.md quotes these figures): barriers, warp collectives, an mma-
heavy
GEMM tile, and the RMSNorm op on the CPU. Usage: PYTHONPATH=python python bench/emu.py [--reps N]"""

from __future__ import annotations

import argparse
import time

import qwen35_native._emu_tests  # noqa: F401
import torch

from qwen35_native import emulator
from qwen35_native.ops import rms_norm

BARRIER_LOOP = 13  # fault_kernel variant: p.arg x __syncthreads()


def median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    ops = torch.ops.q35_emu_tests
    out = torch.zeros(256, dtype=torch.int32)
    t = median_seconds(lambda: ops.fault(out, BARRIER_LOOP, 1000, [1, 1, 1], [256, 1, 1], 0), args.reps)
    print(
        f"256 threads x 1000 __syncthreads: {t * 1e3:8.1f} ms  ({t / 256e3 * 1e9:.0f} ns per thread-barrier)"
    )
    x = torch.randn(8, 1024)
    emulator.reset_stats()
    t = median_seconds(lambda: ops.block_reduce(x, 1024), args.reps)
    print(f"block_reduce 8 x 1024 threads:    {t * 1e3:8.1f} ms")
    for m, n, k in [(64, 64, 64), (128, 128, 128), (256, 256, 256)]:
        a, b = torch.randn(m, k).bfloat16(), torch.randn(n, k).bfloat16()
        t = median_seconds(lambda a=a, b=b: ops.gemm(a, b, False), args.reps)
        mmas = (m // 16) * (n // 8) * (k // 16)
        print(
            f"gemm {m}x{n}x{k} bf16 (ldmatrix + {mmas} mma.sync): {t * 1e3:8.1f} ms  "
            f"({t / mmas * 1e6:.2f} us per mma incl. loads)"
        )
    for shape in [(16, 4096), (256, 4096)]:
        xs, w = torch.randn(shape).bfloat16(), torch.randn(shape[-1]).bfloat16()
        t = median_seconds(lambda xs=xs, w=w: rms_norm(xs, w, backend="kernel"), args.reps)
        print(f"rms_norm {shape[0]}x{shape[1]} bf16 (emulated): {t * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()

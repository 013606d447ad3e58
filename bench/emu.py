"""Speed of the SIMT emulator on the CPU (csrc/emu/README.md quotes these figures): barriers, block reduction, an
mma-heavy GEMM tile, sm_90a wgmma and a warp-specialised TMA + wgmma GEMM, and the RMSNorm op emulated. Runs on
the CPU even on a GPU machine.
Usage: PYTHONPATH=python python bench/emu.py [--reps N] [--dry-run] [--json F]"""

from __future__ import annotations

import argparse

import torch

import qwen35_native._emu_tests  # noqa: F401  (registers torch.ops.q35_emu_tests)
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench
from qwen35_native.ops import rms_norm

BARRIER_LOOP = 13  # fault_kernel variant: p.arg x __syncthreads()
IMPL = "emulator (1 CPU thread)"


def run(args: argparse.Namespace) -> list[Row]:
    reps = 2 if args.dry_run else args.reps
    ops = torch.ops.q35_emu_tests
    rows = []
    out = torch.zeros(256, dtype=torch.int32)
    t = bench(lambda: ops.fault(out, BARRIER_LOOP, 1000, [1, 1, 1], [256, 1, 1], 0), device="cpu", reps=reps)
    rows.append(Row(op="__syncthreads x1000", shape="256 threads", dtype="-", impl=IMPL, median_us=t["median_us"],
                    notes=f"{t['median_us'] * 1e3 / 256e3:.0f} ns per thread-barrier"))
    x = torch.randn(8, 1024)
    t = bench(lambda: ops.block_reduce(x, 1024), device="cpu", reps=reps)
    rows.append(Row(op="block_reduce", shape="8 blocks x 1024 threads", dtype="fp32", impl=IMPL,
                    median_us=t["median_us"]))
    sizes = [(64, 64, 64)] if args.dry_run else [(64, 64, 64), (128, 128, 128), (256, 256, 256)]
    for m, n, k in sizes:
        a, b = torch.randn(m, k).bfloat16(), torch.randn(n, k).bfloat16()
        t = bench(lambda: ops.gemm(a, b, False), device="cpu", reps=reps)
        mmas = (m // 16) * (n // 8) * (k // 16)
        rows.append(Row(op="gemm ldmatrix+mma.sync", shape=f"{m}x{n}x{k}", dtype="bf16", impl=IMPL,
                        median_us=t["median_us"], flops=2.0 * m * n * k,
                        notes=f"{t['median_us'] / mmas:.2f} us per mma incl. loads"))
    rows += hopper_rows(ops, reps, args.dry_run)
    for shape in [(16, 4096)] if args.dry_run else [(16, 4096), (256, 4096)]:
        xs, w = torch.randn(shape).bfloat16(), torch.randn(shape[-1]).bfloat16()
        t = bench(lambda: rms_norm(xs, w, backend="kernel"), device="cpu", reps=reps)
        rows.append(Row(op="rms_norm", shape=f"{shape[0]}x{shape[1]}", dtype="bf16", impl=IMPL,
                        median_us=t["median_us"]))
    return rows


def hopper_rows(ops, reps: int, dry_run: bool) -> list[Row]:
    """wgmma m64n128k16: one probe launch with k = 64 (4 chained wgmmas) minus one with k = 16 (1 wgmma), / 3;
    the pipelined GEMM (TMA + mbarrier + wgmma m64n128k16 on two consumer warpgroups)."""
    rows = []
    n = 128
    times = {}
    for k in (16, 64):
        a, bt = torch.randn(64, k).bfloat16(), torch.randn(n, k).bfloat16()
        frags, c = torch.zeros(k // 16, 128, 4, dtype=torch.int32), torch.zeros(128, n // 2)
        args = (a.view(torch.int16), frags, bt.view(torch.int16), c, n, k, False, False, True, 128, 0)
        times[k] = bench(lambda: ops.wgmma_probe(*args), device="cpu", reps=reps)["median_us"]
    per = (times[64] - times[16]) / 3
    rows.append(Row(op="wgmma m64n128k16 (SS, 128B swizzle)", shape="1 warpgroup", dtype="bf16", impl=IMPL,
                    median_us=per, flops=2.0 * 64 * n * 16, notes=f"launch with 1 wgmma: {times[16]:.0f} us"))
    sizes = [(128, 128, 64)] if dry_run else [(128, 128, 64), (256, 256, 256)]
    for m, n_, k in sizes:
        a, bt = torch.randn(m, k).bfloat16(), torch.randn(n_, k).bfloat16()
        t = bench(lambda: ops.hopper_gemm(a, bt, 128, False, 0), device="cpu", reps=reps)
        wgmmas = (m // 64) * (n_ // 128) * (k // 16)
        rows.append(Row(op="gemm TMA+mbarrier+wgmma, 2 stages", shape=f"{m}x{n_}x{k}", dtype="bf16", impl=IMPL,
                        median_us=t["median_us"], flops=2.0 * m * n_ * k,
                        notes=f"{t['median_us'] / wgmmas:.0f} us per wgmma m64n128k16 incl. pipeline"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("emulator speed (CPU)", args)
    emit("emulator speed (CPU)", run(args), args)


if __name__ == "__main__":
    main()

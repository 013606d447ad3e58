"""Measures the ceilings of the card at hand (METHOD.md): device-to-device copy bandwidth (bytes read + written)
and a large bf16 GEMM through torch (cuBLAS), on random data. Other benchmarks' %-of-peak columns use the table in
_peaks.py; these rows show whether the card matches it. Also the same copy and a read-only reduction on buffers
small enough to stay in L2 (8 MiB each, timed back to back without flushing): an estimate of what the L2 delivers
to the SMs, which the MoE GEMMs' operand feed is compared against (csrc/kernels/moe/README.md, "sorted rows")."""

from __future__ import annotations

import argparse

import torch

from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, bench_graph


def _per_kernel(fn, batch: int, device: str) -> float:
    """Median time of one of the ``batch`` kernels ``fn`` launches, in us."""
    if device == "cuda":
        return bench_graph(fn, replays=20)["median_us"] / batch
    return bench(fn, device=device, reps=3, flush_l2=False)["median_us"] / batch


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    n_copy = (1 << 16) if args.dry_run else (1 << 30)  # 2 GiB of bf16 on the GPU
    src = torch.randn(n_copy, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = bench(lambda: dst.copy_(src), device=device, reps=3 if args.dry_run else 20, flush_l2=False)
    n_l2 = (1 << 12) if args.dry_run else (1 << 22)   # 8 MiB of bf16: the source and the copy both fit in L2
    src_l2 = torch.randn(n_l2, device=device, dtype=torch.bfloat16)
    dst_l2 = torch.empty_like(src_l2)
    # 50 back-to-back kernels per measured call (a few us each: alone, their launches would be what is timed),
    # inside a CUDA graph on the GPU
    total = torch.empty(1, device=device, dtype=torch.float32)
    batch = 50
    copy_l2 = _per_kernel(lambda: [dst_l2.copy_(src_l2) for _ in range(batch)], batch, device)
    rows_l2 = src_l2.view(1, -1)
    sum_l2 = _per_kernel(lambda: [torch.sum(rows_l2, dim=1, dtype=torch.float32, out=total) for _ in range(batch)],
                         batch, device)
    m = 128 if args.dry_run else 8192
    a = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    b = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    gemm = bench(lambda: a @ b, device=device, reps=3 if args.dry_run else 20, flush_l2=False)
    return [
        Row(op="copy d2d", shape=f"{n_copy}", dtype="bf16", impl="torch", median_us=copy["median_us"],
            bytes=2 * src.numel() * src.element_size()),
        Row(op="gemm", shape=f"{m}x{m}x{m}", dtype="bf16", impl="torch/cuBLAS", median_us=gemm["median_us"],
            flops=2.0 * m * m * m),
        Row(op="copy d2d (L2-resident)", shape=f"{n_l2}", dtype="bf16", impl="torch", median_us=copy_l2,
            bytes=2 * src_l2.numel() * src_l2.element_size(), notes="read + written, no L2 flush between runs"),
        Row(op="sum (L2-resident)", shape=f"{n_l2}", dtype="bf16", impl="torch", median_us=sum_l2,
            bytes=src_l2.numel() * src_l2.element_size(), notes="read only, no L2 flush between runs"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("ceilings", args)
    emit("ceilings", run(args), args)


if __name__ == "__main__":
    main()

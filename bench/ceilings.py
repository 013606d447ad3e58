"""Measures the two ceilings of the card at hand (METHOD.md): device-to-device copy bandwidth (bytes read +
written) and a large bf16 GEMM through torch (cuBLAS), on random data. Other benchmarks' %-of-peak columns use the
table in _peaks.py; this row shows whether the card matches it."""

from __future__ import annotations

import argparse

import torch

from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    n_copy = (1 << 16) if args.dry_run else (1 << 30)  # 2 GiB of bf16 on the GPU
    src = torch.randn(n_copy, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy = bench(lambda: dst.copy_(src), device=device, reps=3 if args.dry_run else 20, flush_l2=False)
    m = 128 if args.dry_run else 8192
    a = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    b = torch.randn(m, m, device=device, dtype=torch.bfloat16)
    gemm = bench(lambda: a @ b, device=device, reps=3 if args.dry_run else 20, flush_l2=False)
    return [
        Row(op="copy d2d", shape=f"{n_copy}", dtype="bf16", impl="torch", median_us=copy["median_us"],
            bytes=2 * src.numel() * src.element_size()),
        Row(op="gemm", shape=f"{m}x{m}x{m}", dtype="bf16", impl="torch/cuBLAS", median_us=gemm["median_us"],
            flops=2.0 * m * m * m),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("ceilings", args)
    emit("ceilings", run(args), args)


if __name__ == "__main__":
    main()

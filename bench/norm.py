"""RMSNorm (+ fused residual add) benchmark: our kernel vs the eager torch reference on the same inputs.
Memory-bound: reports GB/s of the bytes the op must move (x, residual, weight in; y, residual out)."""

from __future__ import annotations

import argparse

import torch

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, count_bytes


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    tokens = [1, 7] if args.dry_run else args.tokens
    hiddens = [256] if args.dry_run else args.hidden
    reps = 3 if args.dry_run else 50
    rows = []
    for hidden in hiddens:
        for n in tokens:
            for with_residual in (False, True):
                x = torch.randn(n, hidden, device=device, dtype=torch.bfloat16)
                r = torch.randn_like(x) if with_residual else None
                w = torch.randn(hidden, device=device, dtype=torch.bfloat16) * 0.1
                ours = bench(lambda: q35.ops.rms_norm(x, w, residual=r, backend="kernel"), device=device, reps=reps)
                peer = bench(lambda: q35.ops.rms_norm_reference(x, w, residual=r), device=device, reps=reps)
                nbytes = count_bytes(x, w, x) + (2 * count_bytes(r) if with_residual else 0)
                rows.append(Row(op="fused_add_rms_norm" if with_residual else "rms_norm", shape=f"{n}x{hidden}",
                                dtype="bf16", impl="q35", median_us=ours["median_us"], bytes=nbytes,
                                peer="torch eager", peer_us=peer["median_us"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 64, 8192])
    parser.add_argument("--hidden", type=int, nargs="+", default=[4096, 2048])
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("rms_norm", args)
    emit("rms_norm", run(args), args)


if __name__ == "__main__":
    main()

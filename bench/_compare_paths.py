"""Which of our kernel paths won, shape by shape, in a benchmark results file (the .jsonl of bench/*.py --json or
bench/gpu_suite.sh): the paths that today are chosen automatically on an sm_90 GPU against the variants that wait
for a measurement to become the default (bench/GPU_LEASE.md), and where to flip the choice.

    python bench/_compare_paths.py bench/results/<date>-<gpu>.jsonl

Prints one line per (op, shape) that has more than one of our paths: each path's median time and its ratio to
the automatic one, the fastest marked. Rows that are not ours (torch, fla, sdpa) are left out; so are ops with a
single path."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

# op -> the path chosen automatically today on an sm_90 GPU (for the shapes the benchmarks run)
AUTO = {
    "gdn_chunk_prefill": "q35-sm90a-prepass",
    "gdn_chunk_prefill weak-decay": "q35-sm90a-prepass",
    "gdn_decode": "q35",
    "paged_prefill_attention": "q35 sm_90a V MN-major",
    "e2e decode step": "q35 (graphs)",
}
# the MoE GEMMs at the benchmarks' prefill sizes: the sm_90a kernels from an expert intermediate size of 128 per
# rank (every bench/moe.py shape), else sm_80
MOE_OPS = ("fused_moe", "moe_gate_up", "moe_down")
MOE_SM80_SHAPES = ()
# path (prefix) -> where the automatic choice would have to change to take it (the first matching prefix)
FLIP = {
    "q35 (graphs, cuBLAS projections)": "python/qwen35_native/ops/projection.py: skinny_unsupported, the auto choice "
                                        "(QWEN35_SKINNY_LINEAR=0 takes it today; bench/linear.py says per shape)",
    "q35 conv kernel first": "csrc/torch/sm90a_policy.h: gdn_decode_fused_auto (QWEN35_GDN_DECODE_FUSED=0 takes it "
                             "today)",
    "q35 last-CTA norm": "csrc/torch/sm90a_policy.h: gdn_decode_cluster_auto (QWEN35_GDN_DECODE_CLUSTER=0 takes it "
                         "today)",
    "q35-sm90a-prepass-h": "csrc/torch/sm90a_policy.h: gdn_prep_heads_per_cta (QWEN35_GDN_PREP_HEADS=N takes it "
                           "today)",
    "q35-sm90a-prepass": "csrc/torch/sm90a_policy.h: gdn_prepass_auto (QWEN35_GDN_PREPASS=1 takes it today)",
    "q35-sm90a": "csrc/torch/sm90a_policy.h: gdn_prepass_auto (QWEN35_GDN_PREPASS=0 takes it today)",
    "q35 sm_90a wgmma": "csrc/torch/attention_ops.cpp: run_paged_prefill (impl sm90a today)",
    "q35-sm80": "csrc/torch/gdn_scan_ops.cpp: run_chunk (QWEN35_SM90A=0 takes it today)",
    "q35 sm_90a ping-pong": "csrc/torch/attention_ops.cpp: run_paged_prefill (impl sm90a-pingpong / -vmn today)",
    "q35 sm_90a V MN-major": "csrc/torch/attention_ops.cpp: run_paged_prefill (impl sm90a-vmn today)",
    "q35 mma.sync": "csrc/torch/attention_ops.cpp: run_paged_prefill (QWEN35_SM90A=0 takes it today)",
    "q35 sm90a-sorted": "csrc/torch/sm90a_policy.h: moe_sorted_rows_auto (QWEN35_MOE_SORTED_ROWS=1 takes it today)",
    "q35 sm90a-pair-sorted": "csrc/torch/sm90a_policy.h: moe_cluster_auto and moe_sorted_rows_auto "
                             "(QWEN35_MOE_CLUSTER=1 QWEN35_MOE_SORTED_ROWS=1 take it today)",
    "q35 sm90a-pair": "csrc/torch/sm90a_policy.h: moe_cluster_auto (QWEN35_MOE_CLUSTER=1 takes it today)",
    "q35 decode-tiles bm=16 graph": "csrc/kernels/moe/moe_gemm.cuh: kMoeSkinnyMaxPairs (fused_moe's block_m=16 "
                                    "takes it today)",
    "q35 sm90a bm": "csrc/torch/moe_ops.cpp: kMoeSm90AutoMinInter (QWEN35_SM90A=1 takes it today)",
    "q35 sm80 bm": "csrc/torch/moe_ops.cpp: kMoeSm90AutoMinInter (QWEN35_SM90A=0 takes it today)",
}


def auto_path(op: str, shape: str) -> str:
    """The path an sm_90 GPU takes today for (op, shape) ('' when not known)."""
    if op in MOE_OPS:
        return "q35 sm80 bm=64" if MOE_SM80_SHAPES and shape.startswith(MOE_SM80_SHAPES) else "q35 sm90a bm=128"
    return AUTO.get(op, "")


def flip_site(impl: str) -> str:
    return next((where for prefix, where in FLIP.items() if impl.startswith(prefix)), "")


def ours(impl: str) -> bool:
    return impl.startswith("q35")


def load(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{n}: not a JSON line ({exc})") from exc
    return rows


def compare(rows: list[dict]) -> list[str]:
    groups: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in rows:
        if ours(row.get("impl", "")) and row.get("median_us"):
            groups[(row["op"], row["shape"])][row["impl"]] = float(row["median_us"])
    lines = []
    for (op, shape), paths in sorted(groups.items()):
        if len(paths) < 2:
            continue
        auto = auto_path(op, shape)
        ref = paths.get(auto) or min(paths.values())
        best = min(paths, key=paths.get)
        cells = [f"{'*' if impl == best else ' '}{impl} {us:.1f} us ({ref / us:.2f}x)"
                 for impl, us in sorted(paths.items(), key=lambda kv: kv[1])]
        lines.append(f"{op} | {shape} | " + " | ".join(cells))
        if auto in paths and best != auto and paths[best] < 0.97 * paths[auto]:
            lines.append(f"  -> {best} beats the automatic {auto} by {paths[auto] / paths[best]:.2f}x: "
                         f"{flip_site(best) or 'see bench/GPU_LEASE.md'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a .jsonl written by bench/*.py --json")
    args = parser.parse_args()
    lines = compare(load(args.results))
    print("\n".join(lines) if lines else "no op with more than one of our paths in this file")


if __name__ == "__main__":
    main()

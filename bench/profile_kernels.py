"""One launch of each tensor-core kernel (and the skinny linear), both paths, at a headline shape, for Nsight
Compute: where the time goes inside a kernel (stall reasons, issue slots, occupancy, the hottest source lines)
when the benchmarks say it is far from its ceiling. Each (kernel, path) runs once to warm up, then once inside an
NVTX range after torch.cuda.profiler.start(), so `ncu --profile-from-start off` sees exactly the measured launches.

    bash bench/gpu_suite.sh profile       # runs this under ncu and prints the hot spots
    python bench/profile_kernels.py [--only gdn attention moe linear] [--dry-run]

Shapes (PERF_TARGETS.md): GDN chunk scan 397b-tp8 1x32768 (the split scheme: plan, pre-pass, chain, output pass),
attention prefill 1x8192 32q/2kv d 256, MoE gate_up / down at 397b-tp1 with 8192 tokens, the skinny linear on two
35b-a3b decode projections. --dry-run: tiny shapes
through the emulator (CI), no profiler."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

import qwen35_native as q35
from qwen35_native.ops.moe_stages import moe_align, sm90a_path

D_GDN, D_ATTN, BLOCK = 128, 256, 64


def _gdn(device: str, dry: bool) -> list[tuple[str, Callable[[], object]]]:
    hk, hv, T = (1, 2, 70) if dry else (2, 8, 32768)
    q = torch.randn(T, hk, D_GDN, device=device, dtype=torch.bfloat16)
    k = torch.randn(T, hk, D_GDN, device=device, dtype=torch.bfloat16)
    v = torch.randn(T, hv, D_GDN, device=device, dtype=torch.bfloat16)
    a_log = torch.empty(hv, device=device).uniform_(1, 16).log()
    g = -a_log.exp() * torch.nn.functional.softplus(torch.randn(T, hv, device=device) + 1.0)
    beta = torch.sigmoid(torch.randn(T, hv, device=device)).bfloat16()
    cu = torch.tensor([0, T], dtype=torch.int32, device=device)
    o = torch.empty(T, hv, D_GDN, device=device, dtype=torch.bfloat16)
    final = torch.empty(1, hv, D_GDN, D_GDN, device=device)

    def run(arch):
        return lambda: torch.ops.qwen35_native.chunk_gated_delta_rule(
            q, k, v, g, beta, D_GDN ** -0.5, None, cu, True, 0, q35.ops.gdn.SHORTCUT_LOG_DECAY, o, final, arch)
    hopper = device == "cpu" or torch.cuda.get_device_capability() == (9, 0)
    return [("gdn-chunk-sm80", run(80))] + ([("gdn-chunk-sm90a", run(90)), ("gdn-chunk-sm90a-prepass", run(91))]
                                             if hopper else [])


def _attention(device: str, dry: bool) -> list[tuple[str, Callable[[], object]]]:
    L, Hq, Hkv = (70, 4, 1) if dry else (8192, 32, 2)
    nb = -(-L // BLOCK)
    k_cache = torch.randn(nb, BLOCK, Hkv, D_ATTN, device=device, dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    tables = torch.arange(nb, dtype=torch.int32, device=device)[None]
    seq_lens = torch.tensor([L], dtype=torch.int32, device=device)
    q = torch.randn(L, Hq, D_ATTN, device=device, dtype=torch.bfloat16)
    gate = torch.randn(L, Hq * D_ATTN, device=device, dtype=torch.bfloat16)
    cu = torch.tensor([0, L], dtype=torch.int32, device=device)

    def run(impl):
        return lambda: q35.ops.paged_prefill_attention(q, k_cache, v_cache, cu, seq_lens, tables, gate,
                                                       backend="kernel", impl=impl)
    hopper = device == "cpu" or torch.cuda.get_device_capability() == (9, 0)
    variants = ("sm90a", "sm90a-pingpong", "sm90a-vmn", "sm90a-pingpong-vmn")
    return [("attention-prefill-sm80", run("sm80"))] + ([(f"attention-prefill-{v}", run(v)) for v in variants]
                                                        if hopper else [])


def _moe(device: str, dry: bool) -> list[tuple[str, Callable[[], object]]]:
    N, E, top_k, H, inter = (96, 8, 2, 128, 64) if dry else (8192, 512, 10, 4096, 1024)
    x = torch.randn(N, H, device=device, dtype=torch.bfloat16)
    w13 = torch.randn(E, 2 * inter, H, device=device, dtype=torch.bfloat16).div_(H ** 0.5)
    w2 = torch.randn(E, H, inter, device=device, dtype=torch.bfloat16).div_(inter ** 0.5)
    weights, ids = q35.ops.moe_route(torch.randn(N, E, device=device), top_k)
    cases = []
    for label, bm in [("sm80", 64)] + ([("sm90a", 128), ("sm90a-pair", 256)] if sm90a_path(device) else []):
        pairs, tiles = moe_align(ids, 0, E, bm)
        act = torch.empty(pairs.numel(), inter, dtype=x.dtype, device=device)
        y = torch.empty(ids.numel(), H, dtype=x.dtype, device=device)
        ops = torch.ops.qwen35_native
        cases.append((f"moe-gate-up-{label}",
                      lambda p=pairs, t=tiles, a=act, b=bm: ops.moe_gate_up(x, w13, p, t, top_k, b, a)))
        cases.append((f"moe-down-{label}",
                      lambda p=pairs, t=tiles, a=act, b=bm, o=y: ops.moe_down(a, w2, weights, p, t, b, o)))
        if bm >= 128:   # gate_up on the rows copied into tile order (QWEN35_MOE_SORTED_ROWS), and the copy
            rows = torch.empty(pairs.numel(), H, dtype=x.dtype, device=device)
            ops.moe_permute(x, pairs, tiles, top_k, E, bm, rows)
            if bm == 128:
                cases.append(("moe-permute",
                              lambda p=pairs, t=tiles, r=rows: ops.moe_permute(x, p, t, top_k, E, 128, r)))
            cases.append((f"moe-gate-up-{label}-sorted",
                          lambda p=pairs, t=tiles, a=act, r=rows, b=bm: ops.moe_gate_up(x, w13, p, t, top_k, b, a, r)))
    return cases


def _linear(device: str, dry: bool) -> list[tuple[str, Callable[[], object]]]:
    """The skinny kernel on 35b-a3b's GDN in_proj (per-warp grid) and out_proj (K split over a block) at one row."""
    cases = []
    for label, n, k in [("in-proj", 12352, 2048), ("out-proj", 2048, 4096)]:
        n, k = (n // 64, k // 16) if dry else (n, k)
        x = torch.randn(1, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=device, dtype=torch.bfloat16)
        cases.append((f"skinny-linear-{label}", lambda x=x, w=w: q35.ops.linear(x, w, backend="kernel")))
    return cases


FAMILIES = {"gdn": _gdn, "attention": _attention, "moe": _moe, "linear": _linear}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (emulator), no profiler")
    args = parser.parse_args()
    device = "cpu" if args.dry_run else "cuda"
    torch.manual_seed(0)
    cases = [case for name in args.only for case in FAMILIES[name](device, args.dry_run)]
    for _, fn in cases:  # warm-up: module load, tensor maps, the allocator, autotuned nothing
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
    for name, fn in cases:
        if device == "cuda":
            with torch.cuda.nvtx.range(name):
                fn()
            torch.cuda.synchronize()
        else:
            fn()
        print(f"ran {name}")
    if device == "cuda":
        torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()

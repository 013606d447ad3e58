"""MoE benchmark (PERF_TARGETS.md "top-10 routing", "MoE, decode", "MoE, prefill"): the routed experts
(``fused_moe``: align + gate_up + down + combine), the whole block (``moe_block``: router GEMM, routing, shared
expert, experts) and the routing kernel, on the standard shapes, side by side with a plain PyTorch per-expert loop
and ``torch._grouped_mm`` (sort + two grouped GEMMs) on the same inputs.

Bytes are the floor of a memory-bound step: the weights of the experts the batch touches (each read once) plus
activations in and out; FLOPs are 2 * N * k * 3 * H * I (real rows only: the padding of the tiles is not counted).
Decode rows (N <= 64) are also timed inside a CUDA graph (launch gaps of a captured decode step); up to 64 pairs,
where fused_moe takes the skinny kernel (block_m 1, no align), the decode tiles beside it. From 8 rows per
expert the kernel paths run side by side, each stage alone (align, GEMMs, combine) and the whole fused_moe: below 32
rows per expert "decode-tiles" (block_m 16) too, "sm80" (block_m 64, mma.sync), on an sm_90 GPU "sm90a" (block_m 128,
TMA + wgmma, persistent; gate_up gathers the token rows with cp.async) and "sm90a-sorted" (the rows first copied into
tile order by moe_permute, then loaded by TMA; its gate_up row includes the copy, which is also timed alone;
QWEN35_MOE_SORTED_ROWS=1 makes fused_moe take it), and "sm90a-pair" / "sm90a-pair-sorted" (block_m 256: 2-CTA clusters
that TMA-multicast each weight tile to both CTAs, halving the weights' L2 -> SM traffic; QWEN35_MOE_CLUSTER=1).
``--dry-run``: tiny shapes through the SIMT emulator on the CPU (the emulated arch sm_90 runs them all).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
import torch.nn.functional as F

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, bench_graph, with_env
from qwen35_native.ops.moe_stages import (
    PREFILL_MIN_ROWS_PER_EXPERT,
    SKINNY_MAX_PAIRS,
    fused_moe_kernel,
    moe_align,
    sm90a_path,
)

# name: (experts, top_k, hidden H, expert intermediate I); the shared expert has I too (MODEL_SPEC §1.2)
SHAPES = {"397b-tp8": (512, 10, 4096, 128), "397b-tp1": (512, 10, 4096, 1024), "35b-a3b": (256, 8, 2048, 512)}
DRY_SHAPES = {"tiny": (8, 2, 64, 32)}
DRY_PREFILL_TOKENS = 200   # 50 rows per expert of "tiny": the prefill tiles
GRAPH_MAX_TOKENS = 64


def grouped_mm_moe(x, w13, w2, weights, ids):
    """Peer: sort the pairs by expert, torch._grouped_mm for gate_up and down, weighted index_add."""
    k, inter = ids.shape[1], w13.shape[1] // 2
    flat = ids.reshape(-1).long()
    order = torch.argsort(flat, stable=True)
    offs = torch.cumsum(torch.bincount(flat, minlength=w13.shape[0]), 0).to(torch.int32)
    token = order // k
    gu = torch._grouped_mm(x[token], w13.transpose(1, 2), offs=offs)                # [P, 2I]
    y = torch._grouped_mm(F.silu(gu[:, :inter]) * gu[:, inter:], w2.transpose(1, 2), offs=offs)
    y = y.float() * weights.reshape(-1)[order, None]
    return torch.zeros(x.shape, dtype=torch.float32, device=x.device).index_add_(0, token, y).to(x.dtype)


def torch_route(logits, k):
    w, ids = torch.softmax(logits.float(), -1).topk(k, dim=-1)
    return w / w.sum(-1, keepdim=True), ids


def _time(fn, device, reps):
    return bench(fn, device=device, reps=reps)["median_us"]


def stage_calls(x, w13, w2, weights, ids, bm, touched) -> tuple[dict, tuple]:
    """fused_moe's four stage ops on moe_align's tiles of block_m bm, each with its FLOPs and bytes (touched
    weights + rows in and out): ({op: (fn, flops, bytes)}, (pairs, tiles, act)), in running order."""
    E, H, inter = w13.shape[0], x.shape[1], w13.shape[1] // 2
    P, k = ids.numel(), ids.shape[1]
    ops = torch.ops.qwen35_native
    pairs, tiles = moe_align(ids, 0, E, bm)
    act = torch.empty(pairs.numel(), inter, dtype=x.dtype, device=x.device)
    y = torch.empty(P, H, dtype=x.dtype, device=x.device)
    aligned = (torch.empty_like(pairs), torch.empty_like(tiles))
    calls = {
        "moe_align": (partial(ops.moe_align, ids, 0, E, bm, *aligned), 0.0,
                      P * 4 + (pairs.numel() + tiles.numel()) * 4),
        "moe_gate_up": (partial(ops.moe_gate_up, x, w13, pairs, tiles, k, bm, act), 2.0 * P * 2 * inter * H,
                        touched * 2 * inter * H * 2 + (P * H + P * inter) * 2),
        "moe_down": (partial(ops.moe_down, act, w2, weights, pairs, tiles, bm, y), 2.0 * P * H * inter,
                     touched * H * inter * 2 + (P * inter + P * H) * 2),
        "moe_combine": (partial(ops.moe_combine, y, ids, 0, E, None, None, None, torch.empty_like(x)), 0.0,
                        (P * H + x.numel()) * 2),
    }
    return calls, (pairs, tiles, act)


def path_rows(shape, x, w13, w2, weights, ids, device, reps) -> list[Row]:
    """Our kernel paths on the same inputs -- sm80 (block_m 64), sm90a and sm90a-sorted (128), sm90a-pair and
    sm90a-pair-sorted (256) -- each stage alone (stage_calls; a stage that is the same kernel as an earlier path's
    is not timed again) and fused_moe. TFLOP/s of the real (token, expert) pairs; bytes: touched weights + rows
    (sorted: + the copy's write and read of the rows)."""
    E, H, inter = w13.shape[0], x.shape[1], w13.shape[1] // 2
    P, k = ids.numel(), ids.shape[1]
    touched = int(torch.unique(ids).numel())
    hopper = [("sm90a", 128, False), ("sm90a-sorted", 128, True), ("sm90a-pair", 256, False),
              ("sm90a-pair-sorted", 256, True)]
    paths = [("sm80", 64, False)] + (hopper if sm90a_path(device) else [])
    if P < 2 * PREFILL_MIN_ROWS_PER_EXPERT * E:   # near the switch from the decode tiles: those too, first
        paths.insert(0, ("decode-tiles", 16, False))
    rows, first = [], {}
    ops = torch.ops.qwen35_native
    for label, bm, sorted_rows in paths:
        stages, (pairs, tiles, act) = stage_calls(x, w13, w2, weights, ids, bm, touched)
        copy_bytes = 2 * P * H * 2 if sorted_rows else 0
        fused = with_env(partial(fused_moe_kernel, x, w13, w2, weights, ids, block_m=bm), "QWEN35_MOE_SORTED_ROWS",
                         "1" if sorted_rows else "0")
        stages["fused_moe"] = (fused, 2.0 * P * 3 * H * inter, touched * 3 * H * inter * 2 + 2 * x.numel() * 2
                               + copy_bytes)
        if label != paths[0][0]:   # the same kernel on the same pairs for every path
            del stages["moe_combine"]
        if sorted_rows:   # gate_up including the copy into tile order, and the copy alone
            a_rows = torch.empty(pairs.numel(), H, dtype=x.dtype, device=device)
            permute = partial(ops.moe_permute, x, pairs, tiles, k, E, bm, a_rows)

            def gate_up(permute=permute, pairs=pairs, tiles=tiles, act=act, a_rows=a_rows):
                permute()
                ops.moe_gate_up(x, w13, pairs, tiles, k, bm, act, a_rows)

            _, flops, nbytes = stages["moe_gate_up"]
            stages["moe_gate_up"] = (gate_up, flops, nbytes + copy_bytes)
            stages["moe_permute"] = (permute, 0.0, P * H * 2 + copy_bytes // 2)
            del stages["moe_align"]   # the same as the path without sorted rows
            if bm == 128:
                del stages["moe_down"]   # the same kernel as sm90a's
        for op, (fn, flops, nbytes) in stages.items():
            us = _time(fn, device, reps)
            peer, base = first.get(op, ("", None))   # the first path that ran the op (sm80): the others' peer
            first.setdefault(op, (label, us))
            rows.append(Row(op=op, shape=shape, dtype="bf16", impl=f"q35 {label} bm={bm}", median_us=us,
                            bytes=nbytes, flops=flops, peer=peer, peer_us=base,
                            notes=f"{P} pairs in <= {pairs.numel()} tile rows; {touched}/{E} experts touched"))
    return rows


def expert_rows(name, E, k, H, inter, tokens, device, reps, paths_only=False) -> list[Row]:
    g = torch.Generator(device=device).manual_seed(0)
    w13 = torch.randn(E, 2 * inter, H, device=device, dtype=torch.bfloat16, generator=g).div_(H ** 0.5)
    w2 = torch.randn(E, H, inter, device=device, dtype=torch.bfloat16, generator=g).div_(inter ** 0.5)
    sw13 = torch.randn(2 * inter, H, device=device, dtype=torch.bfloat16, generator=g) / H ** 0.5
    sw2 = torch.randn(H, inter, device=device, dtype=torch.bfloat16, generator=g) / inter ** 0.5
    gate_w = torch.randn(1, H, device=device, dtype=torch.bfloat16, generator=g) / H ** 0.5
    router = torch.randn(E, H, device=device, dtype=torch.bfloat16, generator=g) / H ** 0.5
    rows = []
    for n in tokens:
        x = torch.randn(n, H, device=device, dtype=torch.bfloat16, generator=g)
        weights, ids = q35.ops.moe_route(F.linear(x, router), k, backend="kernel")
        touched = int(torch.unique(ids).numel())
        if paths_only:
            rows += path_rows(f"{name} N={n}", x, w13, w2, weights, ids, device, reps) if n * k >= 8 * E else []
            continue
        expert_bytes = touched * 3 * H * inter * 2 + 2 * x.numel() * 2
        flops = 2.0 * n * k * 3 * H * inter
        shape = f"{name} N={n}"
        note = f"{touched}/{E} experts touched"
        ours = lambda: q35.ops.fused_moe(x, w13, w2, weights, ids, backend="kernel")  # noqa: E731
        loop = lambda: q35.ops.fused_moe(x, w13, w2, weights, ids, backend="reference")  # noqa: E731
        loop_us = _time(loop, device, max(2, reps // 3) if n >= 512 else reps)
        peer, peer_us = "torch loop", loop_us
        rows.append(Row(op="fused_moe", shape=shape, dtype="bf16", impl="torch loop", median_us=loop_us,
                        bytes=expert_bytes, flops=flops, notes=note))
        if device == "cuda" and hasattr(torch, "_grouped_mm"):
            try:
                gmm_us = _time(lambda: grouped_mm_moe(x, w13, w2, weights, ids), device, reps)
                rows.append(Row(op="fused_moe", shape=shape, dtype="bf16", impl="torch._grouped_mm",
                                median_us=gmm_us, bytes=expert_bytes, flops=flops, notes=note))
                peer, peer_us = "torch._grouped_mm", gmm_us
            except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:  # not in this torch build
                note += f"; torch._grouped_mm unavailable: {str(err).splitlines()[0][:80]}"
        rows.append(Row(op="fused_moe", shape=shape, dtype="bf16", impl="q35", median_us=_time(ours, device, reps),
                        bytes=expert_bytes, flops=flops, peer=peer, peer_us=peer_us, notes=note))
        block = lambda: q35.ops.moe_block(x, router, w13, w2, sw13, sw2, gate_w, k, backend="kernel")  # noqa: E731
        block_bytes = expert_bytes + (router.numel() + sw13.numel() + sw2.numel()) * 2
        block_flops = flops + 2.0 * n * (E + 3 * inter) * H
        block_ref = lambda: q35.ops.moe_block(x, router, w13, w2, sw13, sw2, gate_w, k,  # noqa: E731
                                              backend="reference")
        rows.append(Row(op="moe_block", shape=shape, dtype="bf16", impl="q35", median_us=_time(block, device, reps),
                        bytes=block_bytes, flops=block_flops, peer="torch loop",
                        peer_us=_time(block_ref, device, max(2, reps // 3) if n >= 512 else reps), notes=note))
        if n * k >= 8 * E:   # prefill sizes (8 rows per expert and more): the kernel paths side by side
            rows += path_rows(shape, x, w13, w2, weights, ids, device, reps)
        if device == "cuda" and n <= GRAPH_MAX_TOKENS:
            graphed = [("fused_moe", "q35 graph", ours, expert_bytes, flops),
                       ("moe_block", "q35 graph", block, block_bytes, block_flops)]
            if n * k <= SKINNY_MAX_PAIRS:   # the automatic choice is the skinny kernel: the decode tiles beside it
                tiles = partial(fused_moe_kernel, x, w13, w2, weights, ids, block_m=16)
                graphed.append(("fused_moe", "q35 decode-tiles bm=16 graph", tiles, expert_bytes, flops))
            for op, impl, fn, nbytes, nflops in graphed:
                rows.append(Row(op=op, shape=shape, dtype="bf16", impl=impl,
                                median_us=bench_graph(fn)["median_us"], bytes=nbytes, flops=nflops,
                                notes=note + ("; skinny kernel, block_m 1" if impl == "q35 graph" and
                                              n * k <= SKINNY_MAX_PAIRS else "")))
        if n <= GRAPH_MAX_TOKENS:
            rows += decode_stage_rows(shape, x, w13, w2, weights, ids, touched, note, reps)
    return rows


def decode_stage_rows(shape, x, w13, w2, weights, ids, touched, note, reps) -> list[Row]:
    """fused_moe's four decode kernels (block_m 16) one by one, each replayed alone in a CUDA graph (timed plainly
    on the CPU): which of them keeps the decode step above its bytes floor (PERF_TARGETS "MoE, decode"). A replay
    of one small kernel also carries the graph's launch cost, so the four do not add up to the graphed fused_moe
    exactly."""
    stages, _ = stage_calls(x, w13, w2, weights, ids, 16, touched)
    cuda = x.device.type == "cuda"
    timed = (lambda fn: bench_graph(fn)["median_us"]) if cuda else (lambda fn: _time(fn, "cpu", reps))
    impl = "q35 bm=16 graph (alone)" if cuda else "q35 bm=16"
    return [Row(op=op, shape=shape, dtype="bf16", impl=impl, median_us=timed(fn), bytes=nbytes, notes=note)
            for op, (fn, _, nbytes) in stages.items()]


def route_rows(E, k, tokens, device, reps) -> list[Row]:
    rows = []
    for n in tokens:
        logits = torch.randn(n, E, device=device, dtype=torch.bfloat16)
        nbytes = logits.numel() * 2 + n * k * 8
        ours = lambda: q35.ops.moe_route(logits, k, backend="kernel")  # noqa: E731
        rows.append(Row(op="moe_route", shape=f"N={n} E={E} k={k}", dtype="bf16", impl="q35",
                        median_us=_time(ours, device, reps), bytes=nbytes, peer="torch",
                        peer_us=_time(lambda: torch_route(logits, k), device, reps)))
        if device == "cuda" and n <= GRAPH_MAX_TOKENS:
            rows.append(Row(op="moe_route", shape=f"N={n} E={E} k={k}", dtype="bf16", impl="q35 graph",
                            median_us=bench_graph(ours)["median_us"], bytes=nbytes))
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    reps = 2 if args.dry_run else args.reps
    tokens = [1, 8, DRY_PREFILL_TOKENS] if args.dry_run else args.tokens
    shapes = DRY_SHAPES if args.dry_run else {name: SHAPES[name] for name in args.shapes}
    rows = [] if args.paths_only else route_rows(64 if args.dry_run else 512, 2 if args.dry_run else 10, tokens,
                                                 device, reps)
    for name, (E, k, H, inter) in shapes.items():
        rows += expert_rows(name, E, k, H, inter, tokens, device, reps, args.paths_only)
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 64, 512, 8192])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--paths-only", action="store_true",
                        help="only our kernel paths side by side (block_m 16 / 64 / 128 / 256), from 8 rows per expert")
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("moe", args)
    emit("moe", run(args), args)


if __name__ == "__main__":
    main()

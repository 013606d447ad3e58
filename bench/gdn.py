"""Gated DeltaNet benchmark (PERF_TARGETS.md): the chunked prefill scan (chunk_gated_delta_rule with the q/k L2 norm,
flash-linear-attention conventions) on 397b-tp1 / 397b-tp8 / 35b-a3b heads over 1x8192, 1x32768 and 8x4096 tokens,
and the decode step (the model's gdn_decode layer op: conv update, gating, L2 norm, state update, gated RMSNorm)
at batch 1, 32 and 512, next to flash-linear-attention's kernels on the same inputs when `fla` is importable.

FLOPs of the prefill are the real chunked ones, 11 d^2 per token and value head (d = 128; csrc/kernels/gdn/README.md
counts them); bytes are the tensors read and written once. Decode bytes: the fp32 state read and written, plus the
activations; % of peak bandwidth is what the decode target asks for. `--dry-run`: tiny shapes through the emulator."""

from __future__ import annotations

import argparse

import torch

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, bench_graph, count_bytes, with_env

D = 128
HEADS = {"397b-tp1": (16, 64), "397b-tp8": (2, 8), "35b-a3b": (16, 32)}
SEQSETS = {"1x8192": [8192], "1x32768": [32768], "8x4096": [4096] * 8}
DECODE_BATCHES = [1, 32, 512]
CHUNK_FLOPS_PER_TOKEN_HEAD = 11 * D * D


def _fla():
    try:  # flash-linear-attention (pure Python + Triton); optional peer
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
        return chunk_gated_delta_rule, fused_recurrent_gated_delta_rule
    except Exception:  # noqa: BLE001 - any import problem just means no peer
        return None


def _gates(T, hv, device, weak=False):
    """g from the model's gating on random a with A_log ~ log U(1, 16) (or 1000x weaker decay), beta = sigmoid(b)."""
    a = torch.randn(T, hv, device=device)
    a_log = torch.empty(hv, device=device).uniform_(1, 16).log() - (6.9 if weak else 0.0)
    g = -a_log.exp() * torch.nn.functional.softplus(a + 1.0)
    beta = torch.sigmoid(torch.randn(T, hv, device=device)).bfloat16()
    return g[None], beta[None]


def prefill_rows(args, device, fla) -> list[Row]:
    rows = []
    configs = {"tiny": (1, 2)} if args.dry_run else {k: HEADS[k] for k in args.configs}
    seqsets = {"1x70": [70], "2x40": [40, 40]} if args.dry_run else {k: SEQSETS[k] for k in args.seqsets}
    cases = [(c, s, False) for c in configs for s in seqsets]
    if not args.dry_run and "397b-tp8" in configs and "1x32768" in seqsets:
        cases.append(("397b-tp8", "1x32768", True))  # weak decay: the exact segment chain instead of the shortcut
    for config, seqset, weak in cases:
        hk, hv = configs[config]
        lens = seqsets[seqset]
        T = sum(lens)
        q = torch.randn(1, T, hk, D, device=device, dtype=torch.bfloat16)
        k = torch.randn(1, T, hk, D, device=device, dtype=torch.bfloat16)
        v = torch.randn(1, T, hv, D, device=device, dtype=torch.bfloat16)
        g, beta = _gates(T, hv, device, weak)
        cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=device, dtype=torch.int32)

        o = torch.empty(T, hv, D, device=device, dtype=torch.bfloat16)
        final = torch.empty(len(lens), hv, D, D, device=device)

        def ours(arch):  # the raw op (what the public wrapper calls) with the kernel forced
            torch.ops.qwen35_native.chunk_gated_delta_rule(q[0], k[0], v[0], g[0], beta[0], D ** -0.5, None, cu, True,
                                                           0, q35.ops.gdn.SHORTCUT_LOG_DECAY, o, final, arch)
        timings = {name: bench(with_env(lambda arch=arch: ours(arch), "QWEN35_GDN_PREP_HEADS", heads), device=device,
                               warmup=args.warmup, reps=args.reps)
                   for name, arch, heads in _paths(device, hv // hk)}
        peer_us = None
        if fla is not None:
            cu64 = cu.long()
            peer = bench(lambda: fla[0](q, k, v, g, beta, cu_seqlens=cu64, output_final_state=True,
                                        use_qk_l2norm_in_kernel=True), device=device, warmup=args.warmup,
                         reps=args.reps)
            peer_us = peer["median_us"]
        state_bytes = len(lens) * hv * D * D * 4
        for name, timing in timings.items():
            rows.append(Row(op="gdn_chunk_prefill" + (" weak-decay" if weak else ""), shape=f"{config} {seqset}",
                            dtype="bf16", impl=name, median_us=timing["median_us"],
                            bytes=count_bytes(q, k, v, g, beta, v) + state_bytes,
                            flops=float(CHUNK_FLOPS_PER_TOKEN_HEAD) * T * hv, peer="fla" if fla else "",
                            peer_us=peer_us))
    return rows


def _paths(device, per_k_head: int) -> list[tuple[str, int, str]]:
    """The chunk kernels that run here, side by side, as (name, arch of the raw op, QWEN35_GDN_PREP_HEADS): the
    sm_90a (wgmma) kernel on an sm_90 GPU (or the emulator at its default arch sm_90), fused (90) and after the
    chunk-local pre-pass (91) -- its CTAs taking one value head, and also 2 and 4 of one k head where Hv / Hk
    allows ("-h2", "-h4") -- and the mma.sync kernel (80) everywhere."""
    sm90 = _sm90(device)
    grouped = [(f"q35-sm90a-prepass-h{n}", 91, str(n)) for n in (2, 4) if per_k_head % n == 0]
    sm90_paths = [("q35-sm90a", 90, "1"), ("q35-sm90a-prepass", 91, "1")] + grouped
    return (sm90_paths if sm90 else []) + [("q35-sm80", 80, "1")]


def _decode_inputs(n, hk, hv, device):
    conv_dim = 2 * hk * D + hv * D
    proj = torch.randn(n, conv_dim + hv * D + 2 * hv, device=device, dtype=torch.bfloat16)
    qkv, z, b, a = proj.split([conv_dim, hv * D, hv, hv], dim=1)
    weights = dict(conv_weight=0.5 * torch.randn(conv_dim, 4, device=device, dtype=torch.bfloat16),
                   A_log=torch.empty(hv, device=device).uniform_(1, 16).log(),
                   dt_bias=torch.ones(hv, device=device, dtype=torch.bfloat16),
                   norm_weight=torch.ones(D, device=device, dtype=torch.bfloat16))
    caches = dict(conv_state=torch.randn(n, conv_dim, 3, device=device, dtype=torch.bfloat16),
                  ssm_state=0.1 * torch.randn(n, hv, D, D, device=device))
    return qkv, z, a, b, weights, caches


def _sm90(device) -> bool:
    return torch.cuda.get_device_capability() == (9, 0) if device == "cuda" else q35.emulator.get_arch() == "sm_90"


def _time_decode(step, device, args) -> tuple[float, str]:
    """Median us of an eager step, and on a GPU the note with its time in a CUDA graph."""
    median = bench(step, device=device, warmup=args.warmup, reps=args.reps)["median_us"]
    return median, (f"graph {bench_graph(step)['median_us']:.1f} us" if device == "cuda" else "")


def decode_rows(args, device, fla) -> list[Row]:
    rows = []
    configs = {"tiny": (1, 2)} if args.dry_run else {k: HEADS[k] for k in args.configs}
    batches = [1, 2] if args.dry_run else args.batches
    for config, (hk, hv) in configs.items():
        for n in batches:
            qkv, z, a, b, w, st = _decode_inputs(n, hk, hv, device)
            slots = torch.arange(n, device=device, dtype=torch.int32)

            def step():
                return q35.ops.gdn_decode(qkv, z, a, b, **w, **st, slots=slots, backend="kernel")
            nbytes = 2 * count_bytes(st["ssm_state"]) + 2 * count_bytes(st["conv_state"]) + count_bytes(qkv, z, a, b, z)
            if _sm90(device):  # beside the default: the conv kernel first; and the norm by the row's last CTA too
                for impl, env, value in (("q35 conv kernel first", "QWEN35_GDN_DECODE_FUSED", "0"),
                                         ("q35 last-CTA norm", "QWEN35_GDN_DECODE_CLUSTER", "0")):
                    median, graph_note = _time_decode(with_env(step, env, value), device, args)
                    rows.append(Row(op="gdn_decode", shape=f"{config} batch {n}", dtype="bf16", impl=impl,
                                    median_us=median, bytes=nbytes, notes=graph_note))
            median, graph_note = _time_decode(step, device, args)
            peer_us, notes = None, graph_note
            if fla is not None:  # FLA's recurrent step alone (no conv, no norm) on the same state layout
                q = qkv[:, :hk * D].reshape(1, n, hk, D)
                k = qkv[:, hk * D:2 * hk * D].reshape(1, n, hk, D)
                v = qkv[:, 2 * hk * D:].reshape(1, n, hv, D)
                g, beta = _gates(n, hv, device)
                cu = torch.arange(n + 1, device=device)
                peer_us = bench(lambda: fla[1](q, k, v, g, beta, initial_state=st["ssm_state"],
                                               output_final_state=True, cu_seqlens=cu, use_qk_l2norm_in_kernel=True),
                                device=device, warmup=args.warmup, reps=args.reps)["median_us"]
                notes += " (fla: recurrent step only)"
            rows.append(Row(op="gdn_decode", shape=f"{config} batch {n}", dtype="bf16", impl="q35",
                            median_us=median, bytes=nbytes, peer="fla" if fla else "", peer_us=peer_us,
                            notes=notes.strip()))
    return rows


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        args.warmup, args.reps = 0, 1
    torch.manual_seed(0)
    fla = None if args.dry_run or args.no_fla else _fla()
    rows = prefill_rows(args, device, fla) if "prefill" in args.parts else []
    return rows + (decode_rows(args, device, fla) if "decode" in args.parts else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--seqsets", nargs="+", default=list(SEQSETS), choices=list(SEQSETS))
    parser.add_argument("--batches", type=int, nargs="+", default=DECODE_BATCHES)
    parser.add_argument("--parts", nargs="+", default=["prefill", "decode"], choices=["prefill", "decode"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-fla", action="store_true",
                        help="skip flash-linear-attention (its first calls compile and autotune for over a minute)")
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("gdn", args)
    emit("gdn", run(args), args)


if __name__ == "__main__":
    main()

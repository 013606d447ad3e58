"""Gated GQA attention benchmark (PERF_TARGETS.md attention rows), our kernels next to their peers on the same inputs:
- prefill, d=256, causal, 32q/2kv (397b-tp1) and 4q/1kv (397b-tp8), 1x8192 and 1x32768: TFLOP/s counting the causal
  FLOPs (4 * Hq * D * L(L+1)/2) of both our kernels side by side (mma.sync; sm_90a wgmma on H100/H200); peers:
  torch scaled_dot_product_attention (flash backend), flash_attn if importable;
- decode, one query token per sequence, batch 1/8/64 x context 4k/32k/128k, 32q/2kv: GB/s of K/V read (the floor of
  its memory traffic) against the HBM ceiling; peers: SDPA on a contiguous cache (the GQA group as query rows),
  flash_attn_with_kvcache if importable;
- attention_prep (q/k norm, M-RoPE, KV write) for a prefill and a decode batch: GB/s of its reads and writes.
Usage: PYTHONPATH=python python bench/attention.py [--dry-run] [--json F]"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import qwen35_native as q35
from _report import Row, add_common_args, emit, emit_rows_made_on_term
from _timing import bench, count_bytes

D = 256
BLOCK = 64  # the KV-cache block size the kernels want (ops/attention.py)


def _peer_flash_attn():
    try:
        import flash_attn

        return flash_attn
    except ImportError:
        return None


def _sdpa_flash(q, k, v, causal):
    """SDPA restricted to the flash backend on CUDA (a silent fallback to the math path would time something else)."""
    if q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _sm90a_runs(device: str) -> bool:
    """Whether paged_prefill_attention(impl="sm90a") runs here: an sm_90 GPU, or the emulator at arch sm_90."""
    if device == "cuda":
        return torch.cuda.get_device_capability() == (9, 0)
    return q35.emulator.get_arch() == "sm_90"


def _paged_cache(lens, Hkv, device, dtype=torch.bfloat16):
    """Blocks of each sequence consecutive (block tables in order): K/V [num_blocks, 64, Hkv, D] random."""
    blocks = [-(-n // BLOCK) for n in lens]
    k = torch.randn(sum(blocks), BLOCK, Hkv, D, device=device, dtype=dtype)
    v = torch.randn_like(k)
    tables = torch.zeros(len(lens), max(blocks), dtype=torch.int32)
    start = 0
    for i, nb in enumerate(blocks):
        tables[i, :nb] = torch.arange(start, start + nb)
        start += nb
    return k, v, tables.to(device), torch.tensor(lens, dtype=torch.int32, device=device)


def prefill_rows(L, Hq, Hkv, device, reps):
    k_cache, v_cache, tables, seq_lens = _paged_cache([L], Hkv, device)
    q = torch.randn(L, Hq, D, device=device, dtype=torch.bfloat16)
    gate = torch.randn(L, Hq * D, device=device, dtype=torch.bfloat16)
    cu = torch.tensor([0, L], dtype=torch.int32, device=device)
    flops = 4.0 * Hq * D * L * (L + 1) / 2
    shape, rows = f"1x{L} {Hq}q/{Hkv}kv", []

    def ours(impl):
        return bench(lambda: q35.ops.paged_prefill_attention(q, k_cache, v_cache, cu, seq_lens, tables, gate,
                                                             backend="kernel", impl=impl), device=device, reps=reps)

    # peer inputs: [1, H, L, D], K/V expanded to the q heads (the flash backend's layout)
    qs = q.transpose(0, 1)[None]
    ks = k_cache.reshape(-1, Hkv, D)[:L].transpose(0, 1).repeat_interleave(Hq // Hkv, 0)[None].contiguous()
    vs = v_cache.reshape(-1, Hkv, D)[:L].transpose(0, 1).repeat_interleave(Hq // Hkv, 0)[None].contiguous()
    peer = bench(lambda: _sdpa_flash(qs, ks, vs, True), device=device, reps=reps)
    hopper = [("sm90a", "q35 sm_90a wgmma"), ("sm90a-pingpong", "q35 sm_90a ping-pong"),
              ("sm90a-vmn", "q35 sm_90a V MN-major"), ("sm90a-pingpong-vmn", "q35 sm_90a ping-pong + V MN-major")]
    paths = [("sm80", "q35 mma.sync")] + (hopper if _sm90a_runs(device) else [])
    for impl, label in paths:  # the kernels side by side (the sm_90a ones where the device runs them)
        rows.append(Row(op="paged_prefill_attention", shape=shape, dtype="bf16", impl=label, flops=flops,
                        median_us=ours(impl)["median_us"], peer="sdpa", peer_us=peer["median_us"],
                        notes=f"causal, gated, path {impl}"))
    rows.append(Row(op="paged_prefill_attention", shape=shape, dtype="bf16", impl="torch sdpa (flash)", flops=flops,
                    median_us=peer["median_us"], notes="causal, ungated, K/V pre-expanded"))
    fa = _peer_flash_attn() if device == "cuda" else None
    if fa is not None:
        k_flat, v_flat = k_cache.reshape(-1, Hkv, D)[:L], v_cache.reshape(-1, Hkv, D)[:L]
        t = bench(lambda: fa.flash_attn_varlen_func(q, k_flat, v_flat, cu, cu, L, L, causal=True), device=device,
                  reps=reps)
        rows.append(Row(op="paged_prefill_attention", shape=shape, dtype="bf16", impl=f"flash_attn {fa.__version__}",
                        flops=flops, median_us=t["median_us"], notes="causal, ungated, contiguous K/V"))
    return rows


def decode_rows(batch, ctx, Hq, Hkv, device, reps):
    k_cache, v_cache, tables, seq_lens = _paged_cache([ctx] * batch, Hkv, device)
    q = torch.randn(batch, Hq, D, device=device, dtype=torch.bfloat16)
    gate = torch.randn(batch, Hq * D, device=device, dtype=torch.bfloat16)
    kv_bytes = 2 * batch * ctx * Hkv * D * 2 + count_bytes(q, gate, q)
    shape, rows = f"B{batch} ctx{ctx} {Hq}q/{Hkv}kv", []
    ours = bench(lambda: q35.ops.paged_decode_attention(q, k_cache, v_cache, seq_lens, tables, gate,
                                                        backend="kernel"), device=device, reps=reps)
    # SDPA peer on a contiguous [B, Hkv, S, D] cache; the G q heads of a kv head are the query rows (no expansion)
    G = Hq // Hkv
    kc = k_cache.reshape(batch, -1, Hkv, D)[:, :ctx].transpose(1, 2).contiguous()
    vc = v_cache.reshape(batch, -1, Hkv, D)[:, :ctx].transpose(1, 2).contiguous()
    qg = q.reshape(batch, Hkv, G, D)
    peer = bench(lambda: _sdpa_flash(qg, kc, vc, False), device=device, reps=reps)
    rows.append(Row(op="paged_decode_attention", shape=shape, dtype="bf16", impl="q35 split-KV", bytes=kv_bytes,
                    median_us=ours["median_us"], peer="sdpa", peer_us=peer["median_us"], notes="gated"))
    rows.append(Row(op="paged_decode_attention", shape=shape, dtype="bf16", impl="torch sdpa (flash)",
                    bytes=kv_bytes, median_us=peer["median_us"], notes="contiguous cache, ungated"))
    fa = _peer_flash_attn() if device == "cuda" else None
    if fa is not None:
        kb, vb = k_cache.reshape(batch, -1, Hkv, D), v_cache.reshape(batch, -1, Hkv, D)
        t = bench(lambda: fa.flash_attn_with_kvcache(q[:, None], kb, vb, cache_seqlens=seq_lens), device=device,
                  reps=reps)
        rows.append(Row(op="paged_decode_attention", shape=shape, dtype="bf16", impl=f"flash_attn {fa.__version__}",
                        bytes=kv_bytes, median_us=t["median_us"], notes="contiguous cache, ungated"))
    return rows


def prep_rows(T, Hq, Hkv, device, reps):
    qkv = torch.randn(T, (2 * Hq + 2 * Hkv) * D, device=device, dtype=torch.bfloat16)
    w = torch.randn(D, device=device, dtype=torch.bfloat16) * 0.1
    k_cache, v_cache, tables, _ = _paged_cache([T], Hkv, device)
    positions = torch.arange(T, device=device)[None].expand(3, T)
    slots = torch.arange(T, device=device)
    args = (qkv, w, w, positions, k_cache, v_cache, slots, 64, [11, 11, 10], 1e7)
    ours = bench(lambda: q35.ops.attention_prep(*args, backend="kernel"), device=device, reps=reps)
    peer = bench(lambda: q35.ops.attention_prep(*args, backend="reference"), device=device, reps=reps)
    nbytes = count_bytes(qkv) + count_bytes(qkv[:, :2 * Hq * D]) + 2 * T * Hkv * D * 2  # + q, gate, k, v written
    return [Row(op="attention_prep", shape=f"T{T} {Hq}q/{Hkv}kv", dtype="bf16", impl="q35", bytes=nbytes,
                median_us=ours["median_us"], peer="torch eager", peer_us=peer["median_us"])]


def run(args: argparse.Namespace) -> list[Row]:
    device = "cpu" if args.dry_run else "cuda"
    rows = []
    if args.dry_run:  # tiny shapes on the emulator: checks the code paths, not speed
        rows += prefill_rows(80, 4, 1, device, reps=2)
        rows += decode_rows(2, 200, 8, 1, device, reps=2)
        rows += prep_rows(3, 4, 1, device, reps=2)
        return rows
    for L in args.prefill:
        for Hq, Hkv in ((32, 2), (4, 1)):
            rows += prefill_rows(L, Hq, Hkv, device, reps=20 if L <= 8192 else 5)
    for ctx in args.context:
        for batch in args.batch:
            rows += decode_rows(batch, ctx, 32, 2, device, reps=20 if batch * ctx <= 1 << 20 else 5)
            torch.cuda.empty_cache()
    rows += prep_rows(8192, 32, 2, device, reps=20) + prep_rows(64, 32, 2, device, reps=20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefill", type=int, nargs="+", default=[8192, 32768], help="prefill lengths (1 sequence)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="decode batch sizes")
    parser.add_argument("--context", type=int, nargs="+", default=[4096, 32768, 131072], help="decode contexts")
    add_common_args(parser)
    args = parser.parse_args()
    emit_rows_made_on_term("attention", args)
    emit("attention", run(args), args)


if __name__ == "__main__":
    main()

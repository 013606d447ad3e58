"""The MoE kernels one by one (csrc/kernels/moe/, design in its README.md): what the kernel path of
``ops.moe_route`` / ``ops.fused_moe`` / ``ops.moe_block`` runs, the stage ops with caller-provided outputs (tests
poison and guard them; callers may reuse buffers) and the ``register_fake`` meta functions of every MoE op.

Stages of ``torch.ops.qwen35_native.fused_moe`` for P = N * k (token, expert) pairs and E local experts:
    moe_align(topk_ids, expert_offset, E, block_m, sorted_pairs [T * block_m] int32, tile_experts [T] int32)
        pairs grouped by local expert (ascending pair index inside an expert), each group padded to block_m rows
        (-1), tile_experts[t] = expert of tile t or -1 for the unused tiles at the end; T = moe_max_tiles(P, E,
        block_m) is the worst case, so nothing is read back to the host.
    moe_gate_up(hidden, w13, sorted_pairs, tile_experts, k, block_m, act [T * block_m, I], sorted_rows=None)
        act[row] = silu(x @ w13[e, :I].T) * (x @ w13[e, I:].T), x = hidden[pair // k]; padding rows not written.
        ``sorted_rows`` (block_m 128 only): hidden's rows already in tile order (``moe_permute``), which the sm_90a
        kernel then loads with TMA boxes instead of gathering them from hidden with cp.async; same results.
    moe_permute(hidden, sorted_pairs, tile_experts, k, E, block_m, sorted_rows [T * block_m, H])
        sorted_rows[row] = hidden[pair // k] for the rows of used tiles that hold a pair (others not written).
        ``fused_moe`` runs it before gate_up where the environment variable QWEN35_MOE_SORTED_ROWS=1 and the
        sm_90a kernels run (not by default: not yet timed on a GPU).
    moe_down(act, w2, topk_weights, sorted_pairs, tile_experts, block_m, expert_out [P, H])
        expert_out[pair] = topk_weights[pair] * (act[row] @ w2[e].T); rows of non-local pairs not written.
    moe_combine(expert_out, topk_ids, expert_offset, E, hidden, shared_out, shared_gate_w, out [N, H])
        out[n] = sum of the local pairs' rows (fp32) + sigmoid(hidden[n] . shared_gate_w) * shared_out[n].
block_m: 16 (decode tiles), 64 (prefill tiles, mma.sync) or 128 (prefill tiles of the sm_90a kernels: TMA + wgmma,
persistent; an sm_90 GPU, or the emulator at arch sm_90, see ``sm90a_path``) or 256 (the same kernels in 2-CTA
clusters, one CTA per 128 rows, each weight tile TMA-multicast to both: ``QWEN35_MOE_CLUSTER=1`` makes ``fused_moe``
take them; not yet run on a GPU); 64 to 256 for 16-bit dtypes only. The
choice of block_m is the choice of kernels: ``fused_moe`` picks 128 for prefill where the sm_90a kernels run, else 64
(``pick_block_m`` mirrors it); the stage ops run whatever block_m their caller aligned with. ``fused_moe`` alone also
takes block_m 1 (16-bit; its choice up to 64 pairs): no align and no tiles, each (token, expert) pair on its own grid
row of the skinny linear kernel (csrc/kernels/linear/), then ``moe_combine``.
"""

from __future__ import annotations

import torch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_ROUTE_EXPERTS = 1024   # csrc/kernels/moe/moe_route.cuh
MAX_TOP_K = 32
MAX_LOCAL_EXPERTS = 1024   # csrc/kernels/moe/moe_align.cuh
DECODE_BLOCK_M, PREFILL_BLOCK_M, SM90A_BLOCK_M = 16, 64, 128
SKINNY_BLOCK_M = 1         # fused_moe only: no tiles, each pair on a grid row of the skinny linear kernel
SKINNY_MAX_PAIRS = 64      # ... up to this many (token, expert) pairs (csrc/kernels/moe/moe_gemm.cuh)
SM90A_PAIR_BLOCK_M = 256   # the sm_90a kernels in 2-CTA clusters sharing each weight tile
PREFILL_MIN_ROWS_PER_EXPERT = 16   # the 64-row tiles from here (csrc/kernels/moe/moe_gemm.cuh)
SM90A_MIN_ROWS_PER_EXPERT = 8      # the 128-row sm_90a tiles from here


def moe_max_tiles(num_pairs: int, num_local_experts: int, block_m: int) -> int:
    """Worst-case tile count: sum_e ceil(rows_e / block_m) over at most min(E, P) non-empty experts."""
    if num_pairs <= 0 or num_local_experts <= 0:
        return 0
    return (num_pairs + min(num_pairs, num_local_experts) * (block_m - 1)) // block_m


def sm90a_path(device: torch.device | str) -> bool:
    """Whether block_m = 128 (the sm_90a kernels) runs on ``device``: an sm_90 GPU, or the CPU emulator at its
    (default) arch sm_90 (``qwen35_native.emulator.arch``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) == (9, 0)
    from .. import emulator

    return device.type == "cpu" and emulator.available() and emulator.get_arch() == "sm_90"


def pick_block_m(num_pairs: int, num_local_experts: int, dtype: torch.dtype, sm90a: bool = False,
                 skinny: bool = True) -> int:
    """The rows per tile ``fused_moe`` picks (csrc moe_pick_block_m); ``sm90a``: ``sm90a_path(device)`` (and
    H, I > 0); ``skinny``: the skinny kernel takes the operands (H, I multiples of 8, 16-byte aligned hidden rows)."""
    if dtype == torch.float32:
        return DECODE_BLOCK_M
    if skinny and num_pairs <= SKINNY_MAX_PAIRS:
        return SKINNY_BLOCK_M
    rows, block_m = (SM90A_MIN_ROWS_PER_EXPERT, SM90A_BLOCK_M) if sm90a else (PREFILL_MIN_ROWS_PER_EXPERT,
                                                                             PREFILL_BLOCK_M)
    return block_m if num_pairs >= rows * num_local_experts else DECODE_BLOCK_M


def expert_parallel_block_m(num_pairs: int, num_local_experts: int, num_experts: int) -> int | None:
    """The decode tiles where experts are split over ranks and average fewer than SM90A_MIN_ROWS_PER_EXPERT rows
    (num_pairs counts the pairs of every rank's experts, num_experts the global count), else None (the op's own
    choice). The op can only divide num_pairs by its local experts, which overstates a rank's rows by the number of
    ranks: without this, 397b on 8 expert-parallel ranks would take the prefill tiles for 1 row per expert."""
    if num_experts > num_local_experts and SKINNY_MAX_PAIRS < num_pairs < SM90A_MIN_ROWS_PER_EXPERT * num_experts:
        return DECODE_BLOCK_M   # (up to SKINNY_MAX_PAIRS pairs the op's own choice is the skinny kernel, or 16)
    return None


def _aligned_start(t: torch.Tensor) -> bool:
    # storages start 16-byte aligned (caching allocator, CPU allocator); the offset decides. No data_ptr(): the
    # wrappers stay traceable by torch.compile (fake tensors have no data)
    return t.storage_offset() * t.element_size() % 16 == 0


def _aligned_rows(t: torch.Tensor) -> bool:
    vec = 16 // t.element_size()
    stride = t.stride(0) if t.dim() == 2 and t.shape[0] > 1 else t.shape[-1]
    return (t.shape[-1] <= 1 or t.stride(-1) == 1) and stride % vec == 0 and _aligned_start(t)


def moe_route_support(logits: torch.Tensor, top_k: int) -> tuple[bool, str]:
    """Whether the routing kernel handles these logits (E <= 1024, top_k <= 32, last dim contiguous)."""
    if logits.shape[1] > MAX_ROUTE_EXPERTS or top_k > MAX_TOP_K:
        return False, f"the routing kernel supports E <= {MAX_ROUTE_EXPERTS} and top_k <= {MAX_TOP_K}"
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        return False, "the routing kernel needs logits contiguous in their last dimension"
    return True, ""


def fused_moe_support(hidden: torch.Tensor, w13: torch.Tensor, top_k: int) -> tuple[bool, str]:
    """Whether the expert kernels handle these shapes (16-byte aligned rows and sizes, E <= 1024, k <= 32)."""
    vec = 16 // hidden.element_size()
    H, inter = hidden.shape[1], w13.shape[1] // 2
    if H % vec or inter % vec:
        return False, f"the expert kernels need H and I multiples of {vec} (16 bytes), got H={H} I={inter}"
    if not _aligned_rows(hidden):
        return False, "the expert kernels need hidden rows contiguous and 16-byte aligned"
    if w13.shape[0] > MAX_LOCAL_EXPERTS or top_k > MAX_TOP_K:
        return False, f"the expert kernels support <= {MAX_LOCAL_EXPERTS} local experts and top_k <= {MAX_TOP_K}"
    return True, ""


def _aligned_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t itself when contiguous and 16-byte aligned, else an aligned contiguous copy (fresh allocations are)."""
    return t if t.is_contiguous() and _aligned_start(t) else t.clone(memory_format=torch.contiguous_format)


def moe_route_kernel(logits: torch.Tensor, top_k: int):
    weights = torch.empty(logits.shape[0], top_k, dtype=torch.float32, device=logits.device)
    ids = torch.empty(logits.shape[0], top_k, dtype=torch.int32, device=logits.device)
    torch.ops.qwen35_native.moe_route(logits, top_k, weights, ids)
    return weights, ids


def fused_moe_kernel(hidden, w13, w2, topk_weights, topk_ids, expert_offset=0, shared_out=None, shared_gate_w=None,
                     block_m=None):
    w13, w2 = _aligned_contiguous(w13), _aligned_contiguous(w2)
    if shared_gate_w is not None:
        shared_gate_w = _aligned_contiguous(shared_gate_w)
    return torch.ops.qwen35_native.fused_moe(hidden, w13, w2, topk_weights.contiguous(), topk_ids.contiguous(),
                                             expert_offset, shared_out, shared_gate_w, block_m)


def moe_align(topk_ids: torch.Tensor, expert_offset: int, num_local_experts: int, block_m: int):
    """Returns ``(sorted_pairs, tile_experts)`` (see the module docstring)."""
    tiles = moe_max_tiles(topk_ids.numel(), num_local_experts, block_m)
    sorted_pairs = torch.empty(tiles * block_m, dtype=torch.int32, device=topk_ids.device)
    tile_experts = torch.empty(tiles, dtype=torch.int32, device=topk_ids.device)
    torch.ops.qwen35_native.moe_align(topk_ids, expert_offset, num_local_experts, block_m, sorted_pairs,
                                      tile_experts)
    return sorted_pairs, tile_experts


@torch.library.register_fake("qwen35_native::moe_route")
def _moe_route_fake(logits, top_k, topk_weights, topk_ids):
    return None


@torch.library.register_fake("qwen35_native::fused_moe")
def _fused_moe_fake(hidden, w13, w2, topk_weights, topk_ids, expert_offset, shared_out, shared_gate_w, block_m=None):
    return torch.empty_like(hidden, memory_format=torch.contiguous_format)


@torch.library.register_fake("qwen35_native::moe_align")
def _moe_align_fake(topk_ids, expert_offset, num_local_experts, block_m, sorted_pairs, tile_experts):
    return None


@torch.library.register_fake("qwen35_native::moe_permute")
def _moe_permute_fake(hidden, sorted_pairs, tile_experts, top_k, num_local_experts, block_m, sorted_rows):
    return None


@torch.library.register_fake("qwen35_native::moe_gate_up")
def _moe_gate_up_fake(hidden, w13, sorted_pairs, tile_experts, top_k, block_m, act, sorted_rows=None):
    return None


@torch.library.register_fake("qwen35_native::moe_down")
def _moe_down_fake(act, w2, topk_weights, sorted_pairs, tile_experts, block_m, expert_out):
    return None


@torch.library.register_fake("qwen35_native::moe_combine")
def _moe_combine_fake(expert_out, topk_ids, expert_offset, num_local_experts, hidden, shared_out, shared_gate_w,
                      out):
    return None

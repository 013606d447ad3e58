"""moe_align: grouping the (token, expert) pairs by local expert on the device (stable order, padding to the GEMM
tile, tile experts, worst-case buffers) vs a stable-sort reference; expert-parallel subsets, empty experts, all
pairs on one expert, int64 ids, guard regions. Kernel: csrc/kernels/moe/moe_align.cu."""

import pytest
import torch
from moe_helpers import DEVICES, gen, reference_align, skip_without_cuda

from qwen35_native.ops.moe_stages import moe_align, moe_max_tiles
from utils import GuardedTensor, assert_bit_identical

# (N, k, E_total, expert_offset, E_local, block_m)
CASES = [(1, 10, 512, 0, 512, 16), (3, 2, 8, 0, 8, 16), (64, 10, 64, 0, 64, 16), (257, 1, 8, 0, 8, 64),
         (257, 10, 512, 0, 512, 16), (257, 2, 64, 16, 24, 64), (64, 10, 512, 448, 64, 16), (5, 3, 16, 8, 8, 64),
         (257, 4, 8, 0, 8, 128), (300, 2, 64, 16, 24, 128),   # block_m 128: the sm_90a tiles
         (600, 3, 8, 0, 8, 256), (130, 2, 64, 16, 24, 256)]   # block_m 256: their 2-CTA clusters


def _ids(N, k, E, seed, device):
    # distinct experts per token, like top-k
    return torch.rand(N, E, generator=gen(seed)).argsort(-1)[:, :k].to(device=device, dtype=torch.int32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "k", "E", "offset", "E_local", "bm"), CASES,
                         ids=[f"N{c[0]}-k{c[1]}-E{c[2]}-off{c[3]}-loc{c[4]}-bm{c[5]}" for c in CASES])
def test_moe_align(N, k, E, offset, E_local, bm, device):
    skip_without_cuda(device)
    ids = _ids(N, k, E, seed=N + k + E, device=device)
    sorted_pairs, tile_experts = moe_align(ids, offset, E_local, bm)
    ref_pairs, ref_tiles = reference_align(ids, offset, E_local, bm)
    assert torch.equal(tile_experts.cpu(), ref_tiles)
    assert torch.equal(sorted_pairs.cpu(), ref_pairs)


@pytest.mark.parametrize("device", DEVICES)
def test_moe_align_all_pairs_on_one_expert_int64(device):
    skip_without_cuda(device)
    ids = torch.full((300, 2), 5, dtype=torch.int64, device=device)
    ids[:, 1] = 9   # expert 9 is outside the local range [4, 8)
    sorted_pairs, tile_experts = moe_align(ids, 4, 4, 64)
    ref_pairs, ref_tiles = reference_align(ids, 4, 4, 64)
    assert torch.equal(tile_experts.cpu(), ref_tiles) and torch.equal(sorted_pairs.cpu(), ref_pairs)
    assert (tile_experts[:5] == 1).all() and (tile_experts[5:] == -1).all()   # 300 rows of local expert 1
    assert torch.equal(sorted_pairs[:300].cpu(), torch.arange(0, 600, 2, dtype=torch.int32))


@pytest.mark.parametrize("device", DEVICES)
def test_moe_align_no_local_pairs_and_no_experts(device):
    skip_without_cuda(device)
    ids = torch.arange(12, dtype=torch.int32, device=device).reshape(6, 2)
    sorted_pairs, tile_experts = moe_align(ids, 100, 8, 16)   # every pair routed to another rank
    assert (tile_experts == -1).all() and (sorted_pairs == -1).all()
    sorted_pairs, tile_experts = moe_align(ids, 0, 0, 16)     # a rank without experts: empty buffers
    assert sorted_pairs.numel() == 0 and tile_experts.numel() == 0
    sorted_pairs, tile_experts = moe_align(ids[:0], 0, 8, 16)
    assert sorted_pairs.numel() == 0 and tile_experts.numel() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_moe_align_guarded_outputs_every_entry_written(device, two_orders):
    skip_without_cuda(device)
    ids = _ids(257, 10, 64, seed=3, device=device)
    tiles = moe_max_tiles(ids.numel(), 40, 16)

    def run():
        pairs = GuardedTensor((tiles * 16,), torch.int32, device=device)
        experts = GuardedTensor((tiles,), torch.int32, device=device)
        torch.ops.qwen35_native.moe_align(ids, 20, 40, 16, pairs.tensor, experts.tensor)
        pairs.check("moe_align sorted_pairs")
        experts.check("moe_align tile_experts")
        return pairs.tensor.clone(), experts.tensor.clone()

    sorted_pairs, tile_experts = two_orders(run) if device == "cpu" else run()
    ref_pairs, ref_tiles = reference_align(ids, 20, 40, 16)
    assert_bit_identical((sorted_pairs.cpu(), tile_experts.cpu()), (ref_pairs, ref_tiles))


def test_moe_align_rejects_bad_inputs():
    ids = torch.zeros(4, 2, dtype=torch.int32)
    pairs, tiles = torch.empty(8 * 16, dtype=torch.int32), torch.empty(8, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="moe_align: block_m must be 16, 64, 128 or 256 for BFloat16, got 32"):
        torch.ops.qwen35_native.moe_align(ids, 0, 8, 32, pairs, tiles)
    with pytest.raises(RuntimeError, match=r"moe_align: the number of local experts must be in \[0, 1024\], got 2000"):
        torch.ops.qwen35_native.moe_align(ids, 0, 2000, 16, pairs, tiles)
    with pytest.raises(RuntimeError, match=r"moe_align: sorted_pairs must have shape \[max_tiles \* block_m\]=\[128\], "
                                           r"got \[127\]"):
        torch.ops.qwen35_native.moe_align(ids, 0, 8, 16, pairs[:127], tiles)
    with pytest.raises(RuntimeError, match="moe_align: topk_ids must have dtype Int or Long, got Float"):
        torch.ops.qwen35_native.moe_align(ids.float(), 0, 8, 16, pairs, tiles)

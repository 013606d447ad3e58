"""fused_moe's block_m 1: up to 64 (token, expert) pairs without align or tiles, each pair on its own grid row of
the skinny linear kernel (csrc/kernels/linear/skinny_linear.cu, kPairs) with the grouped GEMMs' epilogues, then
moe_combine. Against the float64 mirror of the kernels' roundings and the fp32 reference, two thread orders,
expert-parallel subsets, the automatic choice, errors; -m gpu twins at the model's decode shapes."""

import pytest
import torch
from moe_helpers import (
    DEVICES,
    REL_TOL_16BIT,
    assert_matches_mirror,
    make_moe_inputs,
    mirror_fused_moe,
    rel_err,
    skip_without_cuda,
)

from qwen35_native import emulator, ops
from qwen35_native.ops.moe_stages import SKINNY_MAX_PAIRS, fused_moe_kernel, moe_align, pick_block_m
from utils import run_under_schedules


def _check(out, x, w13, w2, weights, ids, offset=0):
    ref = mirror_fused_moe(x, w13, w2, weights, ids, offset, round_like_kernels=False)
    assert rel_err(out, ref) <= REL_TOL_16BIT
    assert_matches_mirror(out, mirror_fused_moe(x, w13, w2, weights, ids, offset))


def _launches(fn, *args, **kwargs):
    emulator.reset_stats()
    out = fn(*args, **kwargs)
    return out, emulator.stats()["launches"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "E", "k", "H", "I"), [(1, 64, 8, 256, 64), (3, 16, 4, 96, 40), (8, 32, 8, 128, 48),
                                                     (6, 512, 10, 64, 16), (1, 8, 2, 1024, 8), (2, 8, 2, 1024, 40),
                                                     (1, 4, 2, 64, 520)],
                         ids=lambda v: str(v))
def test_skinny_pairs_match_the_mirror(N, E, k, H, I, device):
    """A decode step's pairs, fp16 and bf16, int32 and int64 ids; bit-identical under two thread orders on the CPU.
    Every grid of the kernel (the emulator's glue says 2 SMs): K of at most 512 (8 lanes per group), K = 1024 with
    few outputs x pairs (a block's 4 warps split K) and with many (a warp per group), the down product's K = 520."""
    skip_without_cuda(device)
    dtype = torch.float16 if N % 2 else torch.bfloat16
    x, w13, w2, weights, ids = make_moe_inputs(N, E, k, H, I, dtype, seed=N * E, device=device)
    ids = ids.long() if N % 3 == 0 else ids
    run = lambda: fused_moe_kernel(x, w13, w2, weights, ids, block_m=1)   # noqa: E731
    out = run_under_schedules(run) if device == "cpu" else run()
    _check(out, x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
def test_skinny_pairs_with_the_shared_expert_and_expert_parallel_ranks(device):
    """Pairs of other ranks' experts are skipped (their rows are never written or read); the ranks' parts add up
    to the whole; the gated shared expert joins in moe_combine as on the tiled paths."""
    skip_without_cuda(device)
    x, w13, w2, weights, ids = make_moe_inputs(5, 32, 8, 96, 40, torch.bfloat16, seed=3, device=device)
    parts = []
    for a, b in ((0, 8), (8, 30), (30, 32)):
        part, launched = _launches(ops.fused_moe, x, w13[a:b], w2[a:b], weights, ids, expert_offset=a,
                                   num_experts=32, backend="kernel")
        if device == "cpu":
            assert launched == 3, "gate_up, down and combine: no align"
        _check(part, x, w13[a:b], w2[a:b], weights, ids, offset=a)
        parts.append(part.float())
    full = ops.fused_moe_reference(x.float(), w13.float(), w2.float(), weights, ids)
    assert rel_err(sum(parts), full) <= REL_TOL_16BIT
    shared_out = torch.randn_like(x)
    gate_w = torch.randn(1, 96, device=device).to(torch.bfloat16) * 0.1
    tiled = fused_moe_kernel(x, w13, w2, weights, ids, shared_out=shared_out, shared_gate_w=gate_w, block_m=16)
    skinny = fused_moe_kernel(x, w13, w2, weights, ids, shared_out=shared_out, shared_gate_w=gate_w, block_m=1)
    assert rel_err(skinny, tiled.float()) <= REL_TOL_16BIT


def test_the_automatic_choice_takes_it_up_to_64_pairs():
    """Up to SKINNY_MAX_PAIRS pairs of a 16-bit step with H, I multiples of 8: block_m 1 (three launches, the same
    as explicit block_m=1); one pair more: align and the tiles. fp32 keeps the tiles."""
    E, k = 16, 8
    for tokens, want in ((SKINNY_MAX_PAIRS // k, 1), (SKINNY_MAX_PAIRS // k + 1, 16)):
        x, w13, w2, weights, ids = make_moe_inputs(tokens, E, k, 96, 40, torch.bfloat16, seed=tokens)
        assert pick_block_m(ids.numel(), E, x.dtype) == want
        out, auto = _launches(fused_moe_kernel, x, w13, w2, weights, ids)
        assert auto == _launches(fused_moe_kernel, x, w13, w2, weights, ids, block_m=want)[1] == (3 if want == 1
                                                                                                  else 4)
        _check(out, x, w13, w2, weights, ids)
    x, w13, w2, weights, ids = make_moe_inputs(2, E, k, 96, 40, torch.bfloat16, seed=1)
    xf, w13f, w2f = x.float(), w13.float(), w2.float()
    assert pick_block_m(ids.numel(), E, torch.float32) == 16
    assert _launches(fused_moe_kernel, xf, w13f, w2f, weights, ids)[1] == 4


def test_errors_name_block_m_1():
    x, w13, w2, weights, ids = make_moe_inputs(9, 16, 8, 96, 40, torch.bfloat16, seed=2)
    with pytest.raises(RuntimeError, match=r"block_m 1 \(the skinny kernel\) needs at most 64 \(token, expert\) "
                                           r"pairs.*got 72 pairs"):
        fused_moe_kernel(x, w13, w2, weights, ids, block_m=1)
    with pytest.raises(RuntimeError, match="fused_moe: block_m must be 16 for Float, got 1"):
        fused_moe_kernel(x.float(), w13.float(), w2.float(), weights, ids, block_m=1)
    with pytest.raises(RuntimeError, match="moe_align: block_m must be 16, 64, 128 or 256 for BFloat16, got 1"):
        moe_align(ids, 0, 16, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("tokens", [1, 6])
@pytest.mark.parametrize("shape", ["35b-a3b", "397b-tp8"])
def test_gpu_model_decode_shapes_match_the_tiles(shape, tokens):
    """The routed experts of one decode step at the model's sizes: block_m 1 against the decode tiles (block_m 16,
    the path before) and the fp32 reference."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    E, k, H, inter = (256, 8, 2048, 512) if shape == "35b-a3b" else (512, 10, 4096, 128)
    x, w13, w2, weights, ids = make_moe_inputs(tokens, E, k, H, inter, torch.bfloat16, seed=tokens, device="cuda")
    skinny = fused_moe_kernel(x, w13, w2, weights, ids, block_m=1)
    tiles = fused_moe_kernel(x, w13, w2, weights, ids, block_m=16)
    assert rel_err(skinny, tiles.float()) <= REL_TOL_16BIT
    ref = ops.fused_moe_reference(x.float(), w13.float(), w2.float(), weights, ids)
    assert rel_err(skinny, ref) <= REL_TOL_16BIT

"""Routed experts on the kernels: fused_moe (align -> gate_up -> down -> combine) and each GEMM / combine stage on
its own with poisoned, guarded outputs, vs the fp32 reference (MODEL_SPEC §5 tolerance) and a float64 mirror of
the kernels' roundings; every tile shape (block_m 16 / 64 / 128 = the sm_90a kernels / 256 = those in 2-CTA
clusters, more of those in test_moe_sm90a.py), fp32/fp16/bf16, expert-parallel subsets, empty experts, all tokens
on one expert, exact small-integer GEMMs, two thread orders. Kernels: csrc/kernels/moe/moe_{gate_up,down,combine}.cu,
*_sm90a.cu.
"""

import pytest
import torch
from moe_helpers import (
    DEVICES,
    REL_TOL_16BIT,
    assert_matches_mirror,
    gen,
    make_moe_inputs,
    mirror_act,
    mirror_fused_moe,
    rel_err,
    skip_unless_block_m_runs,
    skip_without_cuda,
)

from qwen35_native import emulator, ops
from qwen35_native.ops.moe_stages import (
    PREFILL_MIN_ROWS_PER_EXPERT,
    SM90A_MIN_ROWS_PER_EXPERT,
    fused_moe_kernel,
    moe_align,
    moe_route_kernel,
    pick_block_m,
)
from utils import GuardedTensor, assert_bit_identical, poisoned_empty

# (N, E, k, H, I, block_m or None = the kernels' choice)
# (up to 64 pairs the kernels' choice is the skinny kernel, block_m 1: more of it in test_moe_skinny.py)
CASES = [(1, 512, 10, 256, 128, None), (1, 512, 10, 256, 128, 16), (3, 8, 2, 96, 40, None), (3, 8, 2, 96, 40, 16),
         (64, 64, 10, 96, 40, None), (257, 8, 1, 96, 40, None), (64, 512, 10, 96, 40, None),
         (257, 8, 2, 256, 128, 64), (3, 64, 10, 96, 40, 64), (32, 8, 2, 96, 40, 1)]


def _check_fused(out, x, w13, w2, weights, ids, offset=0):
    ref = mirror_fused_moe(x, w13, w2, weights, ids, offset, round_like_kernels=False)
    tol = 1e-5 if x.dtype == torch.float32 else REL_TOL_16BIT
    assert rel_err(out, ref) <= tol
    assert_matches_mirror(out, mirror_fused_moe(x, w13, w2, weights, ids, offset))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "E", "k", "H", "I", "bm"), CASES,
                         ids=[f"N{c[0]}-E{c[1]}-k{c[2]}-H{c[3]}-I{c[4]}-bm{c[5]}" for c in CASES])
def test_fused_moe(N, E, k, H, I, bm, device):
    skip_without_cuda(device)
    x, w13, w2, weights, ids = make_moe_inputs(N, E, k, H, I, torch.bfloat16, seed=N + E + k, device=device)
    out = fused_moe_kernel(x, w13, w2, weights, ids, block_m=bm)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    _check_fused(out, x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "bm"), [(torch.float32, 16), (torch.float16, 16), (torch.float16, 64)],
                         ids=["fp32", "fp16-bm16", "fp16-bm64"])
def test_fused_moe_dtypes(dtype, bm, device):
    skip_without_cuda(device)
    x, w13, w2, weights, ids = make_moe_inputs(33, 16, 4, 96, 40, dtype, seed=11, device=device)
    _check_fused(fused_moe_kernel(x, w13, w2, weights, ids.long(), block_m=bm), x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_moe_strided_hidden(device):
    skip_without_cuda(device)
    _, w13, w2, weights, ids = make_moe_inputs(21, 16, 3, 96, 40, torch.bfloat16, seed=8, device=device)
    wide = torch.randn(21, 120, generator=gen(9)).to(device=device, dtype=torch.bfloat16)
    x = wide[:, 8:104]   # row stride 120, starts 16 bytes in
    _check_fused(ops.fused_moe(x, w13, w2, weights, ids, backend="kernel"), x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_moe_expert_parallel_subsets(device):
    skip_without_cuda(device)
    x, w13, w2, weights, ids = make_moe_inputs(64, 64, 10, 96, 40, torch.bfloat16, seed=5, device=device)
    parts = []
    for a, b in ((0, 16), (16, 40), (40, 64)):
        part = ops.fused_moe(x, w13[a:b], w2[a:b], weights, ids, expert_offset=a, num_experts=64, backend="kernel")
        _check_fused(part, x, w13[a:b], w2[a:b], weights, ids, offset=a)
        parts.append(part.float())
    full = ops.fused_moe_reference(x.float(), w13.float(), w2.float(), weights, ids)
    assert rel_err(sum(parts), full) <= REL_TOL_16BIT
    none = ops.fused_moe(x, w13[:0], w2[:0], weights, ids, expert_offset=64, num_experts=64, backend="kernel")
    assert torch.equal(none, torch.zeros_like(x))
    no_tokens = ops.fused_moe(x[:0], w13, w2, weights[:0], ids[:0], backend="kernel")
    assert no_tokens.shape == (0, 96) and no_tokens.device == x.device


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bm", [16, 64, 128, 256])
def test_fused_moe_all_tokens_on_one_expert(bm, device):
    skip_unless_block_m_runs(device, bm)
    x, w13, w2, _, _ = make_moe_inputs(150, 8, 1, 96, 40, torch.bfloat16, seed=6, device=device)
    ids = torch.full((150, 1), 6, dtype=torch.int32, device=device)   # 7 of 8 experts get no token
    weights = torch.ones(150, 1, device=device)
    _check_fused(fused_moe_kernel(x, w13, w2, weights, ids, block_m=bm), x, w13, w2, weights, ids)


@pytest.mark.parametrize(("arch", "rows", "block_m"), [("sm_90", SM90A_MIN_ROWS_PER_EXPERT, 128),
                                                      ("sm_80", PREFILL_MIN_ROWS_PER_EXPERT, 64)])
def test_fused_moe_takes_the_prefill_tiles_from_the_measured_rows_per_expert(arch, rows, block_m):
    """Without block_m, fused_moe switches from the decode tiles to the prefill tiles of the device where the
    experts average `rows` rows (moe_pick_block_m, measured on an H200), and pick_block_m says so too. The tilings
    give the same bits, so the emulator's launch counters (blocks, threads) name the kernels that ran. 16 experts:
    more than the skinny kernel's 64 pairs at both counts."""
    E, k = 16, 2

    def launched(**block_m):
        emulator.reset_stats()
        out = fused_moe_kernel(x, w13, w2, weights, ids, **block_m)
        return out, {key: emulator.stats()[key] for key in ("launches", "blocks", "threads")}

    with emulator.arch(arch):
        for pairs, want in ((rows * E - k, 16), (rows * E, block_m)):
            x, w13, w2, weights, ids = make_moe_inputs(pairs // k, E, k, 96, 40, torch.bfloat16, seed=pairs)
            assert pick_block_m(ids.numel(), E, x.dtype, sm90a=arch == "sm_90") == want
            out, ran = launched()
            other = launched(block_m=block_m if want == 16 else 16)[1]
            assert ran != other, "the counters must tell the tilings apart"
            assert ran == launched(block_m=want)[1], \
                f"{arch}, {pairs / E:.1f} rows per expert: fused_moe should take block_m {want}"
            _check_fused(out, x, w13, w2, weights, ids)


def test_expert_parallel_ranks_count_rows_over_the_global_experts():
    """With experts split over ranks, ops.fused_moe / ops.moe_block judge rows per expert by the global expert count:
    16 experts, this rank 4 of them, 96 pairs = 6 rows per expert, although 96 pairs over the 4 local experts would
    pass the sm_90a switch (8 rows); 128 pairs (8 rows per expert) take the op's own choice, the sm_90a tiles; up to
    64 pairs the op's own choice too, the skinny kernel (block_m 1)."""
    E, k, H, inter = 16, 2, 96, 40

    def counters(fn, *args, **kwargs):
        emulator.reset_stats()
        out = fn(*args, **kwargs)
        return out, {key: emulator.stats()[key] for key in ("launches", "blocks", "threads")}

    with emulator.arch("sm_90"):
        for pairs, want in ((96, 16), (128, 128), (64, 1)):
            x, w13, w2, weights, ids = make_moe_inputs(pairs // k, E, k, H, inter, torch.bfloat16, seed=pairs)
            w13, w2 = w13[4:8], w2[4:8]
            out, ran = counters(ops.fused_moe, x, w13, w2, weights, ids, expert_offset=4, num_experts=E,
                                backend="kernel")
            _, tiles = counters(fused_moe_kernel, x, w13, w2, weights, ids, 4, block_m=want)
            _, other = counters(fused_moe_kernel, x, w13, w2, weights, ids, 4, block_m=16 if want != 16 else 128)
            assert ran == tiles != other, f"{pairs} pairs over {E} experts: block_m {want} expected"
            _check_fused(out, x, w13, w2, weights, ids, offset=4)
            router = torch.randn(E, H, generator=gen(pairs)).to(torch.bfloat16)
            _, block = counters(ops.moe_block, x, router, w13, w2, None, None, None, k, expert_offset=4,
                                backend="kernel")
            def route_step(x=x, router=router):   # the router product as moe_block runs it: skinny up to 64 rows
                return moe_route_kernel(ops.linear(x, router, backend="kernel", fallback=True), k)
            _, route = counters(route_step)
            assert {key: block[key] - route[key] for key in block} == tiles, \
                f"moe_block ({pairs} pairs): block_m {want} expected"


def _stages(x, w13, w2, weights, ids, offset, bm, device, shared=None):
    """Runs the four stage ops on guarded, poisoned outputs; returns every buffer."""
    N, H = x.shape
    inter = w13.shape[1] // 2
    sorted_pairs, tile_experts = moe_align(ids, offset, w13.shape[0], bm)
    act = GuardedTensor((sorted_pairs.numel(), inter), x.dtype, device=device)
    torch.ops.qwen35_native.moe_gate_up(x, w13, sorted_pairs, tile_experts, ids.shape[1], bm, act.tensor)
    act.check("moe_gate_up")
    y = GuardedTensor((ids.numel(), H), x.dtype, device=device)
    torch.ops.qwen35_native.moe_down(act.tensor, w2, weights, sorted_pairs, tile_experts, bm, y.tensor)
    y.check("moe_down")
    out = GuardedTensor((N, H), x.dtype, device=device)
    hidden, shared_out, gate_w = (None, None, None) if shared is None else (x, *shared)
    torch.ops.qwen35_native.moe_combine(y.tensor, ids, offset, w13.shape[0], hidden, shared_out, gate_w, out.tensor)
    out.check("moe_combine")
    return dict(sorted_pairs=sorted_pairs, tile_experts=tile_experts, act=act.tensor.clone(), y=y.tensor.clone(),
                out=out.tensor.clone())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bm", [16, 64, 128, 256])
def test_stage_outputs_poisoned_guarded_two_orders(bm, device, two_orders):
    skip_unless_block_m_runs(device, bm)
    x, w13, w2, weights, ids = make_moe_inputs(40, 32, 4, 96, 40, torch.bfloat16, seed=21 + bm, device=device)
    offset = 8   # local experts 8..31 of 32
    w13, w2 = w13[offset:].contiguous(), w2[offset:].contiguous()
    gate_w = (torch.randn(96, generator=gen(3)) / 10).to(device=device, dtype=torch.bfloat16)
    shared_out = torch.randn(40, 96, generator=gen(4)).to(device=device, dtype=torch.bfloat16)
    run = lambda: _stages(x, w13, w2, weights, ids, offset, bm, device, (shared_out, gate_w))  # noqa: E731
    st = two_orders(run) if device == "cpu" else run()
    pairs, tiles = st["sorted_pairs"].cpu(), st["tile_experts"].cpu()
    rows = torch.where(pairs >= 0)[0]
    pair = pairs[rows].long()
    token, expert = pair // ids.shape[1], tiles[rows // bm].long()
    # gate_up: every valid row is its token's SwiGLU activation under its expert; padding rows are never written
    act = st["act"].cpu()
    for e in torch.unique(expert).tolist():
        sel = expert == e
        assert_matches_mirror(act[rows[sel]], mirror_act(x.cpu()[token[sel]], w13.cpu()[e], x.dtype), "act")
    assert torch.isnan(act[pairs < 0].float()).all()
    # down: rows of local pairs = weight * act @ w2^T; rows of pairs routed to other ranks are never written
    y = st["y"].cpu()
    expect = torch.stack([(weights.cpu().reshape(-1)[p].double() * (act[r].double() @ w2.cpu()[e].double().t()))
                          for p, r, e in zip(pair.tolist(), rows.tolist(), expert.tolist())]).to(x.dtype)
    assert_matches_mirror(y[pair], expect, "expert_out")
    local = (ids.cpu().reshape(-1).long() - offset).clamp(min=-1)
    assert torch.isnan(y[(local < 0) | (local >= w13.shape[0])].float()).all()
    # combine
    mirror = mirror_fused_moe(x, w13, w2, weights, ids, offset, shared=(shared_out, gate_w))
    assert_matches_mirror(st["out"], mirror, "out")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bm", [16, 64, 128, 256])
def test_down_exact_on_small_integers(bm, device):
    """Small-integer act and w2, power-of-two weights: fp32 accumulation is exact, so the GEMM must be too."""
    skip_unless_block_m_runs(device, bm)
    N, k, E, H, inter = 70, 2, 4, 96, 40
    ids = torch.rand(N, E, generator=gen(1)).argsort(-1)[:, :k].to(device=device, dtype=torch.int32)
    weights = (2.0 ** torch.randint(-2, 2, (N, k), generator=gen(2)).float()).to(device)
    sorted_pairs, tile_experts = moe_align(ids, 0, E, bm)
    act = torch.randint(-4, 5, (sorted_pairs.numel(), inter), generator=gen(3)).to(device=device, dtype=torch.bfloat16)
    w2 = torch.randint(-4, 5, (E, H, inter), generator=gen(4)).to(device=device, dtype=torch.bfloat16)
    y = poisoned_empty((N * k, H), torch.bfloat16, device=device)
    torch.ops.qwen35_native.moe_down(act, w2, weights, sorted_pairs, tile_experts, bm, y)
    pairs, tiles = sorted_pairs.cpu(), tile_experts.cpu()
    rows = torch.where(pairs >= 0)[0]
    expect = torch.empty(N * k, H, dtype=torch.float64)
    for r in rows.tolist():
        p, e = int(pairs[r]), int(tiles[r // bm])
        expect[p] = float(weights.reshape(-1)[p]) * (act[r].cpu().double() @ w2[e].cpu().double().t())
    assert_bit_identical(y.cpu(), expect.to(torch.bfloat16))


def test_stage_ops_reject_badmake_moe_inputs():
    x, w13, w2, weights, ids = make_moe_inputs(4, 8, 2, 96, 40, torch.bfloat16, seed=1)
    pairs, tiles = moe_align(ids, 0, 8, 16)
    act = torch.empty(pairs.numel(), 40, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="moe_gate_up: block_m must be 16, 64, 128 or 256 for BFloat16, got 8"):
        torch.ops.qwen35_native.moe_gate_up(x, w13, pairs, tiles, 2, 8, act)
    with pytest.raises(RuntimeError, match="moe_gate_up: sorted_pairs must be in"):
        torch.ops.qwen35_native.moe_gate_up(x, w13, pairs + 100, tiles, 2, 16, act)
    with pytest.raises(RuntimeError, match=r"moe_gate_up: act must have shape \[max_tiles \* block_m, I\]"):
        torch.ops.qwen35_native.moe_gate_up(x, w13, pairs, tiles, 2, 16, act[:, :32])
    with pytest.raises(RuntimeError, match="moe_down: block_m must be 16 for Float"):
        torch.ops.qwen35_native.moe_down(act.float(), w2.float(), weights, pairs, tiles, 64, x.float())
    with pytest.raises(RuntimeError, match=r"fused_moe: H and I must be multiples of 8 \(16 bytes\), got H=96 I=36"):
        torch.ops.qwen35_native.fused_moe(x, w13[:, :72].contiguous(), w2[:, :, :36].contiguous(), weights, ids, 0,
                                          None, None)
    with pytest.raises(RuntimeError, match="fused_moe: hidden must start at a 16-byte aligned address"):
        torch.ops.qwen35_native.fused_moe(x.reshape(-1)[1:97].reshape(1, 96), w13, w2, weights[:1], ids[:1], 0, None,
                                          None)
    with pytest.raises(RuntimeError, match="fused_moe: shared_out and shared_gate_w must be given together"):
        torch.ops.qwen35_native.fused_moe(x, w13, w2, weights, ids, 0, x, None)
    with pytest.raises(ValueError, match=r"backend='kernel' does not support this input: the expert kernels need H"):
        ops.fused_moe(x[:, :90], w13[:, :, :90], w2[:, :90], weights, ids, backend="kernel")


@pytest.mark.parametrize("device", DEVICES)
def test_fused_moe_opcheck(device):
    skip_without_cuda(device)
    x, w13, w2, weights, ids = make_moe_inputs(5, 8, 2, 96, 40, torch.bfloat16, seed=2, device=device)
    torch.library.opcheck(torch.ops.qwen35_native.fused_moe.default, (x, w13, w2, weights, ids, 0, None, None))


@pytest.mark.gpu
@pytest.mark.parametrize(("N", "E", "k", "H", "I"), [(1, 512, 10, 4096, 128), (64, 512, 10, 4096, 128),
                                                     (1024, 256, 8, 2048, 512), (8, 512, 10, 4096, 1024)])
def test_fused_moe_model_shapes_on_gpu(N, E, k, H, I):
    g = torch.Generator(device="cuda").manual_seed(N)
    x = torch.randn(N, H, device="cuda", generator=g).bfloat16()
    w13 = torch.randn(E, 2 * I, H, device="cuda", dtype=torch.bfloat16, generator=g).div_(H ** 0.5)
    w2 = torch.randn(E, H, I, device="cuda", dtype=torch.bfloat16, generator=g).div_(I ** 0.5)
    weights, ids = ops.moe_route(torch.randn(N, E, device="cuda", generator=g), k)
    out = ops.fused_moe(x, w13, w2, weights, ids)   # auto: the kernel on CUDA
    touched, local_ids = torch.unique(ids, return_inverse=True)   # fp32 copies of the touched experts only
    ref = ops.fused_moe_reference(x.float(), w13[touched].float(), w2[touched].float(), weights,
                                  local_ids.to(torch.int32))
    assert rel_err(out, ref) <= REL_TOL_16BIT

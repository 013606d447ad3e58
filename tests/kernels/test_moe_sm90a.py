"""The sm_90a grouped expert GEMMs (block_m = 128: TMA + wgmma, warp-specialised, persistent over the work items;
csrc/kernels/moe/moe_{gate_up,down}_sm90a.cu) against the same references as the mma.sync path. The stage checks
shared with the other tile shapes (guarded, poisoned outputs under two thread orders, exact small integers, all
tokens on one expert) run for block_m 128 in test_moe_experts.py. Here: ragged H / I (K tails, columns past the
last block), several column blocks and K loops longer than the stage ring, experts without tokens, tiles whose
upper 64 rows are padding, expert-parallel subsets, fp16, and -- under the emulator -- bit-identity with the sm_80
path (both round once per k16 step, in the same order); the device's choice of the path; the errors. On an sm_90
GPU (-m gpu): the real 397B / 35B prefill shapes, sm_90a vs sm_80 vs an fp32 reference.
"""

from functools import partial

import pytest
import torch
from moe_helpers import (
    DEVICES,
    GPU_MODEL_SHAPES,
    REL_TOL_16BIT,
    assert_matches_mirror,
    make_moe_inputs,
    mirror_fused_moe,
    model_shape_inputs,
    rel_err,
    skip_unless_block_m_runs,
)

from qwen35_native import emulator, ops
from qwen35_native.ops.moe_stages import fused_moe_kernel, moe_align, sm90a_path
from utils import assert_bit_identical, poisoned_empty, set_sm90a

# (N, E, k, H, I): ragged H / I, one 128-row tile per expert (upper halves idle); ~64 rows per expert (some tiles
# with both halves); 2 column blocks in both GEMMs and 5 K blocks of gate_up (> 4 stages), ~100 rows per expert;
# 64 experts for 64 pairs (many without tokens, single-row tiles)
CASES = [(100, 8, 2, 96, 40), (257, 8, 2, 96, 40), (200, 4, 2, 264, 136), (16, 64, 4, 96, 40)]


def _check(out, x, w13, w2, weights, ids, offset=0):
    assert rel_err(out, mirror_fused_moe(x, w13, w2, weights, ids, offset, round_like_kernels=False)) <= REL_TOL_16BIT
    assert_matches_mirror(out, mirror_fused_moe(x, w13, w2, weights, ids, offset))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "E", "k", "H", "I"), CASES, ids=["N{}-E{}-k{}-H{}-I{}".format(*c) for c in CASES])
def test_sm90a_matches_references_and_sm80(N, E, k, H, I, device):
    skip_unless_block_m_runs(device, 128)
    x, w13, w2, weights, ids = make_moe_inputs(N, E, k, H, I, torch.bfloat16, seed=N + H, device=device)
    out = fused_moe_kernel(x, w13, w2, weights, ids, block_m=128)
    _check(out, x, w13, w2, weights, ids)
    sm80 = fused_moe_kernel(x, w13, w2, weights, ids, block_m=64)
    if device == "cpu":   # the emulator rounds wgmma and mma.sync alike: one rounding per k16 step, same order
        assert_bit_identical(out, sm80, what="sm_90a (block_m 128) vs sm_80 (block_m 64) output")
    else:                 # the tensor cores may sum a k16 step differently
        assert_matches_mirror(out, sm80, "sm_90a vs sm_80 output")


@pytest.mark.parametrize("device", DEVICES)
def test_sm90a_fp16(device):
    skip_unless_block_m_runs(device, 128)
    x, w13, w2, weights, ids = make_moe_inputs(150, 8, 2, 96, 40, torch.float16, seed=3, device=device)
    _check(fused_moe_kernel(x, w13, w2, weights, ids.long(), block_m=128), x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
def test_sm90a_expert_parallel_subsets(device):
    skip_unless_block_m_runs(device, 128)
    x, w13, w2, weights, ids = make_moe_inputs(64, 64, 10, 96, 40, torch.bfloat16, seed=5, device=device)
    parts = []
    for a, b in ((0, 16), (16, 40), (40, 64)):
        part = fused_moe_kernel(x, w13[a:b], w2[a:b], weights, ids, expert_offset=a, block_m=128)
        _check(part, x, w13[a:b], w2[a:b], weights, ids, offset=a)
        parts.append(part.float())
    full = mirror_fused_moe(x, w13, w2, weights, ids, round_like_kernels=False)
    assert rel_err(sum(parts), full) <= REL_TOL_16BIT
    none = fused_moe_kernel(x, w13[:0], w2[:0], weights, ids, expert_offset=64, block_m=128)
    assert torch.equal(none, torch.zeros_like(x))


def _emulated_work(fn):
    emulator.reset_stats()
    fn()
    stats = emulator.stats()
    return stats["blocks"], stats["threads"]


def test_fused_moe_picks_the_path_of_the_emulated_device():
    """fused_moe without block_m runs the sm_90a kernels for prefill at arch sm_90 and the sm_80 ones at sm_80
    (the same launches, blocks and threads as an explicit block_m); decode stays off them: the 16-row tiles, or up
    to 64 pairs the skinny kernel (block_m 1)."""
    x, w13, w2, weights, ids = make_moe_inputs(100, 2, 1, 96, 40, torch.bfloat16, seed=4)  # 50 rows per expert
    run = lambda bm=None: fused_moe_kernel(x, w13, w2, weights, ids, block_m=bm)  # noqa: E731
    assert sm90a_path("cpu") and emulator.get_arch() == "sm_90"
    assert _emulated_work(run) == _emulated_work(lambda: run(128)) != _emulated_work(lambda: run(64))
    with emulator.arch("sm_80"):
        assert not sm90a_path("cpu")
        assert _emulated_work(run) == _emulated_work(lambda: run(64))
        with pytest.raises(RuntimeError, match="fused_moe: block_m 128 selects the sm_90a kernels, which need the "
                                               "emulator at arch sm_90, got sm_80"):
            run(128)
    decode = lambda n, bm=None: fused_moe_kernel(x[:n], w13, w2, weights[:n], ids[:n], block_m=bm)  # noqa: E731
    assert _emulated_work(lambda: decode(8)) == _emulated_work(lambda: decode(8, 1))


def test_sm90a_rejects_badmake_moe_inputs():
    x, w13, w2, weights, ids = make_moe_inputs(4, 8, 2, 96, 40, torch.bfloat16, seed=1)
    pairs, tiles = moe_align(ids, 0, 8, 128)
    act = torch.empty(pairs.numel(), 40, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="moe_down: block_m must be 16 for Float, got 128"):
        torch.ops.qwen35_native.moe_down(act.float(), w2.float(), weights, pairs, tiles, 128, x.float())
    with emulator.arch("sm_80"), pytest.raises(RuntimeError, match="moe_gate_up: block_m 128 selects the sm_90a"):
        torch.ops.qwen35_native.moe_gate_up(x, w13, pairs, tiles, 2, 128, act)
    with pytest.raises(RuntimeError, match=r"fused_moe: block_m 128 \(the sm_90a kernels\) needs H and I >= 1"):
        fused_moe_kernel(x, w13[:, :0], w2[:, :, :0], weights, ids, block_m=128)


# ---- on an sm_90 GPU: the real prefill shapes ----

GPU_SHAPES = GPU_MODEL_SHAPES


def _assert_within_two_ulps(actual, expected, what):
    """assert_matches_mirror's bound (two bf16 ulps relative, plus two ulps of the largest value), evaluated on the
    GPU: the outputs here have up to 3 * 10^8 elements."""
    ulp = 2.0 ** -7
    a, e = actual.float(), expected.float()
    err = (a - e).abs().nan_to_num(float("inf"))
    bad = err > 2 * ulp * (e.abs() + e.abs().max())
    if bad.any():
        idx = tuple(int(v) for v in torch.nonzero(err == err.max())[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {a.numel()} elements off by more than two ulps; worst at "
                             f"{idx}: got {a[idx].item()!r}, expected {e[idx].item()!r}")


def _stage_outputs(x, w13, w2, weights, ids, bm):
    """align + gate_up + down with block_m bm; act rows reordered by pair ([P, I]), y [P, H] (NaN-poisoned)."""
    P, inter = ids.numel(), w13.shape[1] // 2
    pairs, tiles = moe_align(ids, 0, w13.shape[0], bm)
    act = poisoned_empty((pairs.numel(), inter), x.dtype, device="cuda")
    torch.ops.qwen35_native.moe_gate_up(x, w13, pairs, tiles, ids.shape[1], bm, act)
    y = poisoned_empty((P, x.shape[1]), x.dtype, device="cuda")
    torch.ops.qwen35_native.moe_down(act, w2, weights, pairs, tiles, bm, y)
    rows = torch.where(pairs >= 0)[0]
    assert rows.numel() == P, f"block_m {bm}: moe_align placed {rows.numel()} of {P} pairs"
    act_by_pair = torch.empty(P, inter, dtype=x.dtype, device="cuda")
    act_by_pair[pairs[rows].long()] = act[rows]
    return act_by_pair, y


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_SHAPES))
def test_sm90a_vs_sm80_and_fp32_on_model_shapes_gpu(name, monkeypatch):
    if not sm90a_path("cuda"):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    N, E, k, H, inter = GPU_SHAPES[name]
    x, w13, w2, weights, ids = model_shape_inputs(name)
    act90, y90 = _stage_outputs(x, w13, w2, weights, ids, 128)
    act80, y80 = _stage_outputs(x, w13, w2, weights, ids, 64)
    _assert_within_two_ulps(act90, act80, f"{name}: act of the sm_90a gate_up vs the sm_80 one ([pair, j])")
    _assert_within_two_ulps(y90, y80, f"{name}: expert_out of the sm_90a down vs the sm_80 one ([pair, h])")
    # fp32 reference of 128 sampled pairs (per pair: its token, its expert)
    sample = torch.randperm(ids.numel(), generator=torch.Generator().manual_seed(1))[:128].cuda()
    token, expert = sample // k, ids.reshape(-1)[sample].long()
    gu = torch.stack([w13[e].float() @ x[t].float() for t, e in zip(token.tolist(), expert.tolist())])
    act_ref = torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]
    _assert_within_two_ulps(act90[sample], act_ref, f"{name}: sm_90a act vs fp32 ([sampled pair, j])")
    y_ref = torch.stack([w2[e].float() @ act90[p].float() for p, e in zip(sample.tolist(), expert.tolist())])
    y_ref *= weights.reshape(-1)[sample, None]
    _assert_within_two_ulps(y90[sample], y_ref, f"{name}: sm_90a expert_out vs fp32 of its act ([sampled pair, h])")
    # automatic choice on a GPU (csrc/torch/sm90a_policy.h, moe_ops.cpp): by default the sm_90a kernels from an
    # expert intermediate size of 128 (where they were measured faster), QWEN35_SM90A=1 always, =0 never
    with_bm = partial(fused_moe_kernel, x, w13, w2, weights, ids)
    default_bm = 128 if inter >= 128 else 64
    for setting, bm in ((None, default_bm), ("1", 128), ("0", 64)):
        set_sm90a(monkeypatch, setting)
        assert torch.equal(ops.fused_moe(x, w13, w2, weights, ids), with_bm(block_m=bm)), \
            f"{name}: QWEN35_SM90A={setting}: fused_moe should run the block_m {bm} kernels (deterministically)"


@pytest.mark.gpu
def test_prefill_tiles_capture_in_a_cuda_graph():
    """Since decode batches of 8+ rows per expert (35b-a3b from 256 sequences) take the sm_90a kernels, they run
    inside the engine's CUDA graphs: a captured fused_moe replays to the eager bits, also on new inputs."""
    if not sm90a_path("cuda"):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    x, w13, w2, weights, ids = make_moe_inputs(64, 64, 8, 1024, 256, torch.bfloat16, seed=3, device="cuda")
    run = partial(ops.fused_moe, x, w13, w2, weights, ids, backend="kernel")
    assert torch.equal(run(), fused_moe_kernel(x, w13, w2, weights, ids, block_m=128)), "8 rows per expert: sm_90a"
    run()   # warm-up outside the capture (tensor maps, function attributes)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    for seed in (5, 6):
        x.copy_(torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, run()), f"replay {seed}: the captured sm_90a fused_moe differs from eager"

"""The sm_90a MoE GEMMs in 2-CTA clusters (block_m 256; csrc/kernels/moe/moe_gemm_sm90a.cuh, kPair): each cluster
takes one 256-row tile, a CTA per 128 rows, and each CTA loads half of the weight tile and multicasts it to both.
Every row meets the same wgmmas on the same shared-memory contents as in the one-CTA kernels (block_m 128), so the
outputs must be bit-identical to them: on the emulator for the ragged cases of test_moe_sm90a.py (gathered and
sorted rows, fp16, expert-parallel subsets, tiles whose second half is empty, three thread and block orders), and
with -m gpu on the model shapes. fused_moe takes them under QWEN35_MOE_CLUSTER=1. The stage checks (guarded,
poisoned outputs, exact small integers, all tokens on one expert) run for block_m 256 in test_moe_experts.py."""

import pytest
import torch
from moe_helpers import DEVICES, GPU_MODEL_SHAPES, make_moe_inputs, model_shape_inputs, skip_unless_block_m_runs

from qwen35_native import emulator
from qwen35_native.ops.moe_stages import fused_moe_kernel, sm90a_path
from utils import assert_bit_identical, run_under_schedules

# (N, E, k, H, I) as in test_moe_sm90a.py, plus ~300 rows per expert (some 256-row tiles full, some experts two)
CASES = [(100, 8, 2, 96, 40), (257, 8, 2, 96, 40), (200, 4, 2, 264, 136), (16, 64, 4, 96, 40), (600, 4, 2, 96, 40)]


@pytest.mark.parametrize("sorted_rows", [False, True], ids=["gathered", "sorted"])
@pytest.mark.parametrize(("N", "E", "k", "H", "I"), CASES, ids=["N{}-E{}-k{}-H{}-I{}".format(*c) for c in CASES])
def test_pairs_equal_the_one_cta_kernels(N, E, k, H, I, sorted_rows, monkeypatch):
    monkeypatch.setenv("QWEN35_MOE_SORTED_ROWS", "1" if sorted_rows else "0")
    x, w13, w2, weights, ids = make_moe_inputs(N, E, k, H, I, torch.bfloat16, seed=N + H)
    one = fused_moe_kernel(x, w13, w2, weights, ids, block_m=128)
    run = lambda: fused_moe_kernel(x, w13, w2, weights, ids, block_m=256)  # noqa: E731
    pair = run_under_schedules(run, schedules=("forward", "reverse", "random:5")) if N == 600 else run()
    assert_bit_identical(pair, one, what="fused_moe in 2-CTA clusters vs one CTA per 128-row tile")


def test_pairs_fp16_and_expert_parallel_subsets():
    x, w13, w2, weights, ids = make_moe_inputs(300, 16, 4, 96, 40, torch.float16, seed=9)
    for a, b in ((0, 16), (0, 5), (5, 16)):
        one = fused_moe_kernel(x, w13[a:b], w2[a:b], weights, ids, expert_offset=a, block_m=128)
        pair = fused_moe_kernel(x, w13[a:b], w2[a:b], weights, ids, expert_offset=a, block_m=256)
        assert_bit_identical(pair, one, what=f"experts [{a}, {b}) in 2-CTA clusters")


def test_fused_moe_takes_the_pairs_when_asked(monkeypatch):
    """QWEN35_MOE_CLUSTER=1: the automatic sm_90a choice runs the 2-CTA kernels (the same bits, and the emulator's
    counters of an explicit block_m 256); explicit block_m and the sm_80 path are not affected."""
    x, w13, w2, weights, ids = make_moe_inputs(257, 8, 2, 96, 40, torch.bfloat16, seed=3)

    def run(setting, **kw):   # -> (output, the emulator's counters of the launches: which kernels ran)
        monkeypatch.setenv("QWEN35_MOE_CLUSTER", setting)
        emulator.reset_stats()
        out = fused_moe_kernel(x, w13, w2, weights, ids, **kw)
        return out, emulator.stats()

    (off, work_off), (on, work_on) = run("0"), run("1")
    assert_bit_identical(on, off, what="QWEN35_MOE_CLUSTER=1 vs 0")
    assert work_on == run("0", block_m=256)[1] != work_off == run("1", block_m=128)[1]
    with emulator.arch("sm_80"):
        assert run("1")[1] == run("0")[1]
    monkeypatch.setenv("QWEN35_MOE_CLUSTER", "2")
    with pytest.raises(RuntimeError, match="QWEN35_MOE_CLUSTER must be 0 .* or unset"):
        fused_moe_kernel(x, w13, w2, weights, ids)


@pytest.mark.parametrize("device", DEVICES)
def test_block_m_256_needs_the_sm90a_kernels(device):
    skip_unless_block_m_runs(device, 16)
    x, w13, w2, weights, ids = make_moe_inputs(200, 4, 2, 96, 40, torch.bfloat16, seed=4, device=device)
    if device == "cpu":
        with emulator.arch("sm_80"), pytest.raises(RuntimeError, match="fused_moe: block_m 256 selects the sm_90a "
                                                                       "kernels, which need the emulator at arch"):
            fused_moe_kernel(x, w13, w2, weights, ids, block_m=256)
    with pytest.raises(RuntimeError, match="block_m must be 16 for Float, got 256"):
        fused_moe_kernel(x.float(), w13.float(), w2.float(), weights, ids, block_m=256)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_MODEL_SHAPES))
def test_pairs_on_model_shapes_gpu(name):
    """On the hardware (TMA multicast, cluster-scope arrivals): bit-identical to the one-CTA kernels."""
    if not sm90a_path("cuda"):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    x, w13, w2, weights, ids = model_shape_inputs(name)
    one = fused_moe_kernel(x, w13, w2, weights, ids, block_m=128)
    assert torch.equal(fused_moe_kernel(x, w13, w2, weights, ids, block_m=256), one), name

"""The sm_90a gate_up on sorted rows: ``moe_permute`` (csrc/kernels/moe/moe_permute.cu) copies each tile row's
token row of hidden into moe_align's tile order, and the sm_90a gate_up kernel then loads its A operand with TMA
boxes (moe_gemm_sm90a.cuh, kGatherA = false) instead of gathering it with cp.async. Checked here: the permutation
exactly (every pair's row, nothing written to padding rows or past the buffer, any element type, strided hidden,
two thread orders); the gate_up outputs bit-identical to the gathering kernel's (same wgmmas on the same shared
memory contents); fused_moe under QWEN35_MOE_SORTED_ROWS=1 bit-identical to the default and actually taking the
path; the errors. On an sm_90 GPU (-m gpu): the same identities on the 397B / 35B prefill shapes."""

import pytest
import torch
from moe_helpers import DEVICES, GPU_MODEL_SHAPES, make_moe_inputs, model_shape_inputs, skip_unless_block_m_runs

from qwen35_native import emulator
from qwen35_native.ops.moe_stages import fused_moe_kernel, moe_align, sm90a_path
from utils import GuardedTensor, assert_bit_identical, poisoned_empty, run_under_schedules

OPS = torch.ops.qwen35_native
ENV = "QWEN35_MOE_SORTED_ROWS"
# (N, E, k, H, I) as in test_moe_sm90a.py: ragged H / I, idle upper halves, 2 column blocks and 5 K blocks,
# 64 experts for 64 pairs (many without tokens)
CASES = [(100, 8, 2, 96, 40), (257, 8, 2, 96, 40), (200, 4, 2, 264, 136), (16, 64, 4, 96, 40)]
CASE_IDS = ["N{}-E{}-k{}-H{}-I{}".format(*c) for c in CASES]


def _permute(x, pairs, tiles, k, E, bm):
    rows = GuardedTensor((pairs.numel(), x.shape[1]), x.dtype, device=x.device)
    OPS.moe_permute(x, pairs, tiles, k, E, bm, rows.tensor)
    rows.check("moe_permute")
    return rows.tensor


# (block_m, dtype): fp32 has the 16-row tiles only; the rows are copied as bytes whatever the type
PERMUTE_CASES = [(16, torch.float32), (16, torch.bfloat16), (64, torch.float16), (128, torch.bfloat16)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("bm", "dtype"), PERMUTE_CASES, ids=[f"bm{b}-{str(d)[6:]}" for b, d in PERMUTE_CASES])
def test_permute_copies_each_pairs_row_and_nothing_else(bm, dtype, device):
    skip_unless_block_m_runs(device, 16)   # any device: the permutation is no sm_90a kernel
    N, E, k, H = 130, 8, 3, 264
    x, _, _, _, ids = make_moe_inputs(N, E, k, H, 40, dtype, seed=bm, device=device)
    wide = poisoned_empty((N, H + 24), dtype, device=device)   # rows at a stride of H + 24: only H are copied
    wide[:, :H] = x
    x = wide[:, :H]
    pairs, tiles = moe_align(ids, 0, E, bm)
    rows = run_under_schedules(_permute, x, pairs, tiles, k, E, bm) if device == "cpu" else \
        _permute(x, pairs, tiles, k, E, bm)
    valid = pairs >= 0
    assert int(valid.sum()) == N * k
    assert_bit_identical(rows[valid], x[pairs[valid].long() // k], what="sorted rows of the pairs")
    padding = rows[~valid]
    assert padding.shape[0] > 0 and padding.isnan().all(), "moe_permute wrote padding rows (or rows of unused tiles)"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "E", "k", "H", "I"), CASES, ids=CASE_IDS)
def test_gate_up_on_sorted_rows_equals_the_gathering_kernel(N, E, k, H, I, device):
    skip_unless_block_m_runs(device, 128)
    x, w13, _, _, ids = make_moe_inputs(N, E, k, H, I, torch.bfloat16, seed=N + I, device=device)
    pairs, tiles = moe_align(ids, 0, E, 128)

    def gate_up(sorted_rows):
        act = GuardedTensor((pairs.numel(), I), x.dtype, device=device)
        OPS.moe_gate_up(x, w13, pairs, tiles, k, 128, act.tensor, sorted_rows)
        act.check("moe_gate_up")
        return act.tensor

    gathered = gate_up(None)
    rows = _permute(x, pairs, tiles, k, E, 128)
    on_rows = run_under_schedules(gate_up, rows) if device == "cpu" else gate_up(rows)
    assert_bit_identical(on_rows, gathered, what="act of the sorted-rows gate_up vs the gathering one")
    assert on_rows[pairs < 0].isnan().all(), "padding rows of act were written"


@pytest.mark.parametrize("device", DEVICES)
def test_fused_moe_takes_sorted_rows_when_asked(device, monkeypatch):
    """QWEN35_MOE_SORTED_ROWS=1: fused_moe copies the rows into tile order first (the emulator counts the extra
    launch); same bits as the default, in bf16 and fp16, with a shared expert and for an expert-parallel subset."""
    skip_unless_block_m_runs(device, 128)
    x, w13, w2, weights, ids = make_moe_inputs(257, 8, 2, 96, 40, torch.bfloat16, seed=7, device=device)
    shared_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(x)
    gate_w = torch.randn(96, generator=torch.Generator().manual_seed(9)).div(10).to(x)
    xh, w13h, w2h = x.half(), w13.half(), w2.half()
    calls = {"plain": lambda: fused_moe_kernel(x, w13, w2, weights, ids, block_m=128),
             "fp16": lambda: fused_moe_kernel(xh, w13h, w2h, weights, ids, block_m=128),
             "shared": lambda: fused_moe_kernel(x, w13, w2, weights, ids, 0, shared_out, gate_w, block_m=128),
             "subset": lambda: fused_moe_kernel(x, w13[2:6], w2[2:6], weights, ids, 2, block_m=128)}
    for name, call in calls.items():
        monkeypatch.delenv(ENV, raising=False)
        default = call()
        monkeypatch.setenv(ENV, "1")
        assert_bit_identical(call(), default, what=f"fused_moe ({name}) on sorted rows vs gathered rows")
    if device == "cpu":
        def launches(setting):   # the automatic block_m: 128 at the emulator's default sm_90, 64 at sm_80
            monkeypatch.setenv(ENV, setting)
            emulator.reset_stats()
            fused_moe_kernel(x, w13, w2, weights, ids)
            return emulator.stats()["launches"]
        assert launches("1") == launches("0") + 1
        with emulator.arch("sm_80"):   # the mma.sync path gathers its rows itself: the switch changes nothing
            assert launches("1") == launches("0")
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(RuntimeError, match="QWEN35_MOE_SORTED_ROWS must be 0 .* or unset"):
        calls["plain"]()


def test_sorted_rows_errors():
    x, w13, _, _, ids = make_moe_inputs(200, 4, 2, 96, 40, torch.bfloat16, seed=2)
    pairs, tiles = moe_align(ids, 0, 4, 128)
    rows = torch.empty(pairs.numel(), 96, dtype=torch.bfloat16)
    act = torch.empty(pairs.numel(), 40, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"moe_permute: sorted_rows must have shape \[max_tiles \* block_m, H\]"):
        OPS.moe_permute(x, pairs, tiles, 2, 4, 128, rows[:, :64])
    with pytest.raises(RuntimeError, match="moe_permute: sorted_rows must have dtype BFloat16, got Half"):
        OPS.moe_permute(x, pairs, tiles, 2, 4, 128, rows.half())
    with pytest.raises(RuntimeError, match=r"moe_permute: top_k must be in \[1, 32\], got 0"):
        OPS.moe_permute(x, pairs, tiles, 0, 4, 128, rows)
    with pytest.raises(RuntimeError, match="moe_permute: sorted_pairs must be in"):
        OPS.moe_permute(x, pairs + 1000, tiles, 2, 4, 128, rows)
    with pytest.raises(RuntimeError, match=r"moe_gate_up: sorted_rows is read by the sm_90a kernels only "
                                           r"\(block_m 128 or 256\), got block_m 64"):
        p64, t64 = moe_align(ids, 0, 4, 64)
        OPS.moe_gate_up(x, w13, p64, t64, 2, 64, act[: p64.numel()], rows[: p64.numel()])
    with pytest.raises(RuntimeError, match=r"moe_gate_up: sorted_rows must have shape \[max_tiles \* block_m, H\]"):
        OPS.moe_gate_up(x, w13, pairs, tiles, 2, 128, act, rows[:-1])
    with emulator.arch("sm_80"), pytest.raises(RuntimeError, match="moe_gate_up: block_m 128 selects the sm_90a"):
        OPS.moe_gate_up(x, w13, pairs, tiles, 2, 128, act, rows)


# ---- on an sm_90 GPU: the real prefill shapes ----

@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_MODEL_SHAPES))
def test_sorted_rows_on_model_shapes_gpu(name, monkeypatch):
    """The same shared-memory contents reach the same wgmmas whichever way they were loaded: bit-identical act
    and fused_moe outputs on the hardware too."""
    if not sm90a_path("cuda"):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    N, E, k, H, inter = GPU_MODEL_SHAPES[name]
    x, w13, w2, weights, ids = model_shape_inputs(name)
    pairs, tiles = moe_align(ids, 0, E, 128)
    rows = poisoned_empty((pairs.numel(), H), x.dtype, device="cuda")
    OPS.moe_permute(x, pairs, tiles, k, E, 128, rows)
    valid = pairs >= 0
    assert torch.equal(rows[valid], x[pairs[valid].long() // k]), f"{name}: moe_permute rows"
    acts = []
    for sorted_rows in (None, rows):
        act = poisoned_empty((pairs.numel(), inter), x.dtype, device="cuda")
        OPS.moe_gate_up(x, w13, pairs, tiles, k, 128, act, sorted_rows)
        acts.append(act[valid])
    assert torch.equal(acts[1], acts[0]), f"{name}: act of the sorted-rows gate_up vs the gathering one"
    monkeypatch.delenv(ENV, raising=False)
    default = fused_moe_kernel(x, w13, w2, weights, ids, block_m=128)
    monkeypatch.setenv(ENV, "1")
    assert torch.equal(fused_moe_kernel(x, w13, w2, weights, ids, block_m=128), default), f"{name}: fused_moe"

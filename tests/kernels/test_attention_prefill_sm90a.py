"""The sm_90a paged prefill (csrc/kernels/attention/prefill_attention_sm90a.cu: TMA producer, V transposer, two wgmma
consumer warpgroups over 128 packed query rows) against the same references as the mma.sync kernel
(test_attention_prefill.py): fp32 scaled_dot_product_attention and the pure-torch reference, on the same inputs
(shuffled cache blocks whose unused slots hold NaN). Under the emulator both paths round alike (one rounding per
k16 step in the same order, the same softmax and epilogue), so the outputs must be bit-identical; on a GPU the
tensor cores may sum a k16 step differently. Also: ragged shapes (chunks starting mid-block, empty sequences, tiles
whose second warpgroup holds only padding rows, several 128-row tiles per sequence, K/V loops longer than the
stage ring), block sizes 64 and 128, fp16, guarded poisoned outputs under two thread orders, the path choice
(auto -> sm_90a at emulated arch sm_90, sm_80 at sm_80 or for blocks of 16) and its errors. The variants -- ping-pong
(impl "sm90a-pingpong", arch 91: the consumers issue their GEMMs in turn, named barriers 3 and 4), V read MN-major
without a transpose ("sm90a-vmn", 92: wgmma imm-trans-b on V as TMA lays it down, stale keys zeroed by warps 1-3)
and both (93) -- compute the same products in the same order, so they must be bit-identical too, under both
thread orders (an unbalanced turn barrier is reported by the emulator as a deadlock; the NaN-poisoned stale cache
slots show a missing zeroing). -m gpu: the real prefill shapes (1 x 8192 at tp1 and tp8, a chunked continuation)
sm_90a and its variants vs sm_80 vs fp32."""

import pytest
import torch
from attention_inputs import assert_rel_close, paged_inputs, sdpa_paged_expected

from qwen35_native import emulator, ops
from utils import GuardedTensor, assert_bit_identical, set_sm90a

BOUND = 1e-2  # MODEL_SPEC §5: bf16/fp16 attention vs fp32, relative
VARIANTS = ["sm90a-pingpong", "sm90a-vmn", "sm90a-pingpong-vmn"]  # arch 91, 92, 93: the same bits as "sm90a"


def _call(inp, impl, gated=True, scale=None):
    return ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                                       inp["block_tables"], inp["gate"] if gated else None, scale=scale,
                                       backend="kernel", impl=impl)


def _check_references(out, inp, gated=True, what="sm_90a"):
    cu = inp["cu_seqlens"].tolist()
    ref = ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                                      inp["block_tables"], inp["gate"] if gated else None, backend="reference")
    for n, exp in enumerate(sdpa_paged_expected(inp, gated)):
        s, e = cu[n], cu[n + 1]
        if e > s:
            assert_rel_close(out[s:e], exp, BOUND, f"{what} sequence {n} vs fp32 sdpa")
            assert_rel_close(out[s:e], ref[s:e].float().cpu(), BOUND, f"{what} sequence {n} vs reference")


# (contexts, query lengths, Hq, Hkv, block_size, dtype):
#  - GQA 4 (tp8 rank): a one-token prompt, a 17-token chunk starting mid-block after 70 cached keys (partial first
#    and last tiles), 40 tokens = 160 rows (a second 128-row tile whose upper warpgroup is all padding);
#  - GQA 16 (tp1): 9 tokens = 144 rows, a chunk of 5 after 330 keys (6 key tiles: three rounds of the 2-stage
#    rings, both parities twice), an empty sequence;
#  - GQA 1 at blocks of 128 (64-key tiles in both halves of a block), fp16, two kv heads: a 130-token prompt (its
#    first tile's lower warpgroup needs 1 key tile, the upper one 2) and a chunk of 30 after 100 keys.
CASES = [
    ([0, 70, 0], [1, 17, 40], 4, 1, 64, torch.bfloat16),
    ([0, 330, 3], [9, 5, 0], 16, 1, 64, torch.bfloat16),
    ([100, 0], [30, 130], 2, 2, 128, torch.float16),
]


@pytest.mark.parametrize("case", CASES, ids=["gqa4-bs64", "gqa16-bs64-long-ctx", "gqa1-bs128-fp16"])
def test_sm90a_matches_references_and_sm80(case):
    contexts, q_lens, Hq, Hkv, bs, dtype = case
    inp = paged_inputs(contexts, q_lens, Hq, Hkv, block_size=bs, dtype=dtype, seed=sum(q_lens))
    out = _call(inp, "sm90a")
    assert out.shape == (sum(q_lens), Hq * 256) and out.dtype == dtype
    _check_references(out, inp)
    assert_bit_identical(out, _call(inp, "sm80"), what="sm_90a vs sm_80 output (emulator)")
    for impl in VARIANTS:
        assert_bit_identical(_call(inp, impl), out, what=f"{impl} vs sm_90a output (emulator)")


def test_sm90a_ungated_and_scale():
    inp = paged_inputs([3], [20], 4, 1, seed=7)
    out = _call(inp, "sm90a", gated=False, scale=0.02)
    assert_bit_identical(out, _call(inp, "sm80", gated=False, scale=0.02), what="ungated, scale 0.02")
    ref = ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                                      inp["block_tables"], scale=0.02, backend="reference")
    assert_rel_close(out, ref.float(), BOUND, "ungated, scale 0.02 vs reference")


@pytest.mark.parametrize("arch", [90, 91, 92, 93], ids=["sm90a", *VARIANTS])
def test_sm90a_guards_and_orders(two_orders, arch):
    """Raw op (arch 90..93) into a guarded, poisoned output: every element written, nothing outside it,
    bit-identical under two emulator thread orders (a missing barrier or proxy fence shows up as a difference or an
    error)."""
    inp = paged_inputs([5, 60], [17, 20], 4, 1, seed=3)
    T = inp["q"].shape[0]

    def run():
        out = GuardedTensor((T, 4 * 256), torch.bfloat16)
        torch.ops.qwen35_native.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"],
                                                        inp["seq_lens"], inp["block_tables"], inp["gate"], 1 / 16,
                                                        out.tensor, arch)
        out.check(f"paged_prefill_attention (arch {arch})")
        return out.tensor.clone()

    _check_references(two_orders(run), inp)


def test_path_choice_and_errors():
    inp = paged_inputs([0], [3], 4, 1, seed=5)
    auto = _call(inp, None)
    assert_bit_identical(auto, _call(inp, "sm90a"), what="auto (emulated sm_90) vs sm_90a")
    with emulator.arch("sm_80"):
        assert_bit_identical(_call(inp, "auto"), _call(inp, "sm80"), what="auto at sm_80 vs sm_80")
        with pytest.raises(RuntimeError, match=r"arch 90 \(the sm_90a kernel\) needs the emulator at arch sm_90"):
            _call(inp, "sm90a")
        for arch, impl in zip((91, 92, 93), VARIANTS):
            with pytest.raises(RuntimeError, match=rf"arch {arch} \(the sm_90a kernel\) needs the emulator at arch"):
                _call(inp, impl)
    small = paged_inputs([0], [3], 4, 1, block_size=16, seed=5)
    with pytest.raises(RuntimeError, match=r"arch 90 \(the sm_90a kernel\) needs head_dim 256, a cache block_size of "
                                           r">= 64 and 16-byte aligned caches, got head_dim 256 and block_size 16"):
        _call(small, "sm90a")
    _check_references(_call(small, None), small, what="auto with blocks of 16 (sm_80 kernel)")
    with pytest.raises(ValueError, match=r"paged_prefill_attention: impl must be one of"):
        _call(inp, "sm100")
    with pytest.raises(RuntimeError, match=r"arch must be 0 \(auto\), 80, 90, 91 .*, 92 .* or 93 \(both\), got 75"):
        torch.ops.qwen35_native.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"],
                                                        inp["seq_lens"], inp["block_tables"], None, 0.0625,
                                                        torch.empty(3, 1024, dtype=torch.bfloat16), 75)


# ---- GPU: the benchmark shapes (bench/attention.py), sm_90a vs sm_80 vs fp32 ----
GPU_SHAPES = {  # name: (contexts, query lengths, Hq, Hkv)
    "1x8192-tp1": ([0], [8192], 32, 2),
    "1x8192-tp8": ([0], [8192], 4, 1),
    "chunk-4096-after-12288-tp8": ([12288], [4096], 4, 1),
    "ragged-4-seqs-tp1": ([0, 700, 0, 64], [1000, 300, 1, 2000], 32, 2),
}


def _sampled_sdpa_error(out, inp, rows=64):
    """Worst relative error of `out` against fp32 attention (on the device) over `rows` sampled query tokens of each
    sequence, times sigmoid(gate)."""
    q, gate, tables, cu, lens = inp["q"], inp["gate"], inp["block_tables"], inp["cu_seqlens"].tolist(), \
        inp["seq_lens"].tolist()
    Hq, Hkv = q.shape[1], inp["k_cache"].shape[2]
    worst = 0.0
    for n in range(len(lens)):
        s, e, S = cu[n], cu[n + 1], lens[n]
        if e == s:
            continue
        k, v = (c[tables[n].long()].reshape(-1, Hkv, 256)[:S].float().repeat_interleave(Hq // Hkv, 1)
                for c in (inp["k_cache"], inp["v_cache"]))
        pick = torch.randperm(e - s, generator=torch.Generator().manual_seed(n))[:rows].to(q.device)
        pos = S - (e - s) + pick                                            # key position of each sampled query
        scores = torch.einsum("ihd,jhd->hij", q[s + pick].float(), k) * 256 ** -0.5
        scores = scores.masked_fill(torch.arange(S, device=q.device)[None, None, :] > pos[None, :, None], -torch.inf)
        o = torch.einsum("hij,jhd->ihd", torch.softmax(scores, -1), v).reshape(len(pick), -1)
        ref = o * torch.sigmoid(gate[s + pick].float())
        worst = max(worst, ((out[s + pick].float() - ref).norm() / ref.norm()).item())
    return worst


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(GPU_SHAPES))
def test_sm90a_vs_sm80_and_fp32_on_bench_shapes_gpu(name, monkeypatch):
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs an sm_90 GPU (H100/H200)")
    contexts, q_lens, Hq, Hkv = GPU_SHAPES[name]
    inp = paged_inputs(contexts, q_lens, Hq, Hkv, device="cuda", seed=11)
    out90 = _call(inp, "sm90a")
    out80 = _call(inp, "sm80")
    assert not out90.isnan().any(), f"{name}: NaN in the sm_90a output"
    diff = (out90.float() - out80.float()).abs()
    scale = out80.float().abs().clamp(min=1e-2)
    assert (diff / scale).max().item() <= 0.05, f"{name}: sm_90a vs sm_80 max relative difference too large"
    assert ((out90.float() - out80.float()).norm() / out80.float().norm()).item() <= 4e-3, f"{name}: sm_90a vs sm_80"
    assert _sampled_sdpa_error(out90, inp) <= BOUND, f"{name}: sm_90a vs fp32 sdpa (sampled rows)"
    assert torch.equal(_call(inp, "sm90a"), out90), f"{name}: sm_90a is not deterministic"
    for impl in VARIANTS:  # the same wgmmas (issue order, V layout): the same bits, if the MN-major layout is right
        assert torch.equal(_call(inp, impl), out90), f"{name}: {impl} differs from sm_90a"
    # automatic choice on a GPU (csrc/torch/sm90a_policy.h): the sm_90a kernel unless QWEN35_SM90A=0
    for setting, want, kernel in ((None, out90, "sm_90a"), ("1", out90, "sm_90a"), ("0", out80, "sm_80")):
        set_sm90a(monkeypatch, setting)
        assert torch.equal(_call(inp, None), want), f"{name}: QWEN35_SM90A={setting}: auto should run {kernel}"

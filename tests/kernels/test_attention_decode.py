"""paged_decode_attention: the split-KV kernel and its log-sum-exp merge (emulator on CPU, CUDA with -m gpu) against
the pure-torch reference and fp32 scaled_dot_product_attention: contexts that do and do not fill a page, speculative
verification with 3 new tokens, GQA groups 1, 4 and 16, forced and automatic split counts.
Kernel: csrc/kernels/attention/decode_attention.cu."""

import pytest
import torch
from attention_inputs import assert_rel_close, paged_inputs, sdpa_paged_expected

from qwen35_native import ops
from utils import GuardedTensor, assert_bit_identical

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
GROUPS = [(2, 2), (4, 1), (16, 1)]
CONTEXTS = [63, 64, 200, 0]  # + the new tokens: 64 fills a page exactly, 65 spills one token into the next
BOUND = 1e-2  # MODEL_SPEC §5


def _skip_without_cuda(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


def _call(inp, num_splits=None, gated=True, backend="kernel"):
    return ops.paged_decode_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["seq_lens"], inp["block_tables"],
                                      inp["gate"] if gated else None, backend=backend, num_splits=num_splits)


def _check(out, inp, per_seq, gated=True, what="decode"):
    ref = _call(inp, gated=gated, backend="reference").float().cpu()
    for n, exp in enumerate(sdpa_paged_expected(inp, gated)):
        rows = slice(n * per_seq, (n + 1) * per_seq)
        assert_rel_close(out[rows], exp, BOUND, f"{what}: sequence {n} vs fp32 sdpa")
        assert_rel_close(out[rows], ref[rows], BOUND, f"{what}: sequence {n} vs reference")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("splits", [None, 1, 3], ids=lambda s: f"splits-{s or 'auto'}")
@pytest.mark.parametrize("per_seq", [1, 3], ids=["decode", "verify3"])
@pytest.mark.parametrize("heads", GROUPS, ids=lambda h: f"{h[0]}q{h[1]}kv")
def test_paged_decode(heads, per_seq, splits, device):
    _skip_without_cuda(device)
    Hq, Hkv = heads
    inp = paged_inputs(CONTEXTS, [per_seq] * len(CONTEXTS), Hq, Hkv, device=device, seed=GROUPS.index(heads) + per_seq)
    out = _call(inp, num_splits=splits)
    assert out.shape == (per_seq * len(CONTEXTS), Hq * 256) and out.dtype == torch.bfloat16
    _check(out, inp, per_seq)


@pytest.mark.parametrize("device", DEVICES)
def test_paged_decode_fp16_small_pages_ungated(device):
    _skip_without_cuda(device)
    inp = paged_inputs([9, 100], [2, 2], 4, 1, block_size=16, dtype=torch.float16, device=device, seed=5)
    _check(_call(inp, num_splits=2, gated=False), inp, 2, gated=False, what="fp16, 16-token pages")


@pytest.mark.parametrize("device", DEVICES)
def test_paged_decode_long_context_many_splits(device):
    """~1k tokens: the automatic split count (as for 132 SMs) and more splits than the sequence has tiles (empty
    splits are skipped by the merge) agree with the single-split kernel and the oracles."""
    _skip_without_cuda(device)
    inp = paged_inputs([1000, 130], [1, 1], 4, 1, device=device, seed=6)
    out_auto = _call(inp)
    _check(out_auto, inp, 1, what="auto splits")
    out_many = _call(inp, num_splits=40)
    _check(out_many, inp, 1, what="40 splits")
    assert_rel_close(out_many, _call(inp, num_splits=1).float().cpu(), 5e-3, "40 splits vs 1 split")


@pytest.mark.parametrize("device", DEVICES)
def test_paged_decode_guards_and_orders(device, two_orders):
    """Raw op, 3 query tokens x 16 heads (48 packed rows), 3 splits: poisoned guarded output fully written, nothing
    outside it, bit-identical under two emulator thread orders (on CUDA: two runs)."""
    _skip_without_cuda(device)
    inp = paged_inputs([61, 140], [3, 3], 16, 1, device=device, seed=8)

    def run():
        out = GuardedTensor((6, 16 * 256), torch.bfloat16, device)
        torch.ops.qwen35_native.paged_decode_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["seq_lens"],
                                                       inp["block_tables"], inp["gate"], 1 / 16, 3, out.tensor)
        out.check("paged_decode_attention")
        return out.tensor.clone()

    out = two_orders(run) if device == "cpu" else run()
    if device != "cpu":
        assert_bit_identical(run(), out)
    _check(out, inp, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_paged_decode_many_rows(device):
    """5 tokens x 16 heads = 80 packed rows: two 64-row blocks per (sequence, kv head)."""
    _skip_without_cuda(device)
    inp = paged_inputs([30], [5], 16, 1, device=device, seed=9)
    _check(_call(inp), inp, 5, what="80 packed rows")


def test_paged_decode_rejects_bad_input():
    inp = paged_inputs([5, 9], [1, 1], 4, 1, seed=1)
    with pytest.raises(ValueError, match=r"num_splits must be None or in \[1, 1024\]"):
        _call(inp, num_splits=0)
    with pytest.raises(ValueError, match="positive multiple of the sequence count"):
        ops.paged_decode_attention(inp["q"][:1], inp["k_cache"], inp["v_cache"], inp["seq_lens"],
                                   inp["block_tables"], backend="kernel")
    with pytest.raises(RuntimeError, match=r"seq_lens\[1\] must be >= its query tokens \(1\) and <= max_blocks"):
        torch.ops.qwen35_native.paged_decode_attention(inp["q"], inp["k_cache"], inp["v_cache"],
                                                       torch.tensor([5, 4000], dtype=torch.int32),
                                                       inp["block_tables"], None, 0.0625, 0,
                                                       torch.empty(2, 1024, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=r"block_tables\[0, 0\] must be in \[0, num_blocks="):
        torch.ops.qwen35_native.paged_decode_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["seq_lens"],
                                                       inp["block_tables"] + 100, None, 0.0625, 0,
                                                       torch.empty(2, 1024, dtype=torch.bfloat16))


@pytest.mark.parametrize("device", DEVICES)
def test_paged_decode_opcheck(device):
    _skip_without_cuda(device)
    inp = paged_inputs([7], [1], 4, 1, seed=2, device=device)
    inp["k_cache"] = inp["k_cache"].nan_to_num(0.0)
    inp["v_cache"] = inp["v_cache"].nan_to_num(0.0)
    torch.library.opcheck(torch.ops.qwen35_native.paged_decode_attention.default,
                          (inp["q"], inp["k_cache"], inp["v_cache"], inp["seq_lens"], inp["block_tables"],
                           inp["gate"], 0.0625, 2, torch.empty(1, 1024, dtype=torch.bfloat16, device=device)))


def test_attention_kernels_fit_sm80_shared_memory():
    """The largest decode configuration (4 m-tiles: 160 KiB) and the prefill kernel (96 KiB) launch within A100's
    163 KiB of shared memory per block (the emulator enforces the emulated architecture's limit)."""
    from qwen35_native import emulator

    inp = paged_inputs([70], [3], 16, 1, seed=10)
    cu = torch.tensor([0, 3], dtype=torch.int32)
    with emulator.arch("sm_80"):
        _check(_call(inp, num_splits=2), inp, 3, what="sm_80 limits")
        out = ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], cu, inp["seq_lens"],
                                          inp["block_tables"], inp["gate"], backend="kernel")
    assert_rel_close(out, _call(inp, num_splits=1).float().cpu(), 5e-3, "prefill vs decode kernel")

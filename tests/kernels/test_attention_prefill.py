"""paged_prefill_attention (varlen, causal, chunked, GQA-packed, gated) and varlen_attention (vision tower: head dims 72
and 64, block-diagonal, non-causal): the mma.sync kernel and, for the paged cases with blocks of 64, the sm_90a one
(emulator on CPU, CUDA with -m gpu) against the pure-torch reference and fp32 scaled_dot_product_attention.
Kernels: csrc/kernels/attention/prefill_attention.cu, prefill_attention_sm90a.cu (more in
test_attention_prefill_sm90a.py)."""

import pytest
import torch
from attention_inputs import assert_rel_close, paged_inputs, sdpa, sdpa_paged_expected

from qwen35_native import ops
from utils import GuardedTensor, assert_bit_identical

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
DTYPES = [torch.bfloat16, torch.float16]
GROUPS = [(2, 2), (4, 1), (16, 1)]  # (Hq, Hkv): GQA group 1, 4 (tp8 rank) and 16 (tp1)
Q_LENS = [1, 17, 64, 129]
CONTEXTS = [0, 70, 0, 5]  # fresh prompts and chunked-prefill continuations (70: the chunk starts mid-page)
BOUND = 1e-2  # MODEL_SPEC §5: bf16/fp16 attention vs fp32, relative


IMPLS = ["sm80", "sm90a"]  # paged_prefill_attention(impl=...): the mma.sync kernel, the sm_90a one


def _skip_without_cuda(device, impl="sm80"):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if device == "cuda" and impl == "sm90a" and torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("the sm_90a kernel needs an sm_90 GPU (H100/H200)")


def _call(inp, gated=True, backend="kernel", impl="sm80"):
    return ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                                       inp["block_tables"], inp["gate"] if gated else None, backend=backend,
                                       impl=impl if backend == "kernel" else None)


def _check_per_sequence(out, inp, gated=True, what="paged prefill"):
    cu = inp["cu_seqlens"].tolist()
    expected = sdpa_paged_expected(inp, gated)
    ref = _call(inp, gated, backend="reference")
    for n, exp in enumerate(expected):
        s, e = cu[n], cu[n + 1]
        if e > s:
            assert_rel_close(out[s:e], exp, BOUND, f"{what} sequence {n} vs fp32 sdpa")
            assert_rel_close(out[s:e], ref[s:e].float().cpu(), BOUND, f"{what} sequence {n} vs reference")


# (block size, dtype, impl): blocks of 16 in bf16 only, and not on the sm_90a kernel (it takes blocks of >= 64)
PAGED_CASES = [(bs, dt, impl) for bs in (64, 16) for dt in DTYPES for impl in IMPLS
               if bs == 64 or (dt == torch.bfloat16 and impl != "sm90a")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block_size,dtype,impl", PAGED_CASES,
                         ids=[f"bs{bs}-{str(dt)[6:]}-{impl}" for bs, dt, impl in PAGED_CASES])
@pytest.mark.parametrize("heads", GROUPS, ids=lambda h: f"{h[0]}q{h[1]}kv")
def test_paged_prefill(heads, dtype, block_size, impl, device):
    _skip_without_cuda(device, impl)
    Hq, Hkv = heads
    inp = paged_inputs(CONTEXTS, Q_LENS, Hq, Hkv, block_size=block_size, dtype=dtype, device=device,
                       seed=GROUPS.index(heads))
    out = _call(inp, impl=impl)
    assert out.shape == (sum(Q_LENS), Hq * 256) and out.dtype == dtype and out.device.type == device
    _check_per_sequence(out, inp)


@pytest.mark.parametrize("device", DEVICES)
def test_paged_prefill_ungated_and_scale(device):
    _skip_without_cuda(device)
    inp = paged_inputs([3, 0], [40, 9], 4, 1, device=device, seed=7)
    out = _call(inp, gated=False)
    _check_per_sequence(out, inp, gated=False, what="ungated")
    scaled = ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"],
                                         inp["seq_lens"], inp["block_tables"], scale=0.02, backend="kernel")
    ref = ops.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                                      inp["block_tables"], scale=0.02, backend="reference")
    assert_rel_close(scaled, ref.float().cpu(), BOUND, "scale=0.02")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_paged_prefill_guards_and_orders(impl, device, two_orders):
    """Raw op into a guarded, poisoned output: every element written, nothing outside it, and bit-identical results
    under two emulator thread orders (a missing barrier shows up as a difference); on CUDA two runs agree."""
    _skip_without_cuda(device, impl)
    inp = paged_inputs([5, 60], [17, 33], 4, 1, device=device, seed=3)
    T = inp["q"].shape[0]

    def run():
        out = GuardedTensor((T, 4 * 256), torch.bfloat16, device)
        torch.ops.qwen35_native.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"],
                                                        inp["seq_lens"], inp["block_tables"], inp["gate"], 1 / 16,
                                                        out.tensor, 80 if impl == "sm80" else 90)
        out.check("paged_prefill_attention")
        return out.tensor.clone()

    out = two_orders(run) if device == "cpu" else run()
    if device != "cpu":
        assert_bit_identical(run(), out)
    _check_per_sequence(out, inp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("impl", IMPLS)
def test_paged_prefill_edge(impl, device):
    _skip_without_cuda(device, impl)
    # an empty sequence between two others, and a one-token prompt
    inp = paged_inputs([0, 4, 0], [3, 0, 1], 4, 1, device=device, seed=4)
    _check_per_sequence(_call(inp, impl=impl), inp, what="with an empty sequence")
    # no tokens at all
    empty = dict(inp, q=inp["q"][:0], gate=inp["gate"][:0], cu_seqlens=torch.zeros(4, dtype=torch.int32,
                                                                                    device=device),
                 seq_lens=torch.zeros(3, dtype=torch.int32, device=device))
    assert _call(empty, impl=impl).shape == (0, 4 * 256)


VARLEN = [(72, [0, 16, 80, 84]), (64, [0, 1, 65, 194]), (256, [0, 7, 40])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("case", VARLEN, ids=lambda c: f"D{c[0]}-T{c[1][-1]}")
def test_varlen_attention(case, causal, device):
    """Vision tower attention: q, k, v are strided views of one [T, 3, H, D] projection, block-diagonal per image."""
    _skip_without_cuda(device)
    D, bounds = case
    T, H = bounds[-1], 3
    g = torch.Generator().manual_seed(D)
    qkv = torch.randn(T, 3, H, D, generator=g).to(device=device, dtype=torch.bfloat16)
    q, k, v = qkv.unbind(1)
    cu = torch.tensor(bounds, dtype=torch.int32, device=device)
    out = ops.varlen_attention(q, k, v, cu, causal=causal, backend="kernel")
    assert out.shape == (T, H, D) and out.dtype == torch.bfloat16
    ref = ops.varlen_attention(q, k, v, cu, causal=causal, backend="reference")
    for s, e in zip(bounds[:-1], bounds[1:]):
        mask = torch.ones(e - s, e - s, dtype=torch.bool).tril() if causal else None
        exp = sdpa(q[s:e].float().cpu(), k[s:e].float().cpu(), v[s:e].float().cpu(), mask)
        assert_rel_close(out[s:e], exp, BOUND, f"varlen D={D} [{s}, {e}) vs fp32 sdpa")
        assert_rel_close(out[s:e], ref[s:e].float().cpu(), BOUND, f"varlen D={D} [{s}, {e}) vs reference")


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_attention_gqa_fp16_guards(device, two_orders):
    _skip_without_cuda(device)
    g = torch.Generator().manual_seed(9)
    T, D = 50, 72
    q = torch.randn(T, 4, D, generator=g).to(device=device, dtype=torch.float16)
    k, v = (torch.randn(T, 2, D, generator=g).to(device=device, dtype=torch.float16) for _ in range(2))
    cu = torch.tensor([0, 21, 50], dtype=torch.int32, device=device)

    def run():
        out = GuardedTensor((T, 4, D), torch.float16, device)
        torch.ops.qwen35_native.varlen_attention(q, k, v, cu, D ** -0.5, False, out.tensor)
        out.check("varlen_attention")
        return out.tensor.clone()

    out = two_orders(run) if device == "cpu" else run()
    for s, e in ((0, 21), (21, 50)):
        exp = sdpa(q[s:e].float().cpu(), k[s:e].float().cpu(), v[s:e].float().cpu(), None)
        assert_rel_close(out[s:e], exp, BOUND, f"GQA varlen [{s}, {e})")


def test_attention_kernel_rejects_unsupported():
    inp = paged_inputs([0], [5], 4, 1, seed=1)
    with pytest.raises(ValueError, match=r"backend='kernel' does not support this input: q dtype float32"):
        ops.paged_prefill_attention(inp["q"].float(), inp["k_cache"].float(), inp["v_cache"].float(),
                                    inp["cu_seqlens"], inp["seq_lens"], inp["block_tables"], backend="kernel")
    small = paged_inputs([0], [5], 4, 1, D=128, seed=1)
    with pytest.raises(ValueError, match=r"head_dim 128 \(the kernels take 256\)"):
        _call(small)
    odd = paged_inputs([0], [5], 4, 1, block_size=48, seed=1)
    with pytest.raises(ValueError, match=r"block_size 48 \(the kernels take a power of two; 64 preferred\)"):
        _call(odd)
    # auto on CPU tensors runs the reference, so it takes all of them
    assert ops.paged_prefill_attention(odd["q"], odd["k_cache"], odd["v_cache"], odd["cu_seqlens"], odd["seq_lens"],
                                       odd["block_tables"]).shape == (5, 1024)
    with pytest.raises(RuntimeError, match=r"qwen35_native.paged_prefill_attention: the kernel needs a power-of-two "
                                           r"block_size"):
        torch.ops.qwen35_native.paged_prefill_attention(odd["q"], odd["k_cache"], odd["v_cache"], odd["cu_seqlens"],
                                                        odd["seq_lens"], odd["block_tables"], None, 0.0625,
                                                        torch.empty(5, 1024, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=r"seq_lens\[0\] must be >= its query tokens"):
        torch.ops.qwen35_native.paged_prefill_attention(inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"],
                                                        inp["seq_lens"] - 1, inp["block_tables"], None, 0.0625,
                                                        torch.empty(5, 1024, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=r"q must have contiguous heads of head_dim elements"):
        q = torch.empty(5, 256, 4, dtype=torch.bfloat16).transpose(1, 2)
        torch.ops.qwen35_native.varlen_attention(q, q, q, inp["cu_seqlens"], 0.0625, False, torch.empty_like(q))


@pytest.mark.parametrize("device", DEVICES)
def test_attention_opcheck(device):
    _skip_without_cuda(device)
    inp = paged_inputs([2], [5], 4, 1, seed=2, device=device)
    inp["k_cache"] = inp["k_cache"].nan_to_num(0.0)  # opcheck compares repeated runs: keep the unused slots finite
    inp["v_cache"] = inp["v_cache"].nan_to_num(0.0)
    torch.library.opcheck(torch.ops.qwen35_native.paged_prefill_attention.default,
                          (inp["q"], inp["k_cache"], inp["v_cache"], inp["cu_seqlens"], inp["seq_lens"],
                           inp["block_tables"], inp["gate"], 0.0625,
                           torch.empty(5, 1024, dtype=torch.bfloat16, device=device)))
    q = torch.randn(6, 2, 64, dtype=torch.bfloat16, device=device)
    torch.library.opcheck(torch.ops.qwen35_native.varlen_attention.default,
                          (q, q, q, torch.tensor([0, 2, 6], dtype=torch.int32, device=device), 0.125, True,
                           torch.empty_like(q)))

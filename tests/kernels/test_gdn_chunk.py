"""chunk_gated_delta_rule on its kernel (the CUDA source under the emulator on the CPU; the CUDA kernel with -m gpu)
against the float64 chunked reference on the same rounded inputs: output <= 2e-2 and final state <= 1e-2 relative
(MODEL_SPEC §5.15), outputs poisoned and guarded, two thread orders bit-identical. Segment splitting:
test_gdn_chunk_split.py. Kernel: csrc/kernels/gdn/gdn_chunk.cu."""

import pytest
import torch
from gdn_helpers import (
    DEVICES,
    HEADS,
    OUT_TOL,
    STATE_TOL,
    chunk_raw,
    chunk_reference64,
    cu_of,
    make_scan_inputs,
    rel,
    skip_without_cuda,
)

from qwen35_native import ops

LENGTHS = [1, 63, 64, 65, 200]


def _ids(x):
    return "x".join(map(str, x)) if isinstance(x, tuple) else str(x)


def _check(lens, hk, hv, with_state, seed, device, dtype=torch.bfloat16, l2norm=True):
    q, k, v, g, beta, state = make_scan_inputs(lens, hk, hv, with_state, seed, dtype, l2norm=l2norm, device=device)
    cu = cu_of(lens, device)
    o, final = chunk_raw(q, k, v, g, beta, state, cu, l2norm)
    o_ref, final_ref = chunk_reference64(q, k, v, g, beta, state, cu, l2norm)
    assert rel(o, o_ref) <= OUT_TOL, f"output error {rel(o, o_ref):.2e}"
    assert rel(final, final_ref) <= STATE_TOL, f"state error {rel(final, final_ref):.2e}"
    return o, final


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("heads", HEADS, ids=_ids)
@pytest.mark.parametrize("T", LENGTHS)
def test_chunk_matches_float64(T, heads, with_state, device):
    skip_without_cuda(device)
    _check([T], *heads, with_state, seed=T + 7 * heads[1] + with_state, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("heads", HEADS, ids=_ids)
def test_chunk_varlen_matches_float64(heads, device):
    skip_without_cuda(device)
    _check([1, 64, 130, 7], *heads, True, seed=11 + heads[1], device=device)


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_fp16_and_without_l2norm(device):
    skip_without_cuda(device)
    _check([65], 2, 6, True, seed=3, device=device, dtype=torch.float16)
    _check([130], 1, 2, False, seed=4, device=device, l2norm=False)


def test_chunk_two_orders_bit_identical(two_orders):
    q, k, v, g, beta, state = make_scan_inputs([70, 5], 1, 2, True, seed=5)
    two_orders(chunk_raw, q, k, v, g, beta, state, cu_of([70, 5]))


@pytest.mark.parametrize("device", DEVICES)
def test_chunk_public_wrapper(device):
    """[B, T] batches without cu_seqlens, default scale, int64 cu_seqlens, strided q, fp32 g / bf16 beta, no final
    state; the result equals the packed raw op."""
    skip_without_cuda(device)
    q, k, v, g, beta, state = make_scan_inputs([65, 65], 2, 4, True, seed=6, device=device)
    qb, kb, vb = (t.reshape(2, 65, t.shape[2], t.shape[3]) for t in (q, k, v))
    gb, bb = g.reshape(2, 65, 4), beta.reshape(2, 65, 4)
    o, final = ops.chunk_gated_delta_rule(qb, kb, vb, gb, bb, initial_state=state, output_final_state=True,
                                          use_qk_l2norm_in_kernel=True, backend="kernel")
    o_raw, final_raw = chunk_raw(q, k, v, g, beta, state, cu_of([65, 65], device))
    assert torch.equal(o.reshape(o_raw.shape), o_raw) and torch.equal(final, final_raw)
    wide = torch.zeros(1, 130, 2, 3 * 128, dtype=q.dtype, device=device)
    wide[..., 128:256] = q[0]
    o2, none = ops.chunk_gated_delta_rule(wide[..., 128:256], k, v, g, beta, initial_state=state,
                                          cu_seqlens=cu_of([65, 65], device, torch.int64),
                                          use_qk_l2norm_in_kernel=True, backend="kernel")
    assert none is None and torch.equal(o2, o_raw)


def test_chunk_unsupported_shapes():
    q = torch.randn(1, 8, 2, 64).bfloat16()
    v, g, beta = torch.randn(1, 8, 2, 64).bfloat16(), -torch.rand(1, 8, 2), torch.rand(1, 8, 2).bfloat16()
    with pytest.raises(ValueError, match=r"chunk_gated_delta_rule: backend='kernel' does not support this input: "
                                         r"head dims K=64, V=64 \(the kernel supports K = V = 128\)"):
        ops.chunk_gated_delta_rule(q, q, v, g, beta, backend="kernel")
    o, _ = ops.chunk_gated_delta_rule(q, q, v, g, beta)  # auto on the CPU: the reference
    assert o.shape == v.shape
    q32 = torch.randn(1, 8, 1, 128)
    with pytest.raises(ValueError, match="q has dtype float32 \\(the kernel takes float16/bfloat16\\)"):
        ops.chunk_gated_delta_rule(q32, q32, q32, -torch.rand(1, 8, 1), torch.rand(1, 8, 1), backend="kernel")


def test_chunk_raw_op_checks():
    q, k, v, g, beta, state = make_scan_inputs([10], 1, 2, True, seed=8)
    cu = cu_of([10])
    o = torch.empty(10, 2, 128, dtype=q.dtype)
    op = torch.ops.qwen35_native.chunk_gated_delta_rule
    with pytest.raises(RuntimeError, match=r"o must have shape \[10, 2, 128\], got \[9, 2, 128\]"):
        op(q[0], k[0], v[0], g[0], beta[0], 0.1, state, cu, True, 0, -12.0, o[:9], None)
    with pytest.raises(RuntimeError, match="v heads must be a positive multiple of q/k heads"):
        op(q[0].expand(10, 3, 128), k[0].expand(10, 3, 128), v[0], g[0], beta[0], 0.1, None, cu, True, 0, -12.0, o,
           None)
    with pytest.raises(RuntimeError, match="the chunk kernel supports float16 and bfloat16 inputs, got Float"):
        op(q[0].float(), k[0].float(), v[0].float(), g[0], beta[0].float(), 0.1, None, cu, True, 0, -12.0,
           o.float(), None)
    with pytest.raises(RuntimeError, match=r"initial_state must have shape \[slots, Hv=2, 128, 128\]"):
        op(q[0], k[0], v[0], g[0], beta[0], 0.1, state[:, :1], cu, True, 0, -12.0, o, None)
    misaligned = torch.zeros(10 * 128 + 8, dtype=q.dtype)[1:1 + 10 * 128].view(10, 1, 128)
    with pytest.raises(RuntimeError, match="q rows must be 16-byte aligned"):
        op(misaligned, k[0], v[0], g[0], beta[0], 0.1, None, cu, True, 0, -12.0, o, None)


@pytest.mark.gpu
def test_gpu_chunk_matches_emulator():
    q, k, v, g, beta, state = make_scan_inputs([1, 64, 130, 7], 2, 8, True, seed=9)
    cu = cu_of([1, 64, 130, 7])
    o_cpu, s_cpu = chunk_raw(q, k, v, g, beta, state, cu)
    o_gpu, s_gpu = chunk_raw(*(t.cuda() for t in (q, k, v, g, beta, state, cu)))
    assert rel(o_gpu, o_cpu) <= 1e-2 and rel(s_gpu, s_cpu) <= 1e-3

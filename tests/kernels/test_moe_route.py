"""moe_route: the routing kernel (softmax over E in fp32, top-k with ties to the lower id, renormalised; one warp
per token) vs the pure-torch reference, on the emulator and (-m gpu) on CUDA. Kernel: csrc/kernels/moe/moe_route.cu.
"""

import pytest
import torch
from moe_helpers import DEVICES, gen, skip_without_cuda

from qwen35_native import ops
from utils import GuardedTensor, assert_bit_identical, assert_close_report

# E on each register tier of the kernel (4, 8, 16, 32 logits per lane) and at its edges: 128 / 129, 256 (35b-a3b), 512
CASES = [(n, e, k) for n in (1, 3, 64, 257) for e in (8, 64, 512) for k in (1, 2, 10) if k <= e] + [
    (n, e, k) for n in (1, 65) for e in (128, 129, 200, 256) for k in (1, 8)]


def _route(logits, k):
    return ops.moe_route(logits, k, backend="kernel")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("N", "E", "k"), CASES, ids=[f"N{n}-E{e}-k{k}" for n, e, k in CASES])
def test_moe_route(N, E, k, device):
    skip_without_cuda(device)
    logits = (torch.randn(N, E, generator=gen(N * 1000 + E + k)) * 3).to(device=device, dtype=torch.bfloat16)
    w, ids = _route(logits, k)
    ref_w, ref_ids = ops.moe_route_reference(logits.cpu(), k)
    assert w.dtype == torch.float32 and ids.dtype == torch.int32 and w.shape == ids.shape == (N, k)
    assert torch.equal(ids.cpu(), ref_ids)   # bf16 logits: distinct values are far apart, so the order is exact
    assert_close_report(w, ref_w, rtol=1e-5, atol=1e-6, what="topk_weights")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_moe_route_dtypes_and_strided_logits(dtype, device):
    skip_without_cuda(device)
    wide = torch.randn(37, 300, generator=gen(4)).to(device=device, dtype=dtype)
    logits = wide[:, 17:17 + 257]   # row stride 300, E = 257 (not a multiple of the warp)
    w, ids = _route(logits, 10)
    ref_w, ref_ids = ops.moe_route_reference(logits.cpu(), 10)
    assert torch.equal(ids.cpu(), ref_ids)
    assert_close_report(w, ref_w, rtol=1e-5, atol=1e-6, what="topk_weights")


@pytest.mark.parametrize("device", DEVICES)
def test_moe_route_ties_go_to_the_lower_id(device):
    skip_without_cuda(device)
    tied = torch.tensor([[0.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0, 1.0], [2.0] * 8, [float("-inf")] * 6 + [0.0, 0.0]])
    w, ids = _route(tied.to(device), 3)
    assert ids.tolist() == [[1, 2, 4], [0, 1, 2], [6, 7, 0]]
    assert_close_report(w[:2], torch.full((2, 3), 1 / 3), rtol=1e-6, atol=1e-7, what="tied weights")
    assert w[2].tolist() == [0.5, 0.5, 0.0]
    # E = 512 with ties across lanes and register slots: experts 5, 37, 69, ... share the top logit
    logits = torch.zeros(2, 512)
    logits[:, 5::32] = 4.0
    w, ids = _route(logits.to(device=device, dtype=torch.bfloat16), 10)
    assert ids[0].tolist() == list(range(5, 512, 32))[:10] and torch.equal(ids[0], ids[1])
    ref_w, ref_ids = ops.moe_route_reference(logits.bfloat16(), 10)
    assert torch.equal(ids.cpu(), ref_ids)


@pytest.mark.parametrize("device", DEVICES)
def test_moe_route_poisoned_guarded_outputs(device, two_orders):
    skip_without_cuda(device)
    logits = torch.randn(65, 512, generator=gen(9)).to(device=device, dtype=torch.bfloat16)

    def run():
        w = GuardedTensor((65, 10), torch.float32, device=device)
        ids = GuardedTensor((65, 10), torch.int32, device=device)
        torch.ops.qwen35_native.moe_route(logits, 10, w.tensor, ids.tensor)
        w.check("moe_route weights")
        ids.check("moe_route ids")
        return w.tensor.clone(), ids.tensor.clone()

    w, ids = two_orders(run) if device == "cpu" else run()
    ref_w, ref_ids = ops.moe_route_reference(logits.cpu(), 10)
    assert torch.equal(ids.cpu(), ref_ids)
    assert_close_report(w, ref_w, rtol=1e-5, atol=1e-6, what="topk_weights")


@pytest.mark.parametrize("device", DEVICES)
def test_moe_route_large_expert_count_and_k_32(device):
    skip_without_cuda(device)
    logits = torch.randn(5, 1024, generator=gen(3)).to(device=device, dtype=torch.bfloat16)
    w, ids = _route(logits, 32)
    ref_w, ref_ids = ops.moe_route_reference(logits.cpu(), 32)
    assert torch.equal(ids.cpu(), ref_ids)
    assert_close_report(w, ref_w, rtol=1e-5, atol=1e-6, what="topk_weights")
    empty_w, empty_ids = _route(torch.empty(0, 64, device=device), 4)
    assert empty_w.shape == empty_ids.shape == (0, 4)


@pytest.mark.parametrize("device", DEVICES)
def test_moe_route_nan_logits_give_nan_weights_and_valid_ids(device):
    skip_without_cuda(device)
    logits = torch.randn(2, 64, generator=gen(1))
    logits[0, 7] = float("nan")
    w, ids = _route(logits.to(device), 4)
    assert torch.isnan(w[0]).all() and not torch.isnan(w[1]).any()
    assert ((ids >= 0) & (ids < 64)).all() and torch.unique(ids[0]).numel() == 4


def test_moe_route_kernel_limits_and_raw_op_checks():
    with pytest.raises(ValueError, match="backend='kernel' does not support this input: the routing kernel"):
        ops.moe_route(torch.randn(2, 1025), 4, backend="kernel")
    with pytest.raises(ValueError, match="top_k <= 32"):
        ops.moe_route(torch.randn(2, 64), 33, backend="kernel")
    w, ids = torch.empty(2, 4), torch.empty(2, 4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=r"qwen35_native.moe_route: top_k must be in \[1, min\(E=8, 32\)\], got 9"):
        torch.ops.qwen35_native.moe_route(torch.randn(2, 8), 9, w, ids)
    with pytest.raises(RuntimeError, match=r"moe_route: topk_ids must have dtype Int, got Long"):
        torch.ops.qwen35_native.moe_route(torch.randn(2, 8), 4, w, ids.long())
    with pytest.raises(RuntimeError, match=r"moe_route: topk_weights must have shape \[N, top_k\]=\[2, 3\]"):
        torch.ops.qwen35_native.moe_route(torch.randn(2, 8), 3, w, ids[:, :3])


@pytest.mark.parametrize("device", DEVICES)
def test_moe_route_opcheck(device):
    skip_without_cuda(device)
    logits = torch.randn(3, 64, device=device)
    args = (logits, 2, torch.empty(3, 2, device=device), torch.empty(3, 2, dtype=torch.int32, device=device))
    torch.library.opcheck(torch.ops.qwen35_native.moe_route.default, args)


def test_moe_route_two_orders_bit_identical(two_orders):
    logits = torch.randn(9, 64, generator=gen(2)).bfloat16()
    first = two_orders(_route, logits, 10)
    assert_bit_identical(first, _route(logits, 10))
